"""RFC 7915 §5.2: ICMPv6 -> ICMPv4 (informational messages and the error mapping)."""

import pytest
from clat_translator.xlat import drops
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLDone,
    ICMPv6MLQuery,
    ICMPv6MLReport,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
)
from scapy.packet import Packet
from xlat_helpers import ICMP, clat, only, parse4, refused, v6


def test_echo_request() -> None:
    out = parse4(only(clat().translate(v6(ICMPv6EchoRequest(id=0x4321, seq=9, data=b"hello")))))
    icmp = out[ICMP]
    assert (icmp.type, icmp.code, icmp.id, icmp.seq) == (8, 0, 0x4321, 9)
    assert bytes(icmp.payload) == b"hello"
    assert out.proto == 1


def test_echo_reply() -> None:
    out = parse4(only(clat().translate(v6(ICMPv6EchoReply(id=3, seq=4, data=b"pong")))))
    assert (out[ICMP].type, out[ICMP].id, out[ICMP].seq) == (0, 3, 4)


def test_bad_icmpv6_checksum_dropped() -> None:
    refused(clat().translate(v6(ICMPv6EchoRequest(cksum=0xBEEF))), drops.BAD_CHECKSUM)


@pytest.mark.parametrize(
    "message",
    [
        ICMPv6MLQuery(),
        ICMPv6MLReport(),
        ICMPv6MLDone(),
        ICMPv6ND_RS(),
        ICMPv6ND_RA(),
        ICMPv6ND_NS(tgt="fe80::1"),
        ICMPv6ND_NA(tgt="fe80::1"),
        ICMPv6ND_Redirect(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_single_hop_messages_silently_dropped(message: Packet) -> None:
    refused(clat().translate(v6(message, hlim=64)), drops.ICMP_UNTRANSLATABLE)
