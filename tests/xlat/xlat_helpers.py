"""Helpers for the packet-core tests: translators, and checks made with scapy only.

Packets are built with scapy and the results are dissected and verified with scapy's own
functions (in4_chksum, in6_chksum, checksum): never against bytes made by the code under test.
"""

from __future__ import annotations

from typing import Any

from clat_translator.xlat import Translator, XlatConfig
from clat_translator.xlat.context import TranslateResult
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.packet import Packet, Raw
from scapy.utils import checksum

CLAT_V4 = "192.0.0.1"
CLAT_V6 = "fd00:c1a7::1"
LOCAL_V6 = "fd00:c1a7::2"
SERVER_V4 = "203.0.113.10"
SERVER_V6 = "64:ff9b::cb00:710a"  # SERVER_V4 in the well-known prefix
ROUTER_V4 = "198.51.100.1"
ROUTER_V6 = "64:ff9b::c633:6401"  # ROUTER_V4 in the well-known prefix
OUTSIDE_V6 = "2001:db8:ffff::1"  # an IPv6 router outside pool6 and the EAM table


def clat(**overrides: Any) -> Translator:
    """A Translator configured as the sidecar does: pool6 + one EAM for the CLAT address."""
    settings: dict[str, Any] = {
        "pool6": "64:ff9b::/96",
        "eamt": [(f"{CLAT_V4}/32", f"{CLAT_V6}/128")],
        "local_ipv6": LOCAL_V6,
    }
    settings.update(overrides)
    return Translator(XlatConfig(**settings))


def v4(payload: Packet, src: str = CLAT_V4, dst: str = SERVER_V4, **ip: Any) -> bytes:
    """Raw bytes of an IPv4 packet, checksums filled in by scapy."""
    return bytes(IP(src=src, dst=dst, **ip) / payload)


def v6(payload: Packet, src: str = SERVER_V6, dst: str = CLAT_V6, **ip: Any) -> bytes:
    """Raw bytes of an IPv6 packet, checksums filled in by scapy."""
    return bytes(IPv6(src=src, dst=dst, **ip) / payload)


def only(result: TranslateResult) -> bytes:
    """The one translated packet of a result that must not drop."""
    assert result.drop is None, result.drop
    assert result.back == []
    assert len(result.out) == 1, result.out
    return result.out[0]


def refused(result: TranslateResult, reason: str) -> list[bytes]:
    """Assert a drop with `reason` and nothing translated; returns the packets sent back."""
    assert result.drop == reason, result.drop
    assert result.out == []
    return result.back


def _upper6(pkt: IPv6) -> tuple[int, bytes] | None:
    """(next header, bytes) of the upper layer of a dissected IPv6 packet, if unfragmented."""
    layer: Packet = pkt
    nh = pkt.nh
    layer = pkt.payload
    while nh in (0, 43, 44, 60):
        if nh == 44 and (layer.offset or layer.m):
            return None
        nh = layer.nh
        layer = layer.payload
    return nh, bytes(layer)


def parse6(data: bytes) -> IPv6:
    """Dissect an IPv6 packet and verify lengths and the upper-layer checksum with scapy."""
    pkt = IPv6(data)
    assert pkt.version == 6
    assert pkt.plen == len(data) - 40, "payload length"
    upper = _upper6(pkt)
    if upper is not None and upper[0] in (6, 17, 58):
        nh, body = upper
        # A valid checksum makes the sum over pseudo-header + data come out as zero.
        assert in6_chksum(nh, pkt, body) == 0, f"bad checksum for next header {nh}"
    return pkt


def parse4(data: bytes) -> IP:
    """Dissect an IPv4 packet and verify lengths and all checksums with scapy."""
    pkt = IP(data)
    assert pkt.version == 4
    assert pkt.len == len(data), "total length"
    assert checksum(data[: pkt.ihl * 4]) == 0, "bad IPv4 header checksum"
    if pkt.frag == 0 and not pkt.flags.MF:
        body = data[pkt.ihl * 4 :]
        if pkt.proto == 1:
            assert checksum(body) == 0, "bad ICMP checksum"
        elif pkt.proto == 6 or (pkt.proto == 17 and pkt[UDP].chksum != 0):
            assert in4_chksum(pkt.proto, pkt, body) == 0, f"bad checksum for protocol {pkt.proto}"
    return pkt


__all__ = [
    "ICMP",
    "IP",
    "TCP",
    "UDP",
    "IPv6",
    "Raw",
    "clat",
    "icmp4_message",
    "icmp6_message",
    "only",
    "parse4",
    "parse6",
    "refused",
    "v4",
    "v6",
]


def icmp6_message(pkt: IPv6) -> bytes:
    """The ICMPv6 message (header + body) of a dissected, unfragmented IPv6 packet."""
    assert pkt.nh == 58
    return bytes(pkt.payload)


def icmp4_message(pkt: IP) -> bytes:
    """The ICMPv4 message (header + body) of a dissected IPv4 packet."""
    assert pkt.proto == 1
    return bytes(pkt.payload)
