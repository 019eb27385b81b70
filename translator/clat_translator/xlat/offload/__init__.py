"""The offloaded data path's core: what an offloading TUN hands over, translated. Pure, no I/O.

Three jobs, one module each:
- `superpacket`: a TSO/USO super-packet (or a packet with a partial checksum) translated whole
  by rewriting its headers (`OffloadTranslator`), falling back to the reference otherwise;
- `segment`: software GSO, a super-packet cut into the packets the kernel would send, for that
  fallback;
- `coalesce`: software GRO, translated UDP datagrams of one flow leaving as one USO frame
  (`UdpCoalescer`) and its flush policy.
`vnet` holds the virtio-net header they share.
"""

from .coalesce import MAX_COALESCED, UdpCoalescer
from .segment import finish_checksum, segment
from .superpacket import OffloadResult, OffloadTranslator
from .vnet import (
    BAD_VNET_HEADER,
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NO_VNET_HDR,
    OFFLOAD_DROP_REASONS,
    VNET_HDR,
    VNET_HDR_LEN,
    Frame,
    frame_bytes,
)

__all__ = [
    "BAD_VNET_HEADER",
    "F_DATA_VALID",
    "F_NEEDS_CSUM",
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP_L4",
    "MAX_COALESCED",
    "NO_VNET_HDR",
    "OFFLOAD_DROP_REASONS",
    "VNET_HDR",
    "VNET_HDR_LEN",
    "Frame",
    "OffloadResult",
    "OffloadTranslator",
    "UdpCoalescer",
    "finish_checksum",
    "frame_bytes",
    "segment",
]
