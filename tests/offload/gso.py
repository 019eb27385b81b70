"""What the kernel does with a frame written to an offloading TUN, written independently of the
code under test (no import from clat_translator): cut a TSO/USO super-packet into segments, or
finish a partial checksum, exactly as tcp_gso_segment / __udp_gso_segment / inet_gso_segment /
skb_checksum_help do. Plus builders of the frames the kernel reads out of a TUN.

Scapy builds the packets and checks the checksums of what comes out.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Packet

VNET = struct.Struct("<BBHHHH")  # include/uapi/linux/virtio_net.h, struct virtio_net_hdr
NEEDS_CSUM, DATA_VALID = 1, 2
TCPV4, TCPV6, UDP_L4, ECN = 1, 4, 5, 0x80


def ones_sum(data: bytes) -> int:
    """RFC 1071 one's complement sum, folded to 16 bits (0 only for all-zero data)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_sum(packet: bytes, l4_offset: int, l4_length: int) -> int:
    """The pseudo-header sum of an IPv4 (RFC 793) or IPv6 (RFC 8200 §8.1) packet."""
    if packet[0] >> 4 == 4:
        return ones_sum(packet[12:20] + struct.pack("!HH", packet[9], l4_length))
    proto = _upper_protocol(packet)[1]
    return ones_sum(packet[8:40] + struct.pack("!IxxxB", l4_length, proto))


def _upper_protocol(packet: bytes) -> tuple[int, int]:
    if packet[0] >> 4 == 4:
        return (packet[0] & 15) * 4, packet[9]
    nh, off = packet[6], 40
    while nh in (0, 43, 60):
        nh, off = packet[off], off + (packet[off + 1] + 1) * 8
    return off, nh


def _add(a: int, b: int) -> int:
    s = a + b
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def finish_partial(packet: bytes, start: int, offset: int) -> bytes:
    """skb_checksum_help: checksum from `start` (the field holds the seed), 0 sent as 0xFFFF."""
    c = (~ones_sum(packet[start:])) & 0xFFFF or 0xFFFF
    at = start + offset
    return packet[:at] + struct.pack("!H", c) + packet[at + 2 :]


def kernel_segment(frame: bytes) -> list[bytes]:
    """The packets a frame written to an offloading TUN becomes on a wire."""
    flags, gso, _, gso_size, start, offset = VNET.unpack_from(frame)
    packet = frame[10:]
    if not gso:
        return [finish_partial(packet, start, offset) if flags & NEEDS_CSUM else packet]
    l4, proto = _upper_protocol(packet)
    assert (gso & 0x7F) == {(4, 6): TCPV4, (6, 6): TCPV6}.get((packet[0] >> 4, proto), UDP_L4)
    v4 = packet[0] >> 4 == 4
    l4_header_len = (packet[l4 + 12] >> 4) * 4 if proto == 6 else 8
    check_at = l4 + (16 if proto == 6 else 6)
    data = packet[l4 + l4_header_len :]
    old_l4_len = len(packet) - l4
    if flags & NEEDS_CSUM:
        seed = struct.unpack_from("!H", packet, check_at)[0]
    else:  # tcp4_gso_segment without CHECKSUM_PARTIAL: the seed is computed afresh
        seed = pseudo_sum(packet, l4, old_l4_len)
    chunks = [data[i : i + gso_size] for i in range(0, len(data), gso_size)]
    out = []
    for i, chunk in enumerate(chunks):
        head = bytearray(packet[: l4 + l4_header_len])
        l4_len = l4_header_len + len(chunk)
        if v4:
            struct.pack_into("!H", head, 2, l4 + l4_len)
            ident = struct.unpack_from("!H", packet, 4)[0]
            struct.pack_into("!H", head, 4, (ident + i) & 0xFFFF)  # inet_gso_segment numbers
            struct.pack_into("!H", head, 10, 0)
            struct.pack_into("!H", head, 10, ~ones_sum(bytes(head[:l4])) & 0xFFFF)
        else:
            struct.pack_into("!H", head, 4, l4 - 40 + l4_len)
        if proto == 6:
            seq = struct.unpack_from("!I", packet, l4 + 4)[0]
            struct.pack_into("!I", head, l4 + 4, (seq + i * gso_size) & 0xFFFFFFFF)
            if i < len(chunks) - 1:
                head[l4 + 13] &= ~0x09  # FIN, PSH only on the last segment
            if i > 0:
                head[l4 + 13] &= ~0x80  # CWR only on the first
        else:
            struct.pack_into("!H", head, l4 + 4, l4_len)
        # The seed covers the old length: move it to this segment's (tcp_gso_segment,
        # __udp_gso_segment), then finish over the segment as the device would.
        seg_seed = _add(_add(seed, (~old_l4_len) & 0xFFFF), l4_len)
        struct.pack_into("!H", head, check_at, seg_seed)
        out.append(finish_partial(bytes(head) + chunk, l4, check_at - l4))
    return out


