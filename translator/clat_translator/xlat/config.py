"""XlatConfig: the SIIT settings of the core, with Jool's meanings (ARCHITECTURE.md)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import rfc6052

# RFC 1191 §7: the plateau table, used when a Fragmentation Needed carries MTU 0.
RFC1191_PLATEAUS: tuple[int, ...] = (
    65535,
    32000,
    17914,
    8166,
    4352,
    2002,
    1492,
    1006,
    508,
    296,
    68,
)

HAIRPIN_MODES = ("off", "simple", "intrinsic")


def _fail(name: str, value: object, why: str) -> ValueError:
    return ValueError(f"XlatConfig.{name}={value!r}: {why}")


def _net4(name: str, value: object) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as e:
        raise _fail(name, value, f"not an IPv4 prefix ({e})") from None


def _net6(name: str, value: object) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(str(value), strict=True)
    except ValueError as e:
        raise _fail(name, value, f"not an IPv6 prefix ({e})") from None


def _addr4(name: str, value: object) -> ipaddress.IPv4Address | None:
    if value is None:
        return None
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise _fail(name, value, "not an IPv4 address") from None


def _addr6(name: str, value: object) -> ipaddress.IPv6Address | None:
    if value is None:
        return None
    try:
        return ipaddress.IPv6Address(str(value))
    except ValueError:
        raise _fail(name, value, "not an IPv6 address") from None


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(name, value, f"must be an integer from {low} to {high}")
    return value


def parse_pool6(value: object) -> ipaddress.IPv6Network | None:
    """Validate a pool6 prefix (rfc6052.parse_prefix); None means EAM table only."""
    if value is None:
        return None
    if not isinstance(value, str | ipaddress.IPv6Network):
        raise _fail("pool6", value, "not an IPv6 prefix")
    try:
        return rfc6052.parse_prefix(value)
    except rfc6052.PrefixError as e:
        raise _fail("pool6", value, str(e)) from None


MTU_FIELD_MAX = 2**32 - 1  # ICMPv6 Packet Too Big carries a 32-bit MTU (RFC 4443 §3.2)


@dataclass(frozen=True)
class XlatConfig:
    """Settings of one Translator. Validated on construction (ValueError names the field).

    `clat_mode` (default False: a general SIIT translator) makes it a CLAT (RFC 6877): only
    the host's own traffic is translated. A 4->6 packet whose IPv4 source is inside no EAM
    entry's IPv4 prefix, and a 6->4 packet to an EAM address whose source is neither inside
    pool6 nor an EAM entry (ICMPv6 errors excepted: they take the RFC 6791 source), are
    dropped as `foreign-source`, never answered with an ICMP error.
    """

    pool6: str | ipaddress.IPv6Network | None = "64:ff9b::/96"  # text or parsed
    eamt: Sequence[tuple[str, str]] = field(default_factory=list)
    local_ipv4: str | None = "192.0.0.2"
    local_ipv6: str | None = None
    rfc6791v4: str | None = None
    rfc6791v6: str | None = None
    lowest_ipv6_mtu: int = 1280
    ipv4_mtu: int = 1500
    ipv6_mtu: int = 1500
    amend_udp_checksum_zero: bool = False
    reset_traffic_class: bool = False
    reset_tos: bool = False
    new_tos: int = 0
    mtu_plateaus: Sequence[int] = RFC1191_PLATEAUS
    eam_hairpin_mode: str = "intrinsic"
    denylist4: Sequence[str] = field(default_factory=list)
    clat_mode: bool = False

    def __post_init__(self) -> None:
        parse_pool6(self.pool6)
        if isinstance(self.eamt, str | bytes) or not isinstance(self.eamt, Sequence):
            raise _fail("eamt", self.eamt, "must be a list of (ipv4 prefix, ipv6 prefix) pairs")
        for entry in self.eamt:
            if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 2:
                raise _fail("eamt", entry, "each entry must be a pair (ipv4 prefix, ipv6 prefix)")
            v4, v6 = _net4("eamt", entry[0]), _net6("eamt", entry[1])
            # RFC 7757 §3.2: the IPv4 suffix must fit in the IPv6 suffix.
            if 128 - v6.prefixlen < 32 - v4.prefixlen:
                raise _fail("eamt", entry, "IPv6 suffix shorter than the IPv4 suffix")
        _addr4("local_ipv4", self.local_ipv4)
        _addr6("local_ipv6", self.local_ipv6)
        _addr4("rfc6791v4", self.rfc6791v4)
        _addr6("rfc6791v6", self.rfc6791v6)
        # Jool: lowest_ipv6_mtu (smallest MTU anywhere on the IPv6 side) and ipv6_mtu (the next
        # hop's) are independent; IPv6 links may exceed 65535 (RFC 2675 jumbo links).
        _int("lowest_ipv6_mtu", self.lowest_ipv6_mtu, 1280, MTU_FIELD_MAX)
        _int("ipv4_mtu", self.ipv4_mtu, 68, 65535)
        _int("ipv6_mtu", self.ipv6_mtu, 1280, MTU_FIELD_MAX)
        for flag in (
            "amend_udp_checksum_zero",
            "reset_traffic_class",
            "reset_tos",
            "clat_mode",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise _fail(flag, getattr(self, flag), "must be True or False")
        _int("new_tos", self.new_tos, 0, 255)
        if isinstance(self.mtu_plateaus, str) or not isinstance(self.mtu_plateaus, Sequence):
            raise _fail("mtu_plateaus", self.mtu_plateaus, "must be a list of integers")
        if not self.mtu_plateaus:
            raise _fail("mtu_plateaus", self.mtu_plateaus, "must not be empty")
        for p in self.mtu_plateaus:
            _int("mtu_plateaus", p, 68, 65535)
        if self.eam_hairpin_mode not in HAIRPIN_MODES:
            raise _fail("eam_hairpin_mode", self.eam_hairpin_mode, f"one of {HAIRPIN_MODES}")
        if isinstance(self.denylist4, str) or not isinstance(self.denylist4, Sequence):
            raise _fail("denylist4", self.denylist4, "must be a list of IPv4 prefixes")
        for prefix in self.denylist4:
            _net4("denylist4", prefix)
