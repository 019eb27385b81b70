"""RFC 7915 §4.2: ICMPv4 -> ICMPv6 (informational messages and the error mapping)."""

import pytest
from clat_translator.xlat import drops
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest
from xlat_helpers import ICMP, clat, only, parse6, refused, v4


def test_echo_request() -> None:
    out = parse6(only(clat().translate(v4(ICMP(type=8, id=0x1234, seq=7) / b"hello"))))
    req = out[ICMPv6EchoRequest]
    assert (req.type, req.code, req.id, req.seq, req.data) == (128, 0, 0x1234, 7, b"hello")
    assert out.nh == 58


def test_echo_reply() -> None:
    out = parse6(only(clat().translate(v4(ICMP(type=0, id=1, seq=2) / b"pong"))))
    rep = out[ICMPv6EchoReply]
    assert (rep.type, rep.id, rep.seq, rep.data) == (129, 1, 2, b"pong")


def test_bad_icmp_checksum_dropped() -> None:
    refused(clat().translate(v4(ICMP(type=8, chksum=0xDEAD))), drops.BAD_CHECKSUM)


@pytest.mark.parametrize(
    "icmp_type",
    [
        9,  # router advertisement
        10,  # router solicitation
        13,  # timestamp
        14,  # timestamp reply
        15,  # information request
        16,  # information reply
        17,  # address mask request
        18,  # address mask reply
        4,  # source quench
        5,  # redirect
        6,  # alternative host address
        42,  # extended echo (unknown here)
    ],
)
def test_single_hop_and_obsolete_messages_silently_dropped(icmp_type: int) -> None:
    refused(clat().translate(v4(ICMP(type=icmp_type) / (b"\0" * 28))), drops.ICMP_UNTRANSLATABLE)


def test_fragmented_icmp_first_fragment_dropped() -> None:
    packet = v4(ICMP(type=8) / (b"e" * 64), flags="MF")
    refused(clat().translate(packet), drops.FRAGMENTED_ICMP)