def checksums_valid(packet: bytes) -> bool:
    """Scapy recomputes every checksum of the packet from scratch: are they the ones it has?"""
    parsed: Packet = IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)
    if parsed.haslayer(IPv6ExtHdrFragment) or (IP in parsed and (parsed.frag or parsed.flags.MF)):
        return True  # a fragment: its transport checksum covers the other fragments too
    rebuilt = parsed.copy()
    for layer in (IP, TCP, UDP):
        if rebuilt.haslayer(layer) and not (layer is UDP and rebuilt[UDP].chksum == 0):
            del rebuilt[layer].chksum
    a, b = bytes(parsed), bytes(rebuilt)
    if a == b:
        return True
    # 0x0000 and 0xFFFF are the same one's complement sum (RFC 1624 §3); TCP may carry either
    if parsed.haslayer(TCP):
        at = len(a) - len(bytes(parsed[TCP])) + 16
        return a[:at] + a[at + 2 :] == b[:at] + b[at + 2 :] and {
            a[at : at + 2],
            b[at : at + 2],
        } <= {
            b"\0\0",
            b"\xff\xff",
        }
    return False


def normalize(packet: bytes) -> bytes:
    """Blank what may differ between two correct translations of the same segment.

    The IPv4 Identification: the reference writes 0 on DF packets and a random number on the
    others, the kernel numbers GSO segments from the super-packet's (RFC 6864 §4.1: an atomic
    datagram's ID has no meaning); and TCP's two forms of a zero checksum.
    """
    b = bytearray(packet)
    if b[0] >> 4 == 4:
        b[4:6] = b"\0\0"
        b[10:12] = b"\0\0"
        b[10:12] = struct.pack("!H", ~ones_sum(bytes(b[: (b[0] & 15) * 4])) & 0xFFFF)
    l4, proto = _upper_protocol(bytes(b))
    if proto == 6 and len(b) >= l4 + 18 and b[l4 + 16 : l4 + 18] == b"\xff\xff":
        b[l4 + 16 : l4 + 18] = b"\0\0"
    return bytes(b)


def super_packet(scapy_packet: Packet) -> bytes:
    """A TCP/UDP packet as the local stack hands it to a TUN with CHECKSUM_PARTIAL: the
    checksum field holds the pseudo-header sum (for the whole transport length)."""
    raw = bytearray(bytes(scapy_packet))
    l4, proto = _upper_protocol(bytes(raw))
    at = l4 + (16 if proto == 6 else 6)
    struct.pack_into("!H", raw, at, pseudo_sum(bytes(raw), l4, len(raw) - l4))
    return bytes(raw)


def frame(
    packet: bytes,
    gso_size: int = 0,
    needs_csum: bool = True,
    data_valid: bool = False,
    ecn: bool = False,
) -> bytes:
    """The virtio-net header the kernel writes before `packet` (virtio_net_hdr_from_skb)."""
    l4, proto = _upper_protocol(packet)
    l4_header_len = (packet[l4 + 12] >> 4) * 4 if proto == 6 else 8
    gso = 0
    if gso_size:
        gso = {6: TCPV4 if packet[0] >> 4 == 4 else TCPV6, 17: UDP_L4}[proto] | (ECN if ecn else 0)
    flags = NEEDS_CSUM if needs_csum else DATA_VALID if data_valid else 0
    start, offset = (l4, 16 if proto == 6 else 6) if needs_csum else (0, 0)
    hdr_len = l4 + l4_header_len if gso_size else 0
    return VNET.pack(flags, gso, hdr_len, gso_size, start, offset) + packet


def tcp(ip: Packet, payload: int, **fields: object) -> Packet:
    return (
        ip
        / TCP(sport=40000, dport=5201, seq=123456789, ack=42, flags="PA", **fields)
        / (bytes(i % 251 for i in range(payload)))
    )


def udp(ip: Packet, payload: int) -> Packet:
    return ip / UDP(sport=40000, dport=5201) / bytes(i % 241 for i in range(payload))
