"""Translator: the public entry point, with a fast path for plain TCP/UDP in front of the
general RFC 7915 path (four_to_six / six_to_four). Both give the same bytes."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Literal, NamedTuple

from . import drops, four_to_six, six_to_four
from .checksum import address_delta, finish, finish_icmp4
from .config import XlatConfig, parse_pool6
from .context import Context, TranslateResult, dropped
from .rewrite import IP6_HEAD, ipv4_header, rewrite_46, rewrite_64

_FAST4 = struct.Struct("!H2xHBB")  # from octet 2: total length, flags/offset, TTL, protocol
_FAST6 = struct.Struct("!HBB")  # from octet 4: payload length, next header, hop limit
_CACHE_SIZE = 4096  # address pairs remembered per direction


class PlainPair(NamedTuple):
    """How an address pair translates in the plain case (`Translator.plain_pair46/64`)."""

    addresses: bytes  # the translated source + destination
    delta: int  # RFC 1624 checksum delta of the pseudo-header's address change
    pair_sum: int  # the IPv6 pair's one's complement sum mod 0xFFFF (ICMPv6 pseudo-header)


class Translator:
    """Stateless IPv4/IPv6 translator (SIIT, RFC 7915) for one XlatConfig.

    `translate(packet)` never raises. Not thread-safe: use one Translator per thread.
    """

    def __init__(self, config: XlatConfig) -> None:
        self._fast_path = True  # tests switch it off to compare against the general path
        self._configure(config)

    def _configure(self, config: XlatConfig) -> None:
        self.config = config
        self._ctx = ctx = Context(config)
        # Per address pair: (translated addresses, RFC 1624 delta, IPv6 pair's sum mod 0xFFFF),
        # or False: this pair always takes the general path.
        self._cache46: dict[bytes, PlainPair | Literal[False]] = {}
        self._cache64: dict[bytes, PlainPair | Literal[False]] = {}
        self._tc_mask = ctx.tc_mask
        self._mtu6 = ctx.ipv6_mtu
        self._lowest6 = ctx.lowest_ipv6_mtu
        self._mtu4 = ctx.ipv4_mtu
        self._df_limit = ctx.df_limit
        self._reset_tos = ctx.reset_tos
        self._new_tos = ctx.new_tos

    def update_pool6(self, prefix: str | ipaddress.IPv6Network | None) -> None:
        """Swap the RFC 6052 prefix live (e.g. after PLAT prefix rediscovery).

        Raises ValueError for an invalid prefix, leaving the current one in place.
        """
        parse_pool6(prefix)
        self._configure(dataclasses.replace(self.config, pool6=prefix))

    def translate(self, packet: bytes) -> TranslateResult:
        """Translate one IPv4 or IPv6 packet (the version nibble decides)."""
        try:
            if type(packet) is not bytes:
                packet = bytes(packet)
            if not packet:
                return dropped(drops.TRUNCATED)
            b0 = packet[0]
            if b0 == 0x45:
                if self._fast_path:
                    entry = self._cache46.get(packet[12:20])
                    if entry:
                        r = self._fast46(packet, entry)
                        if r is not None:
                            return r
                    elif entry is None:
                        self._learn46(packet[12:20])
                return four_to_six.translate(self._ctx, packet)
            version = b0 >> 4
            if version == 6:
                if self._fast_path and len(packet) >= 40:
                    entry = self._cache64.get(packet[8:40])
                    if entry:
                        r = self._fast64(packet, entry)
                        if r is not None:
                            return r
                    elif entry is None:
                        self._learn64(packet[8:40])
                return six_to_four.translate(self._ctx, packet)
            if version == 4:
                return four_to_six.translate(self._ctx, packet)
            return dropped(drops.BAD_VERSION)
        except Exception:  # noqa: BLE001 - the contract: never raise on any input
            return dropped(drops.INTERNAL_ERROR)

    # -- fast path: unfragmented TCP/UDP, no options, TTL > 1, fits the MTU -------------------

    def _fast46(self, pkt: bytes, entry: tuple[bytes, int, int]) -> TranslateResult | None:
        total, frag, ttl, proto = _FAST4.unpack_from(pkt, 2)
        n = len(pkt)
        if (
            total != n
            or frag & 0x3FFF  # RFC 7915 §4.1: a fragment
            or ttl <= 1
            or n + 20 > (self._mtu6 if frag & 0x4000 else self._lowest6)  # DF, not the evil bit
            or int.from_bytes(pkt[:20], "big") % 0xFFFF  # header checksum wrong
        ):
            return None
        if (proto == 6 and n >= 40) or (proto == 17 and n >= 28 and (pkt[26] or pkt[27])):
            return TranslateResult(
                [rewrite_46(pkt, 20, entry[0], entry[1], pkt[1] & self._tc_mask, ttl - 1)]
            )
        if proto == 1 and n >= 28 and (pkt[20] == 8 or pkt[20] == 0):
            # RFC 7915 §4.2 Echo: type 8/0 -> 128/129; the checksum gains the pseudo-header.
            if n & 1 or int.from_bytes(pkt[20:], "big") % 0xFFFF:
                return None  # odd length or bad checksum: the general path decides
            t6 = 129 - (pkt[20] >> 3)
            old = (pkt[22] << 8) | pkt[23]
            c = finish(0xFFFF - old + ((t6 - pkt[20]) << 8) + entry[2] + 58 + n - 20)
            return TranslateResult(
                [
                    b"".join(
                        (
                            IP6_HEAD.pack(
                                0x60000000 | ((pkt[1] & self._tc_mask) << 20), n - 20, 58, ttl - 1
                            ),
                            entry[0],
                            bytes((t6, pkt[21])),
                            c.to_bytes(2, "big"),
                            pkt[24:],
                        )
                    )
                ]
            )
        return None

    def _fast64(self, pkt: bytes, entry: tuple[bytes, int, int]) -> TranslateResult | None:
        plen, nh, hop = _FAST6.unpack_from(pkt, 4)
        n = len(pkt)
        total = n - 20
        if plen + 40 != n or hop <= 1 or total > self._mtu4:
            return None
        tos = self._new_tos if self._reset_tos else ((pkt[0] & 0x0F) << 4) | (pkt[1] >> 4)
        if (nh == 6 and n >= 60) or (nh == 17 and n >= 48):
            pass
        elif nh == 58 and n >= 48 and (pkt[40] == 128 or pkt[40] == 129):
            # RFC 7915 §5.2 Echo: type 128/129 -> 8/0; the checksum loses the pseudo-header.
            pseudo = entry[2] + 58 + plen
            if n & 1 or (int.from_bytes(pkt[40:], "big") + pseudo) % 0xFFFF:
                return None  # odd length or bad checksum: the general path decides
            t4 = 8 if pkt[40] == 128 else 0
            old = (pkt[42] << 8) | pkt[43]
            c = finish_icmp4(
                0xFFFF - old + ((t4 - pkt[40]) << 8) - pseudo,
                (t4 << 8) | pkt[41],
                memoryview(pkt)[44:],
            )
            ident, flags = self._ident_flags(total)
            return TranslateResult(
                [
                    b"".join(
                        (
                            ipv4_header(tos, total, ident, flags, hop - 1, 1, entry[0]),
                            bytes((t4, pkt[41])),
                            c.to_bytes(2, "big"),
                            pkt[44:],
                        )
                    )
                ]
            )
        else:
            return None
        ident, flags = self._ident_flags(total)
        return TranslateResult(
            [rewrite_64(pkt, 40, nh, entry[0], entry[1], tos, ident, flags, hop - 1)]
        )

    def _ident_flags(self, total: int) -> tuple[int, int]:
        # RFC 7915 §5.1: DF (and ID 0, RFC 6864) above 1260 bytes, else a fresh ID.
        if total > self._df_limit:
            return 0, 0x4000
        return self._ctx.next_ident(), 0

    # ---- for callers with a fast path of their own (the offloaded data path) -------------------

    def plain_pair46(self, key: bytes) -> PlainPair | None:
        """How an IPv4 source+destination pair (8 bytes) translates in the plain case: the IPv6
        pair (32 bytes), its RFC 1624 checksum delta, the IPv6 pair's sum mod 0xFFFF. None when
        such packets must take `translate` (hairpinning, denied, untranslatable)."""
        entry = self._cache46.get(key)
        if entry is None:
            self._learn46(key)
            entry = self._cache46[key]
        return entry or None

    def plain_pair64(self, key: bytes) -> PlainPair | None:
        """The same for an IPv6 source+destination pair (32 bytes) translated to IPv4."""
        entry = self._cache64.get(key)
        if entry is None:
            self._learn64(key)
            entry = self._cache64[key]
        return entry or None

    def next_ident(self) -> int:
        """A fresh IPv4 Identification, from the same sequence `translate` uses (RFC 6864)."""
        return self._ctx.next_ident()

    def _learn46(self, key: bytes) -> None:
        """Remember how an IPv4 address pair translates, when it is the plain case."""
        cache = self._cache46
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        ctx = self._ctx
        src4, dst4 = key[:4], key[4:]
        if ctx.clat_mode and not ctx.mapper.in_eam4(int.from_bytes(src4, "big")):
            cache[key] = False  # a foreign source: `translate` drops it (and the offload path)
            return
        d = None if dst4 == ctx.local4 else ctx.mapper.to6(dst4)
        s = None if d is None else ctx.mapper.to6(src4)
        if d is None or s is None:
            cache[key] = False
            return
        addrs6 = s[0] + d[0]
        cache[key] = PlainPair(
            addrs6, address_delta(key, addrs6), int.from_bytes(addrs6, "big") % 0xFFFF
        )

    def _learn64(self, key: bytes) -> None:
        """Remember how an IPv6 address pair translates, when it is the plain case."""
        cache = self._cache64
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        ctx = self._ctx
        src6, dst6 = key[:16], key[16:]
        d = None if dst6 == ctx.local6 else ctx.mapper.to4(dst6)
        s = None if d is None else ctx.mapper.to4(src6)
        if (
            d is None
            or s is None
            or (
                ctx.hairpin != "off"
                and not d[1]
                and ctx.mapper.in_eam4(int.from_bytes(d[0], "big"))
            )
        ):
            cache[key] = False
            return
        addrs4 = s[0] + d[0]
        cache[key] = PlainPair(
            addrs4, address_delta(key, addrs4), int.from_bytes(key, "big") % 0xFFFF
        )
