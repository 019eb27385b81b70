"""The per-Translator state shared by both directions: settings in fast-to-read form."""

from __future__ import annotations

import ipaddress
import random

from .addresses import AddressMapper
from .config import XlatConfig

DF_LIMIT = 1260  # RFC 7915 §5.1


def _packed4(address: str | None) -> bytes | None:
    return None if address is None else ipaddress.IPv4Address(address).packed


def _packed6(address: str | None) -> bytes | None:
    return None if address is None else ipaddress.IPv6Address(address).packed


class TranslateResult:
    """What became of one packet: `.out` (other family), `.back` (sender's family), `.drop`.

    `.back` holds ICMP errors the translator sends to the sender, echo replies from the
    translator's own address, and hairpinned packets (RFC 7757 §4.2), which return to the
    sender's family. `.drop` is None, or one of DROP_REASONS when the packet was refused;
    a dropped packet may still have produced an error in `.back`.
    """

    __slots__ = ("out", "back", "drop")

    def __init__(
        self, out: list[bytes], back: list[bytes] | None = None, drop: str | None = None
    ) -> None:
        self.out = out
        self.back = [] if back is None else back
        self.drop = drop

    def __repr__(self) -> str:
        return f"TranslateResult(out={len(self.out)}, back={len(self.back)}, drop={self.drop!r})"


def dropped(reason: str, back: bytes | None = None) -> TranslateResult:
    return TranslateResult([], [] if back is None else [back], reason)


class Context:
    """Settings of one Translator, unpacked into attributes the hot path reads directly."""

    def __init__(self, config: XlatConfig) -> None:
        self.config = config
        self.mapper = AddressMapper(config)
        self.local4 = _packed4(config.local_ipv4)
        self.local6 = _packed6(config.local_ipv6)
        # RFC 7915 §5.2/§4.2 + RFC 6791: sources for translated errors from untranslatable
        # routers; None falls back to the translator's own address.
        self.rfc6791v4 = _packed4(config.rfc6791v4) or self.local4
        self.rfc6791v6 = _packed6(config.rfc6791v6) or self.local6
        self.ipv4_mtu = config.ipv4_mtu
        self.ipv6_mtu = config.ipv6_mtu
        self.lowest_ipv6_mtu = config.lowest_ipv6_mtu
        # RFC 7915 §5.1: DF is set on translated packets bigger than 1260 bytes: a fixed
        # number (the IPv6 minimum MTU - 20), whatever lowest_ipv6_mtu says.
        self.df_limit = DF_LIMIT
        self.tc_mask = 0 if config.reset_traffic_class else 0xFF
        self.reset_tos = config.reset_tos
        self.new_tos = config.new_tos
        self.amend_udp = config.amend_udp_checksum_zero
        self.plateaus = sorted(set(config.mtu_plateaus), reverse=True)
        self.hairpin = config.eam_hairpin_mode
        self.clat_mode = config.clat_mode
        self._rng = random.Random()

    def next_ident(self) -> int:
        """RFC 7915 §5.1: IPv4 Identification for unfragmented DF-clear packets (RFC 6864)."""
        return self._rng.getrandbits(16)
