"""IPv4 -> IPv6 (RFC 7915 §4), by protocol: IP header, TCP/UDP, ICMP, ICMP errors' inner packet."""

from __future__ import annotations

import struct

from . import drops
from .checksum import address_delta, finish, finish_icmp4, finish_udp, pseudo6, sum16
from .context import Context, TranslateResult, dropped
from .fragment import FRAG6, ipv6_packets
from .icmp_tables import (
    ICMP4_ERROR_TYPES,
    ICMP4_LENGTH_TYPES,
    ICMP4_TO_6_ERROR,
    ICMP4_TO_6_INFO,
    ICMP6_LENGTH_TYPES,
    MTU,
    NEXT_HEADER,
    POINTER,
    POINTER_4TO6,
)
from .rewrite import IP6_HEAD, L4_CHECKSUM_OFFSET, fix_l4_checksum, ipv4_header

IP4_FIELDS = struct.Struct("!BHHHBB")  # from octet 1: tos, total, id, flags/offset, ttl, proto
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58
ZERO4 = b"\0\0\0\0"
IPV6_MIN_MTU = 1280  # RFC 8200 §5
ICMP6_ERROR_ROOM = IPV6_MIN_MTU - 48  # RFC 7915 §4.2: translated errors fit in 1280 bytes


def _unicast4(address: bytes) -> bool:
    """RFC 1812 §4.3.2.7: only a single-host source (and destination) gets ICMP errors."""
    return 0 < address[0] < 224 and address[0] != 127


# -- §4.4: errors the translator originates (from local_ipv4, RFC 1812 §4.3.2.3 quote) --------


def icmp4_error(
    ctx: Context, offending: bytes, icmp_type: int, code: int, rest: bytes
) -> bytes | None:
    """An ICMPv4 error about `offending`, from local_ipv4, at most 576 bytes (RFC 1812)."""
    if ctx.local4 is None:
        return None
    quote = offending[: 576 - 28]
    msg = bytes((icmp_type, code, 0, 0)) + rest + quote
    msg = msg[:2] + finish(sum16(msg)).to_bytes(2, "big") + msg[4:]
    head = ipv4_header(
        0, 28 + len(quote), ctx.next_ident(), 0, 64, ICMP, ctx.local4 + offending[12:16]
    )
    return head + msg


def _echo_from_translator(ctx: Context, pkt: bytes, ihl: int, fragmented: bool) -> TranslateResult:
    """Echo Request to local_ipv4: the translator answers, as TAYGA does; anything else drops."""
    msg = pkt[ihl:]
    if (
        pkt[9] != ICMP
        or fragmented
        or len(msg) < 8
        or msg[0] != 8
        or sum16(msg) != 0
        or not _unicast4(pkt[12:16])
    ):
        return dropped(drops.TO_TRANSLATOR)
    reply = b"\0" + msg[1:2] + b"\0\0" + msg[4:]
    reply = (
        reply[:2]
        + finish_icmp4(sum16(reply), msg[1], memoryview(reply)[4:]).to_bytes(2, "big")
        + reply[4:]
    )
    head = ipv4_header(0, 20 + len(reply), ctx.next_ident(), 0, 64, ICMP, pkt[16:20] + pkt[12:16])
    return TranslateResult([], [head + reply])


# -- §4.1: the IPv4 header ---------------------------------------------------------------------


def _unexpired_source_route(pkt: bytes, ihl: int) -> bool:
    """RFC 7915 §4.1: an LSRR/SSRR option whose pointer has not run past its length."""
    i = 20
    while i < ihl:
        kind = pkt[i]
        if kind == 0:  # end of option list
            return False
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= ihl:
            return False
        length = pkt[i + 1]
        if kind in (131, 137) and i + 2 < ihl:  # loose / strict source and record route
            return pkt[i + 2] <= length
        if length < 2:
            return False
        i += length
    return False


