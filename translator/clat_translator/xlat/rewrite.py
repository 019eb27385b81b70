"""Header rewrite + transport checksum update, with no MTU or fragmentation policy.

These are the per-packet steps for unfragmented TCP/UDP: one header built, one 16-bit
checksum fixed incrementally (RFC 1624), one concatenation. Callers decide MTU and
fragmentation; an offloaded super-packet path (TSO/GSO) can reuse them unchanged.
"""

import struct

IP6_HEAD = struct.Struct("!IHBB")  # version/TC/flow, payload length, next header, hop limit
IP4_HEAD = struct.Struct("!BBHHHBBH")  # vihl, tos, total, id, flags/offset, ttl, proto, csum
TCP = 6
UDP = 17
# Offset of the checksum inside the transport header.
L4_CHECKSUM_OFFSET = {TCP: 16, UDP: 6}


def fix_l4_checksum(head: bytes, proto: int, delta: int) -> bytes:
    """Return the first 8 (UDP) or 18 (TCP) transport bytes with the checksum updated.

    RFC 7915 §4.5/§5.5: the pseudo-header changed by `delta` (RFC 1624). A UDP zero
    checksum stays zero (the caller decides its fate); a computed zero UDP is sent as 0xFFFF.
    """
    at = L4_CHECKSUM_OFFSET[proto]
    old = (head[at] << 8) | head[at + 1]
    if proto == UDP and old == 0:
        return head[: at + 2]
    c = (old ^ 0xFFFF) + delta
    c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
    if c == 0 and proto == UDP:
        c = 0xFFFF
    return head[:at] + c.to_bytes(2, "big")


def rewrite_46(packet: bytes, ihl: int, addrs6: bytes, delta: int, tc: int, hop: int) -> bytes:
    """IPv4 TCP/UDP packet (not a fragment) -> IPv6 packet (RFC 7915 §4.1, §4.5).

    `addrs6` is the 32-byte source+destination, `delta` the RFC 1624 pseudo-header delta of
    the address change, `tc` the traffic class, `hop` the (already decremented) hop limit.
    """
    proto = packet[9]
    end = ihl + L4_CHECKSUM_OFFSET[proto] + 2
    return b"".join(
        (
            IP6_HEAD.pack(0x60000000 | (tc << 20), len(packet) - ihl, proto, hop),
            addrs6,
            fix_l4_checksum(packet[ihl:end], proto, delta),
            packet[end:],
        )
    )


def ipv4_header(
    tos: int, total: int, ident: int, flags: int, ttl: int, proto: int, addrs4: bytes
) -> bytes:
    """A 20-byte IPv4 header with its checksum (RFC 791); `flags` includes the offset."""
    s = (
        0x4500
        + tos
        + total
        + ident
        + flags
        + ((ttl << 8) | proto)
        + int.from_bytes(addrs4, "big") % 0xFFFF
    )
    s %= 0xFFFF
    return (
        IP4_HEAD.pack(0x45, tos, total, ident, flags, ttl, proto, 0xFFFF - s if s else 0) + addrs4
    )


def rewrite_64(
    packet: bytes,
    l4_offset: int,
    proto: int,
    addrs4: bytes,
    delta: int,
    tos: int,
    ident: int,
    flags: int,
    ttl: int,
) -> bytes:
    """IPv6 TCP/UDP packet (not a fragment) -> IPv4 packet (RFC 7915 §5.1, §5.5).

    `l4_offset` skips the IPv6 header and its extension headers; `delta` is the RFC 1624
    delta of the pseudo-header address change; `flags` the IPv4 flags/offset word (DF per
    RFC 7915 §5.1, decided by the caller); `ttl` the already decremented hop limit.
    """
    end = l4_offset + L4_CHECKSUM_OFFSET[proto] + 2
    return b"".join(
        (
            ipv4_header(tos, 20 + len(packet) - l4_offset, ident, flags, ttl, proto, addrs4),
            fix_l4_checksum(packet[l4_offset:end], proto, delta),
            packet[end:],
        )
    )
