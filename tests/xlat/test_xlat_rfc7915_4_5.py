"""RFC 7915 §4.5: transport-layer headers, IPv4 -> IPv6 (checksums, UDP zero checksum)."""

import pytest
from clat_translator.xlat import drops
from scapy.layers.inet import IP, fragment
from scapy.layers.inet6 import IPv6ExtHdrFragment, defragment6
from xlat_helpers import CLAT_V4, SERVER_V4, TCP, UDP, IPv6, clat, only, parse6, refused, v4


def test_tcp_checksum_updated() -> None:
    packet = v4(TCP(sport=40000, dport=443, flags="PA", seq=1, ack=2) / (b"q" * 1000), flags="DF")
    out = parse6(only(clat().translate(packet)))
    assert (out[TCP].sport, out[TCP].dport, out[TCP].seq, out[TCP].ack) == (40000, 443, 1, 2)
    assert bytes(out[TCP].payload) == b"q" * 1000


def test_udp_checksum_updated() -> None:
    out = parse6(only(clat().translate(v4(UDP(sport=5353, dport=53) / b"query"))))
    assert (out[UDP].sport, out[UDP].dport, out[UDP].len) == (5353, 53, 13)


def test_checksum_is_updated_incrementally_not_recomputed() -> None:
    # RFC 1624: an update carries a wrong checksum through as wrong (the receiver drops it);
    # a recomputation would launder it.
    packet = bytearray(v4(TCP() / b"payload"))
    packet[-1] ^= 0x01  # corrupt the payload, not the checksum
    out = only(clat().translate(bytes(packet)))
    with pytest.raises(AssertionError, match="bad checksum"):
        parse6(out)


def test_udp_zero_checksum_dropped_by_default() -> None:
    refused(clat().translate(v4(UDP(chksum=0) / b"x")), drops.UDP_CHECKSUM_ZERO)


def test_udp_zero_checksum_amended() -> None:
    out = parse6(only(clat(amend_udp_checksum_zero=True).translate(v4(UDP(chksum=0) / b"x"))))
    assert out[UDP].chksum != 0  # and parse6 verified it


def test_fragmented_udp_zero_checksum_always_dropped() -> None:
    packet = v4(UDP(chksum=0) / (b"x" * 64), flags="MF")
    t = clat(amend_udp_checksum_zero=True)
    refused(t.translate(packet), drops.FRAGMENTED_UDP_CHECKSUM_ZERO)


def test_first_fragment_checksum_updated_for_the_whole_datagram() -> None:
    whole = IP(src=CLAT_V4, dst=SERVER_V4, id=42) / UDP(sport=9, dport=9) / (b"f" * 3000)
    pieces = fragment(whole, fragsize=1000)
    t = clat()
    outs = [only(t.translate(bytes(p))) for p in pieces]
    joined = parse6(bytes(defragment6([IPv6(o) for o in outs])))
    assert bytes(joined[UDP].payload) == b"f" * 3000
    assert all(IPv6ExtHdrFragment in IPv6(o) for o in outs)


def test_truncated_tcp_header_dropped() -> None:
    refused(clat().translate(v4(b"\0" * 10, proto=6)), drops.TRUNCATED)


def test_tiny_first_fragment_dropped() -> None:
    # RFC 1858: a first fragment too short to hold the TCP checksum.
    refused(clat().translate(v4(b"\0" * 8, proto=6, flags="MF")), drops.BAD_FRAGMENT)