def translate(ctx: Context, pkt: bytes, hairpin: bool = False) -> TranslateResult:
    """Translate one IPv4 packet; `hairpin` marks the second leg of RFC 7757 hairpinning."""
    n = len(pkt)
    if n < 20:
        return dropped(drops.TRUNCATED)
    ihl = (pkt[0] & 0x0F) << 2
    if ihl < 20:
        return dropped(drops.BAD_HEADER_LENGTH)
    tos, total, ident, frag, ttl, proto = IP4_FIELDS.unpack_from(pkt, 1)
    if total < ihl:
        return dropped(drops.BAD_LENGTH)
    if total > n:
        return dropped(drops.TRUNCATED)
    if total < n:
        pkt = pkt[:total]  # link-layer padding
    if sum16(pkt[:ihl]):
        return dropped(drops.BAD_CHECKSUM)  # RFC 1812 §5.2.2: a router verifies it
    df = frag & 0x4000
    mf = frag & 0x2000
    offset = (frag & 0x1FFF) << 3
    size = total - ihl
    fragmented = bool(mf or offset)
    if offset + size > 65535 or (mf and (size == 0 or size & 7)):
        return dropped(drops.BAD_FRAGMENT)
    first = offset == 0
    src4, dst4 = pkt[12:16], pkt[16:20]
    # clat_mode (RFC 6877 CLAT): the host's own IPv4 addresses are the EAM entries; any other
    # source is forged. Dropped before anything could answer it (no ICMP error to a forgery).
    # The hairpinned leg came from the IPv6 side, where its source was checked.
    if ctx.clat_mode and not hairpin and not ctx.mapper.in_eam4(int.from_bytes(src4, "big")):
        return dropped(drops.FOREIGN_SOURCE)
    if proto == ICMP and not fragmented and size < 8:
        return dropped(drops.TRUNCATED)  # RFC 792: shorter than its header; malformed, unanswered
    icmp_error = proto == ICMP and first and size > 0 and pkt[ihl] in ICMP4_ERROR_TYPES
    # RFC 7915 §4.4 + RFC 1812 §4.3.2.7: no errors about errors, non-first fragments, or
    # packets from/to non-unicast addresses.
    answer = first and not icmp_error and not hairpin and _unicast4(src4) and dst4[0] < 224

    if dst4 == ctx.local4:
        return _echo_from_translator(ctx, pkt, ihl, fragmented)

    # §4.1 Source/Destination Address: RFC 7757 §3.3 (EAM first) then RFC 6052.
    d = ctx.mapper.to6(dst4)
    if d is None:
        # §4.4: Communication Administratively Prohibited.
        return dropped(
            drops.UNTRANSLATABLE_DESTINATION,
            icmp4_error(ctx, pkt, 3, 13, ZERO4) if answer else None,
        )
    dst6, dst_eam = d
    # RFC 7757 §3.3: an EAM source translates through its entry, whatever the destination.
    # §4.2: only the second leg of a hairpinned packet takes its source from pool6, so that
    # the reply comes back through us.
    # Jool: the reserved ranges bar ordinary packets, not the source of an ICMP error (a router
    # may send from 0.0.0.0 or 127/8; RFC 7915 §4.2 does not forbid it).
    s = ctx.mapper.to6(src4, use_eam=not hairpin, reserved=not icmp_error)
    if s is not None:
        src6 = s[0]
    elif icmp_error and ctx.rfc6791v6 is not None:
        src6 = ctx.rfc6791v6  # RFC 7915 §4.2 + RFC 6791: error from an untranslatable router
    else:
        return dropped(
            drops.UNTRANSLATABLE_SOURCE, icmp4_error(ctx, pkt, 3, 13, ZERO4) if answer else None
        )

    # §4.1 Hop Limit: the translator is a router; the hairpin leg was decremented already.
    if hairpin:
        hop = ttl
    elif ttl <= 1:
        return dropped(drops.TTL_EXPIRED, icmp4_error(ctx, pkt, 11, 0, ZERO4) if answer else None)
    else:
        hop = ttl - 1

    # §4.1: options are ignored, but an unexpired source route is refused (Source Route Failed).
    if ihl > 20 and _unexpired_source_route(pkt, ihl):
        return dropped(drops.SOURCE_ROUTE, icmp4_error(ctx, pkt, 3, 5, ZERO4) if answer else None)

    addrs6 = src6 + dst6
    data = pkt[ihl:]
    if proto in (TCP, UDP):
        if first:
            r = tcp_udp_4to6(ctx, pkt[12:20], addrs6, proto, data, fragmented)
            if isinstance(r, str):
                return dropped(r)
            data = r
    elif proto == ICMP:
        if fragmented:
            if first:
                return dropped(drops.FRAGMENTED_ICMP)  # checksum needs the whole message
        else:
            r = icmp_4to6(ctx, data, addrs6, hairpin)
            if isinstance(r, str):
                return dropped(r)
            data = r
        proto = ICMPV6
    elif proto == ICMPV6:
        return dropped(drops.ICMP_WRONG_FAMILY)
    # §4.5: any other protocol passes through unchanged.

    # §4.1 Traffic Class (or zero, reset_traffic_class); fragmentation and MTU (RFC 8021).
    tc = tos & ctx.tc_mask
    size6 = 40 + len(data) + (8 if fragmented else 0)
    if df:
        if size6 > ctx.ipv6_mtu:
            # §4.1: DF set and too big: Fragmentation Needed, MTU of the IPv6 side - 20.
            mtu = min(ctx.ipv6_mtu - 20 - (8 if fragmented else 0), 65535)  # a 16-bit field
            err = icmp4_error(ctx, pkt, 3, 4, struct.pack("!HH", 0, mtu)) if answer else None
            return dropped(drops.FRAGMENTATION_NEEDED, err)
        need_frag_header = fragmented
    else:
        # §4.1: DF clear and bigger than lowest_ipv6_mtu: fragmented here to fit it.
        need_frag_header = fragmented or size6 > ctx.lowest_ipv6_mtu
    return TranslateResult(
        ipv6_packets(
            tc,
            proto,
            hop,
            addrs6,
            data,
            (ident, offset, bool(mf)) if need_frag_header else None,
            ctx.ipv6_mtu if df else ctx.lowest_ipv6_mtu,
        )
    )


