"""The virtio-net header a TUN with IFF_VNET_HDR puts before every packet, and the frame type.

A frame is the 10-byte `struct virtio_net_hdr` (little-endian on a TUN; virtio 1.x §5.1.6)
followed by one IP packet. Pure, no I/O.
"""

from __future__ import annotations

import struct

VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size  # 10: the size TUNSETVNETHDRSZ is set to
F_NEEDS_CSUM = 0x01  # the L4 checksum field holds the pseudo-header sum; finish from csum_start
F_DATA_VALID = 0x02  # the checksum was verified (CHECKSUM_UNNECESSARY)
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 4, 5
GSO_ECN = 0x80  # TCP with CWR: the kernel keeps CWR on the first segment only
NO_VNET_HDR = bytes(VNET_HDR_LEN)

BAD_VNET_HEADER = "bad-vnet-header"  # a super-packet its virtio-net header does not describe
OFFLOAD_DROP_REASONS: frozenset[str] = frozenset({BAD_VNET_HEADER})

TCP, UDP = 6, 17
TCP_FIN, TCP_PSH, TCP_CWR = 0x01, 0x08, 0x80  # the flags segmentation keeps on one segment only

Frame = list[bytes | memoryview]  # one writev vector: the virtio-net header, then the packet


def frame_bytes(frame: Frame) -> bytes:
    """A frame as one bytes object (for tests and diagnostics; the loop writes the vector)."""
    return b"".join(frame)
