"""IPv6 -> IPv4 (RFC 7915 §5), by protocol: IP header, TCP/UDP, ICMP, ICMP errors' inner packet."""

from __future__ import annotations

import struct

from . import drops, four_to_six
from .checksum import address_delta, finish, finish_icmp4, pseudo6, sum16
from .context import Context, TranslateResult, dropped
from .fragment import FRAG6, ipv4_fragments
from .icmp_tables import (
    ICMP4_LENGTH_TYPES,
    ICMP6_LENGTH_TYPES,
    ICMP6_TO_4_ERROR,
    ICMP6_TO_4_INFO,
    MTU,
    POINTER,
    POINTER_6TO4,
)
from .rewrite import IP6_HEAD, L4_CHECKSUM_OFFSET, fix_l4_checksum, ipv4_header

IP6_FIELDS = struct.Struct("!HBB")  # from octet 4: payload length, next header, hop limit
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58
HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS = 0, 43, 44, 60
# RFC 7915 §5.1: extension headers the translator skips (Fragment handled on its own).
SKIPPED_EXTENSIONS = frozenset({HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS})
ZERO4 = b"\0\0\0\0"
IPV6_MIN_MTU = 1280  # RFC 8200 §5
ICMP4_ERROR_ROOM = 576 - 28  # RFC 7915 §5.2 / RFC 1812 §4.3.2.3: errors fit in 576 bytes


class _Headers:
    """The walk over an IPv6 header chain (RFC 8200 §4)."""

    __slots__ = ("proto", "offset", "frag", "frag_at", "segments_left_at")

    def __init__(self) -> None:
        self.proto = 0
        self.offset = 40
        self.frag: tuple[int, int, int] | None = None  # (identification, offset, more)
        self.frag_at = 0
        self.segments_left_at = 0


def _walk(pkt: bytes, end: int) -> _Headers | str:
    h = _Headers()
    nh, off = pkt[6], 40
    while nh in SKIPPED_EXTENSIONS:
        if off + 8 > end:
            return drops.BAD_EXTENSION_HEADER
        if nh == FRAGMENT:
            if h.frag is not None:
                return drops.BAD_EXTENSION_HEADER
            nh, _, fo, ident = FRAG6.unpack_from(pkt, off)
            h.frag = (ident, fo & 0xFFF8, fo & 1)
            h.frag_at = off
            off += 8
            if fo & 0xFFF8:
                break  # a non-first fragment: the rest is fragment data
            continue
        if h.frag is not None:
            # Headers after the Fragment Header belong to the fragmentable part: dropping
            # them would shift the offsets of the other fragments.
            return drops.BAD_EXTENSION_HEADER
        if nh == HOP_BY_HOP and off != 40:
            return drops.BAD_EXTENSION_HEADER  # RFC 8200 §4.3: only right after the header
        length = (pkt[off + 1] + 1) << 3
        if off + length > end:
            return drops.BAD_EXTENSION_HEADER
        if nh == ROUTING and pkt[off + 3] and not h.segments_left_at:
            h.segments_left_at = off + 3
        nh = pkt[off]
        off += length
    h.proto, h.offset = nh, off
    return h


def _unicast6(address: bytes) -> bool:
    """RFC 4443 §2.4(e): no errors to unspecified or multicast sources."""
    return address[0] != 0xFF and any(address)


# -- §5.4: errors the translator originates (from local_ipv6) ----------------------------------


def icmp6_error(
    ctx: Context, offending: bytes, icmp_type: int, code: int, rest: bytes
) -> bytes | None:
    """An ICMPv6 error about `offending`, from local_ipv6, at most 1280 bytes (RFC 4443 §2.4)."""
    if ctx.local6 is None:
        return None
    quote = offending[: 1280 - 48]
    addrs6 = ctx.local6 + offending[8:24]
    msg = bytes((icmp_type, code, 0, 0)) + rest + quote
    c = finish(sum16(msg) + pseudo6(addrs6, ICMPV6, len(msg)))
    msg = msg[:2] + c.to_bytes(2, "big") + msg[4:]
    return IP6_HEAD.pack(0x60000000, len(msg), ICMPV6, 64) + addrs6 + msg


