"""RFC 7915 §5.5: transport-layer headers, IPv6 -> IPv4."""

from xlat_helpers import TCP, UDP, clat, only, parse4, v6


def test_tcp_checksum_updated() -> None:
    packet = v6(TCP(sport=443, dport=40000, flags="A", seq=5) / (b"r" * 1300))
    out = parse4(only(clat().translate(packet)))
    assert (out[TCP].sport, out[TCP].dport, out[TCP].seq) == (443, 40000, 5)
    assert bytes(out[TCP].payload) == b"r" * 1300


def test_udp_checksum_updated() -> None:
    out = parse4(only(clat().translate(v6(UDP(sport=53, dport=5353) / b"answer"))))
    assert (out[UDP].sport, out[UDP].dport, out[UDP].len) == (53, 5353, 14)


def test_udp_zero_checksum_stays_zero() -> None:
    # IPv4 reads a zero UDP checksum as "none" (RFC 768): nothing is laundered.
    out = parse4(only(clat().translate(v6(UDP(chksum=0) / b"z"))))
    assert out[UDP].chksum == 0
