"""Software GSO: a TSO/USO super-packet cut into the packets the kernel would send, checksums
finished, for the reference path (`Translator.translate` takes one packet at a time). Pure, no I/O.
"""

from __future__ import annotations

from ..checksum import finish, finish_udp, sum16
from .vnet import GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, TCP, TCP_CWR, TCP_FIN, TCP_PSH, UDP

_IPV6_SKIPPABLE = (0, 43, 60)  # Hop-by-Hop, Routing, Destination Options (RFC 8200 §4)


def finish_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes | None:
    """Finish a NEEDS_CSUM checksum as the kernel's skb_checksum_help: the one's complement sum
    from `csum_start` to the end (the field holds the pseudo-header sum), 0 sent as 0xFFFF."""
    at = csum_start + csum_offset
    if at + 2 > len(packet) or csum_start < 20:
        return None
    c = finish_udp(sum16(packet[csum_start:]))
    return packet[:at] + c.to_bytes(2, "big") + packet[at + 2 :]


def _l4_start(packet: bytes) -> tuple[int, int] | None:
    """(offset of the transport header, protocol) of an IPv4 or IPv6 packet, or None."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        return (packet[0] & 0x0F) << 2, packet[9]
    if version != 6 or len(packet) < 40:
        return None
    nh, off = packet[6], 40
    while nh in _IPV6_SKIPPABLE:
        if off + 8 > len(packet):
            return None
        nh, off = packet[off], off + ((packet[off + 1] + 1) << 3)
    return off, nh


def segment(packet: bytes, gso: int, gso_size: int, csum_start: int | None) -> list[bytes] | None:
    """Cut a TSO/USO super-packet into the packets the kernel's GSO would send, checksums
    finished; None when the virtio-net header does not describe the packet. `csum_start`
    (None without NEEDS_CSUM) must point at the transport header."""
    found = _l4_start(packet)
    if found is None or not gso_size:
        return None
    l4, proto = found
    version = packet[0] >> 4
    base = gso & 0x7F
    wanted = {
        (4, TCP): GSO_TCPV4,
        (6, TCP): GSO_TCPV6,
        (4, UDP): GSO_UDP_L4,
        (6, UDP): GSO_UDP_L4,
    }.get((version, proto))
    if wanted is None or base != wanted or (csum_start is not None and l4 != csum_start):
        return None
    if proto == TCP:
        if len(packet) < l4 + 20:
            return None
        l4len = (packet[l4 + 12] >> 4) << 2
        at = 16
    else:
        l4len, at = 8, 6
    if l4len < (20 if proto == TCP else 8) or len(packet) < l4 + l4len:
        return None
    length = ((packet[2] << 8) | packet[3]) if version == 4 else 40 + ((packet[4] << 8) | packet[5])
    if length != len(packet):
        return None
    ip_head = bytearray(packet[:l4])
    l4_head = bytearray(packet[l4 : l4 + l4len])
    l4_head[at : at + 2] = b"\0\0"
    payload = packet[l4 + l4len :]
    count = max(1, -(-len(payload) // gso_size))
    addrs = packet[12:20] if version == 4 else packet[8:40]
    ident = (packet[4] << 8) | packet[5]
    seq = int.from_bytes(packet[l4 + 4 : l4 + 8], "big")
    tcp_flags = packet[l4 + 13] if proto == TCP else 0
    out = []
    for i in range(count):
        chunk = payload[i * gso_size : (i + 1) * gso_size]
        l4_length = l4len + len(chunk)
        if version == 4:
            ip_head[2:4] = (l4 + l4_length).to_bytes(2, "big")
            ip_head[4:6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")  # inet_gso_segment
            ip_head[10:12] = b"\0\0"
            ip_head[10:12] = finish(sum16(ip_head)).to_bytes(2, "big")
        else:
            ip_head[4:6] = (l4 - 40 + l4_length).to_bytes(2, "big")
        if proto == TCP:
            l4_head[4:8] = ((seq + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
            f = tcp_flags
            if i < count - 1:
                f &= ~(TCP_FIN | TCP_PSH)  # tcp_gso_segment: FIN and PSH on the last only
            if i > 0:
                f &= ~TCP_CWR  # and CWR on the first only
            l4_head[13] = f & 0xFF
        else:
            l4_head[4:6] = l4_length.to_bytes(2, "big")
        l4_head[at : at + 2] = b"\0\0"
        pseudo = int.from_bytes(addrs, "big") + proto + l4_length
        s = pseudo + sum16(l4_head) + sum16(chunk)
        c = finish_udp(s) if proto == UDP else finish(s)
        l4_head[at : at + 2] = c.to_bytes(2, "big")
        out.append(bytes(ip_head) + bytes(l4_head) + chunk)
    return out