# -- §4.5: TCP and UDP ------------------------------------------------------------------------


def tcp_udp_4to6(
    ctx: Context, addrs4: bytes, addrs6: bytes, proto: int, data: bytes, fragmented: bool
) -> bytes | str:
    """The transport header of an unfragmented packet or first fragment; str = drop reason."""
    at = L4_CHECKSUM_OFFSET[proto]
    if len(data) < at + 2:
        return drops.BAD_FRAGMENT if fragmented else drops.TRUNCATED
    if proto == UDP and data[6] == 0 and data[7] == 0:
        # §4.5: IPv6 forbids a zero UDP checksum. A stateless translator can compute it
        # only for an unfragmented datagram, and only when told to (amend_udp_checksum_zero).
        if fragmented:
            return drops.FRAGMENTED_UDP_CHECKSUM_ZERO
        if not ctx.amend_udp:
            return drops.UDP_CHECKSUM_ZERO
        c = finish_udp(sum16(data) + pseudo6(addrs6, UDP, len(data)))
        return data[:6] + c.to_bytes(2, "big") + data[8:]
    # §4.5: incremental update for the pseudo-header change (RFC 1624), no payload pass.
    delta = address_delta(addrs4, addrs6)
    return fix_l4_checksum(data[: at + 2], proto, delta) + data[at + 2 :]


# -- §4.2: ICMPv4 -> ICMPv6 --------------------------------------------------------------------


def icmp_4to6(ctx: Context, msg: bytes, addrs6: bytes, hairpin: bool = False) -> bytes | str:
    """Translate an unfragmented ICMPv4 message; a str return is a drop reason."""
    if len(msg) < 8:
        return drops.TRUNCATED
    if sum16(msg):
        return drops.BAD_CHECKSUM
    icmp_type, code = msg[0], msg[1]
    t6 = ICMP4_TO_6_INFO.get(icmp_type)
    if t6 is not None:
        # §4.2 Echo / Echo Reply: type 128 / 129, rest unchanged.
        body = bytes((t6, code, 0, 0)) + msg[4:]
    else:
        mapping = ICMP4_TO_6_ERROR.get((icmp_type, code))
        if mapping is None:
            return drops.ICMP_UNTRANSLATABLE  # §4.2: "silently drop"
        r = _error_4to6(ctx, msg, mapping, hairpin)
        if isinstance(r, str):
            return r
        body = r
    # §4.2: the ICMPv6 checksum covers the IPv6 pseudo-header (RFC 4443 §2.3).
    c = finish(sum16(body) + pseudo6(addrs6, ICMPV6, len(body)))
    return body[:2] + c.to_bytes(2, "big") + body[4:]