def _echo_from_translator(ctx: Context, pkt: bytes, h: _Headers) -> TranslateResult:
    """Echo Request to local_ipv6: the translator answers; anything else drops."""
    msg = pkt[h.offset :]
    src6 = pkt[8:24]
    if (
        h.proto != ICMPV6
        or h.frag is not None
        or len(msg) < 8
        or msg[0] != 128
        or (sum16(msg) + pseudo6(pkt[8:40], ICMPV6, len(msg))) % 0xFFFF
        or not _unicast6(src6)
    ):
        return dropped(drops.TO_TRANSLATOR)
    addrs6 = pkt[24:40] + src6
    reply = b"\x81" + msg[1:2] + b"\0\0" + msg[4:]
    c = finish(sum16(reply) + pseudo6(addrs6, ICMPV6, len(reply)))
    reply = reply[:2] + c.to_bytes(2, "big") + reply[4:]
    return TranslateResult([], [IP6_HEAD.pack(0x60000000, len(reply), ICMPV6, 64) + addrs6 + reply])


# -- §5.1: the IPv6 header ---------------------------------------------------------------------


def translate(ctx: Context, pkt: bytes) -> TranslateResult:
    """Translate one IPv6 packet."""
    n = len(pkt)
    if n < 40:
        return dropped(drops.TRUNCATED)
    plen, _, hop = IP6_FIELDS.unpack_from(pkt, 4)
    if plen == 0 and pkt[6] == HOP_BY_HOP:
        return dropped(drops.BAD_LENGTH)  # RFC 2675 jumbogram: no IPv4 form
    end = 40 + plen
    if end > n:
        return dropped(drops.TRUNCATED)
    if end < n:
        pkt = pkt[:end]
    h = _walk(pkt, end)
    if isinstance(h, str):
        return dropped(h)
    proto = h.proto
    data = pkt[h.offset :]
    size = len(data)
    frag = h.frag
    if frag is not None:
        ident, offset, more = frag
        fragmented = bool(offset or more)  # offset 0, M 0: an atomic fragment (RFC 8021)
        if offset + size + 20 > 65535 or (more and (size == 0 or size & 7)):
            return dropped(drops.BAD_FRAGMENT)
    else:
        offset, more, fragmented = 0, 0, False
    first = offset == 0
    if proto == ICMPV6 and not fragmented and size < 8:
        return dropped(drops.TRUNCATED)  # RFC 4443 §2.1: shorter than its header, unanswered
    src6, dst6 = pkt[8:24], pkt[24:40]
    icmp_error = proto == ICMPV6 and first and size > 0 and data[0] < 128
    # RFC 7915 §5.4 + RFC 4443 §2.4(e): no errors about errors, non-first fragments, or
    # packets from/to non-unicast addresses.
    answer = first and not icmp_error and _unicast6(src6) and dst6[0] != 0xFF

    if dst6 == ctx.local6:
        return _echo_from_translator(ctx, pkt, h)

    # §5.1 Source/Destination Address: RFC 7757 §3.3 (EAM first) then RFC 6052.
    d = ctx.mapper.to4(dst6)
    if d is None:
        # §5.4: Communication with Destination Administratively Prohibited.
        err = icmp6_error(ctx, pkt, 1, 1, ZERO4) if answer else None
        return dropped(drops.UNTRANSLATABLE_DESTINATION, err)
    dst4, dst_eam = d
    s = ctx.mapper.to4(src6)
    if s is not None:
        src4 = s[0]
    elif icmp_error and ctx.rfc6791v4 is not None:
        src4 = ctx.rfc6791v4  # §5.2 + RFC 6791 / RFC 7600: error from an untranslatable router
    elif (
        ctx.clat_mode
        and dst_eam
        and not icmp_error
        and not ctx.mapper.in_pool6(int.from_bytes(src6, "big"))
    ):
        # clat_mode: the CLAT's peers are the PLAT (pool6) and EAM hosts; anything else is
        # forged or misrouted. Dropped unanswered (no error towards a forged source).
        return dropped(drops.FOREIGN_SOURCE)
    else:
        err = icmp6_error(ctx, pkt, 1, 1, ZERO4) if answer else None
        return dropped(drops.UNTRANSLATABLE_SOURCE, err)
    # RFC 7757 §4.2: a pool6 destination whose IPv4 address has an EAM is hairpinned.
    hairpin = (
        ctx.hairpin != "off" and not dst_eam and ctx.mapper.in_eam4(int.from_bytes(dst4, "big"))
    )

    # §5.1 Time to Live: the translator is a router.
    if hop <= 1:
        err = icmp6_error(ctx, pkt, 3, 0, ZERO4) if answer else None
        return dropped(drops.TTL_EXPIRED, err)

    # §5.1: a Routing Header with Segments Left != 0 is refused with a Parameter Problem
    # pointing at that field.
    if h.segments_left_at:
        err = icmp6_error(ctx, pkt, 4, 0, h.segments_left_at.to_bytes(4, "big")) if answer else None
        return dropped(drops.SEGMENTS_LEFT, err)

    addrs4 = src4 + dst4
    if proto in (TCP, UDP):
        if first:
            r = tcp_udp_6to4(pkt[8:40], addrs4, proto, data, fragmented)
            if isinstance(r, str):
                return dropped(r)
            data = r
    elif proto == ICMPV6:
        proto = ICMP
        if fragmented:
            if first:
                return dropped(drops.FRAGMENTED_ICMP)  # checksum needs the whole message
        else:
            r = icmp_6to4(ctx, data, pkt[8:40])
            if isinstance(r, str):
                return dropped(r)
            data = r
    elif proto == ICMP:
        return dropped(drops.ICMP_WRONG_FAMILY)
    # §5.5: any other protocol passes through unchanged.

    # §5.1 Type of Service: the traffic class, or new_tos when reset_tos.
    tos = ctx.new_tos if ctx.reset_tos else ((pkt[0] & 0x0F) << 4) | (pkt[1] >> 4)
    total = 20 + len(data)
    if frag is not None:
        # §5.1.1: identification from the Fragment Header, MF copied, DF clear.
        ident &= 0xFFFF
        flags = (0x2000 if more else 0) | (offset >> 3)
    elif total > ctx.df_limit:
        ident, flags = 0, 0x4000  # §5.1: DF set above 1260 bytes; RFC 6864: ID unused
    else:
        ident, flags = ctx.next_ident(), 0
    if total > ctx.ipv4_mtu:
        if flags & 0x4000:
            # §5.1: too big for the IPv4 side: Packet Too Big, MTU + 20 (never below the IPv6
            # minimum, RFC 8200 §5).
            mtu = max(ctx.ipv4_mtu + 20, IPV6_MIN_MTU)
            err = icmp6_error(ctx, pkt, 2, 0, mtu.to_bytes(4, "big")) if answer else None
            return dropped(drops.PACKET_TOO_BIG, err)
        out = ipv4_fragments(
            tos, ident, hop - 1, proto, addrs4, data, offset, bool(more), ctx.ipv4_mtu
        )
    else:
        out = [ipv4_header(tos, total, ident, flags, hop - 1, proto, addrs4) + data]
    if hairpin:
        # RFC 7757 §4.2: the IPv4 packet is for one of our own EAM hosts: translate it back.
        back: list[bytes] = []
        for p in out:
            r2 = four_to_six.translate(ctx, p, hairpin=True)
            if r2.drop is not None:
                return r2
            back.extend(r2.out)
        return TranslateResult([], back)
    return TranslateResult(out)


# -- §5.5: TCP and UDP ------------------------------------------------------------------------


def tcp_udp_6to4(
    addrs6: bytes, addrs4: bytes, proto: int, data: bytes, fragmented: bool
) -> bytes | str:
    """The transport header of an unfragmented packet or first fragment; str = drop reason."""
    at = L4_CHECKSUM_OFFSET[proto]
    if len(data) < at + 2:
        return drops.BAD_FRAGMENT if fragmented else drops.TRUNCATED
    # §5.5: incremental update for the pseudo-header change (RFC 1624). A zero UDP checksum
    # stays zero: IPv4 reads it as "no checksum" (RFC 768).
    delta = address_delta(addrs6, addrs4)
    return fix_l4_checksum(data[: at + 2], proto, delta) + data[at + 2 :]


# -- §5.2: ICMPv6 -> ICMPv4 --------------------------------------------------------------------


def icmp_6to4(ctx: Context, msg: bytes, addrs6: bytes) -> bytes | str:
    """Translate an unfragmented ICMPv6 message; a str return is a drop reason."""
    if len(msg) < 8:
        return drops.TRUNCATED
    if (sum16(msg) + pseudo6(addrs6, ICMPV6, len(msg))) % 0xFFFF:
        return drops.BAD_CHECKSUM
    icmp_type, code = msg[0], msg[1]
    t4 = ICMP6_TO_4_INFO.get(icmp_type)
    if t4 is not None:
        # §5.2 Echo Request / Reply: type 8 / 0, rest unchanged.
        body = bytes((t4, code, 0, 0)) + msg[4:]
    else:
        mapping = ICMP6_TO_4_ERROR.get((icmp_type, code))
        if mapping is None:
            return drops.ICMP_UNTRANSLATABLE  # §5.2: MLD, ND, unknown: "silently drop"
        r = _error_6to4(ctx, msg, mapping)
        if isinstance(r, str):
            return r
        body = r
    # §5.2: the ICMPv4 checksum has no pseudo-header.
    return (
        body[:2]
        + finish_icmp4(sum16(body), (body[0] << 8) | body[1], memoryview(body)[4:]).to_bytes(
            2, "big"
        )
        + body[4:]
    )