def _error_4to6(
    ctx: Context, msg: bytes, mapping: tuple[int, int, int], hairpin: bool
) -> bytes | str:
    t6, c6, kind = mapping
    data = msg[8:]
    ext = b""
    # RFC 4884 §4.1: a length attribute (32-bit words) marks ICMP extensions after the quote.
    if msg[0] in ICMP4_LENGTH_TYPES and msg[5]:
        quoted = msg[5] * 4
        if quoted >= 128 and len(data) >= quoted + 4:
            data, ext = data[:quoted], data[quoted:]
    inner = _inner_4to6(ctx, data, hairpin)
    if isinstance(inner, str):
        return inner
    if kind == MTU:
        rest = _packet_too_big_mtu(ctx, msg, data).to_bytes(4, "big")
    elif kind == POINTER:
        pointer = POINTER_4TO6.get(msg[4])
        if pointer is None:
            return drops.ICMP_UNTRANSLATABLE  # §4.2 Figure 3: "n/a"
        rest = pointer.to_bytes(4, "big")
    elif kind == NEXT_HEADER:
        rest = (6).to_bytes(4, "big")  # §4.2: pointer to the IPv6 Next Header field
    else:
        rest = ZERO4
    # RFC 4884 + RFC 7915 §4.2: keep the extensions where ICMPv6 can carry them, with the
    # quote padded to 64 bits (at least 128 bytes); the whole error fits in 1280 bytes.
    if ext and t6 in ICMP6_LENGTH_TYPES:
        padded = max(128, (len(inner) + 7) & ~7)
        if padded + len(ext) > ICMP6_ERROR_ROOM:
            padded = (ICMP6_ERROR_ROOM - len(ext)) & ~7
        if padded >= 128:
            inner = inner[:padded].ljust(padded, b"\0")
            return bytes((t6, c6, 0, 0, padded // 8)) + rest[1:] + inner + ext
    return bytes((t6, c6, 0, 0)) + rest + inner[:ICMP6_ERROR_ROOM]


def _packet_too_big_mtu(ctx: Context, msg: bytes, quote: bytes) -> int:
    """RFC 7915 §4.2: min(MTU + 20, IPv6 next-hop MTU, IPv4 next-hop MTU + 20).

    MTU 0 (a router predating RFC 1191): the greatest plateau below the quoted packet's
    Total Length (RFC 1191 §5). Never below lowest_ipv6_mtu (RFC 8021: no atomic fragments).
    """
    mtu4 = (msg[6] << 8) | msg[7]
    if mtu4 == 0:
        inner_total = (quote[2] << 8) | quote[3] if len(quote) >= 4 else 0
        mtu4 = next((p for p in ctx.plateaus if p < inner_total), ctx.plateaus[-1])
    mtu6 = min(mtu4 + 20, ctx.ipv6_mtu, ctx.ipv4_mtu + 20)
    return max(mtu6, ctx.lowest_ipv6_mtu)


# -- §4.3: the packet inside an ICMPv4 error ----------------------------------------------------


def _inner_4to6(ctx: Context, data: bytes, hairpin: bool) -> bytes | str:
    """§4.3: translate the (possibly truncated) IPv4 packet quoted in an error.

    Same rules as the outer header, except the TTL is not decremented and nothing is
    checked against MTUs; lengths come from the quoted header, not from the truncated quote.
    """
    if len(data) < 20 or data[0] >> 4 != 4:
        return drops.BAD_INNER_PACKET
    ihl = (data[0] & 0x0F) << 2
    if ihl < 20 or len(data) < ihl:
        return drops.BAD_INNER_PACKET
    tos, total, ident, frag, ttl, proto = IP4_FIELDS.unpack_from(data, 1)
    if total < ihl:
        return drops.BAD_INNER_PACKET
    data = data[:total]  # RFC 4884 zero padding is not part of the quoted packet
    src4, dst4 = data[12:16], data[16:20]
    # The quoted packet travels the other way: in a hairpinned error (RFC 7757 §4.2) its
    # destination mirrors the outer source and takes pool6 too.
    s = ctx.mapper.to6(src4)
    if s is None:
        return drops.BAD_INNER_PACKET
    d = ctx.mapper.to6(dst4, use_eam=not hairpin)
    if d is None:
        return drops.BAD_INNER_PACKET
    addrs6 = s[0] + d[0]
    mf = frag & 0x2000
    offset = (frag & 0x1FFF) << 3
    fragmented = bool(mf or offset)
    payload = data[ihl:]
    length = total - ihl  # the quoted packet's own payload length
    if proto == ICMP:
        proto = ICMPV6
        if offset == 0 and payload:
            t6 = ICMP4_TO_6_INFO.get(payload[0])
            if t6 is None:
                # §4.3: a single level of embedding only.
                return (
                    drops.ICMP_NESTED_ERROR
                    if payload[0] in ICMP4_ERROR_TYPES
                    else drops.ICMP_UNTRANSLATABLE
                )
            head = bytes((t6,)) + payload[1:2]
            if len(payload) >= 4 and not fragmented:
                old = (payload[2] << 8) | payload[3]
                s16 = 0xFFFF - old + ((t6 - payload[0]) << 8) + pseudo6(addrs6, ICMPV6, length)
                head += finish(s16).to_bytes(2, "big")
            else:
                head += payload[2:4]
            payload = head + payload[4:]
    elif (proto in (TCP, UDP)) and offset == 0:
        at = L4_CHECKSUM_OFFSET[proto]
        if len(payload) >= at + 2:
            delta = address_delta(src4 + dst4, addrs6)
            payload = fix_l4_checksum(payload[: at + 2], proto, delta) + payload[at + 2 :]
    tc = tos & ctx.tc_mask
    if fragmented:
        head6 = IP6_HEAD.pack(0x60000000 | (tc << 20), length + 8, 44, ttl) + addrs6
        return head6 + FRAG6.pack(proto, 0, offset | (1 if mf else 0), ident) + payload
    return IP6_HEAD.pack(0x60000000 | (tc << 20), length, proto, ttl) + addrs6 + payload