def _error_6to4(ctx: Context, msg: bytes, mapping: tuple[int, int, int]) -> bytes | str:
    t4, c4, kind = mapping
    data = msg[8:]
    ext = b""
    # RFC 4884 §4.1: a length attribute (64-bit words) marks ICMP extensions after the quote.
    if msg[0] in ICMP6_LENGTH_TYPES and msg[4]:
        quoted = msg[4] * 8
        if quoted >= 128 and len(data) >= quoted + 4:
            data, ext = data[:quoted], data[quoted:]
    r = _inner_6to4(ctx, data)
    if isinstance(r, str):
        return r
    inner, inner_fragment_header = r
    if kind == MTU:
        # §5.2: min(MTU - 20, IPv4 next-hop MTU, IPv6 next-hop MTU - 20), minus 8 more when
        # the quoted packet carried a Fragment Header (it will not in IPv4).
        mtu6 = int.from_bytes(msg[4:8], "big")
        mtu4 = min(mtu6 - 20 - (8 if inner_fragment_header else 0), ctx.ipv4_mtu, ctx.ipv6_mtu - 20)
        rest = struct.pack("!HH", 0, max(68, min(mtu4, 65535)))
    elif kind == POINTER:
        pointer = POINTER_6TO4.get(int.from_bytes(msg[4:8], "big"))
        if pointer is None:
            return drops.ICMP_UNTRANSLATABLE  # §5.2 Figure 6: "n/a"
        rest = bytes((pointer, 0, 0, 0))
    else:
        rest = ZERO4
    # RFC 4884 + RFC 7915 §5.2: keep the extensions where ICMPv4 can carry them, the quote
    # padded to 32 bits (at least 128 bytes); the whole error fits in 576 bytes.
    if ext and t4 in ICMP4_LENGTH_TYPES:
        padded = max(128, (len(inner) + 3) & ~3)
        if padded + len(ext) > ICMP4_ERROR_ROOM:
            padded = (ICMP4_ERROR_ROOM - len(ext)) & ~3
        if padded >= 128:
            inner = inner[:padded].ljust(padded, b"\0")
            return bytes((t4, c4, 0, 0, rest[0], padded // 4)) + rest[2:] + inner + ext
    return bytes((t4, c4, 0, 0)) + rest + inner[:ICMP4_ERROR_ROOM]


# -- §5.3: the packet inside an ICMPv6 error ----------------------------------------------------


def _inner_6to4(ctx: Context, data: bytes) -> tuple[bytes, bool] | str:
    """§5.3: translate the (possibly truncated) IPv6 packet quoted in an error.

    Returns the IPv4 packet and whether the quote had a Fragment Header. Hop limit is not
    decremented; lengths come from the quoted header, not from the truncated quote.
    """
    if len(data) < 40 or data[0] >> 4 != 6:
        return drops.BAD_INNER_PACKET
    plen, _, hop = IP6_FIELDS.unpack_from(data, 4)
    data = data[: 40 + plen]  # RFC 4884 zero padding is not part of the quoted packet
    h = _walk(data, len(data))
    if isinstance(h, str):
        return drops.BAD_INNER_PACKET
    s = ctx.mapper.to4(data[8:24])
    d = ctx.mapper.to4(data[24:40])
    if s is None or d is None:
        return drops.BAD_INNER_PACKET
    addrs4 = s[0] + d[0]
    proto = h.proto
    payload = data[h.offset :]
    length = plen - (h.offset - 40)  # the quoted packet's own upper-layer length
    if length < 0:
        return drops.BAD_INNER_PACKET
    frag = h.frag
    offset, more = (frag[1], frag[2]) if frag is not None else (0, 0)
    fragmented = bool(offset or more)
    if proto == ICMPV6:
        proto = ICMP
        if offset == 0 and payload:
            t4 = ICMP6_TO_4_INFO.get(payload[0])
            if t4 is None:
                # §5.3: a single level of embedding only.
                return drops.ICMP_NESTED_ERROR if payload[0] < 128 else drops.ICMP_UNTRANSLATABLE
            head = bytes((t4,)) + payload[1:2]
            if len(payload) >= 4 and not fragmented:
                old = (payload[2] << 8) | payload[3]
                s16 = 0xFFFF - old + ((t4 - payload[0]) << 8) - pseudo6(data[8:40], ICMPV6, length)
                head += finish_icmp4(s16, (t4 << 8) | payload[1], memoryview(payload)[4:]).to_bytes(
                    2, "big"
                )
            else:
                head += payload[2:4]
            payload = head + payload[4:]
    elif (proto in (TCP, UDP)) and offset == 0:
        at = L4_CHECKSUM_OFFSET[proto]
        if len(payload) >= at + 2:
            delta = address_delta(data[8:40], addrs4)
            payload = fix_l4_checksum(payload[: at + 2], proto, delta) + payload[at + 2 :]
    tos = ctx.new_tos if ctx.reset_tos else ((data[0] & 0x0F) << 4) | (data[1] >> 4)
    total = 20 + length
    if total > 65535:
        return drops.BAD_INNER_PACKET
    if frag is not None:
        flags = (0x2000 if more else 0) | (offset >> 3)
        ident = frag[0] & 0xFFFF
    else:
        flags = 0x4000 if total > ctx.df_limit else 0
        ident = 0
    return ipv4_header(tos, total, ident, flags, hop, proto, addrs4) + payload, frag is not None
