"""RFC 7915 §4.1: translating the IPv4 header into an IPv6 header (and §4.4 errors we send)."""

import pytest
from clat_translator.xlat import drops
from scapy.layers.inet import IPOption_LSRR, IPOption_RR, IPOption_Timestamp
from scapy.layers.inet6 import IPv6ExtHdrFragment, defragment6
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    SERVER_V4,
    SERVER_V6,
    TCP,
    UDP,
    IPv6,
    clat,
    only,
    parse4,
    parse6,
    refused,
    v4,
)


def test_header_fields() -> None:
    out = parse6(only(clat().translate(v4(TCP(sport=4000, dport=80) / b"abc", tos=0xB8, ttl=64))))
    assert out.version == 6
    assert out.tc == 0xB8  # Traffic Class copied from TOS
    assert out.fl == 0  # Flow Label zero
    assert out.nh == 6
    assert out.hlim == 63  # a router hop
    assert (out.src, out.dst) == (CLAT_V6, SERVER_V6)
    assert out.plen == 20 + 3
    assert bytes(out[TCP].payload) == b"abc"


def test_reset_traffic_class() -> None:
    out = parse6(only(clat(reset_traffic_class=True).translate(v4(UDP(), tos=0xB8))))
    assert out.tc == 0


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_expiry_sends_time_exceeded_from_local_ipv4(ttl: int) -> None:
    packet = v4(UDP(sport=33434, dport=33435) / b"trace", ttl=ttl)
    back = refused(clat().translate(packet), drops.TTL_EXPIRED)
    err = parse4(back[0])
    assert (err.src, err.dst) == ("192.0.0.2", CLAT_V4)
    assert (err[ICMP].type, err[ICMP].code) == (11, 0)
    assert bytes(err[ICMP].payload) == packet  # the whole (short) packet is quoted


def test_no_time_exceeded_about_an_icmp_error() -> None:
    error = ICMP(type=3, code=3) / IP(src=SERVER_V4, dst=CLAT_V4) / UDP()
    assert refused(clat().translate(v4(error, ttl=1)), drops.TTL_EXPIRED) == []


def test_no_time_exceeded_without_local_ipv4() -> None:
    assert refused(clat(local_ipv4=None).translate(v4(UDP(), ttl=1)), drops.TTL_EXPIRED) == []


def test_options_are_ignored() -> None:
    opts = [IPOption_RR(routers=["0.0.0.0"]), IPOption_Timestamp(flg=0, timestamp=0)]
    packet = v4(UDP(sport=1, dport=2) / b"data", options=opts)
    out = parse6(only(clat().translate(packet)))
    assert out.plen == 8 + 4
    assert bytes(out[UDP].payload) == b"data"


def test_unexpired_source_route_is_refused() -> None:
    packet = v4(UDP(), options=[IPOption_LSRR(routers=["198.51.100.7", "198.51.100.8"], pointer=4)])
    back = refused(clat().translate(packet), drops.SOURCE_ROUTE)
    err = parse4(back[0])
    assert (err[ICMP].type, err[ICMP].code) == (3, 5)  # Source Route Failed


def test_expired_source_route_is_ignored() -> None:
    # An expired route: the destination field already holds the final hop.
    packet = v4(UDP(), options=[IPOption_LSRR(routers=[SERVER_V4], pointer=8)])
    parse6(only(clat().translate(packet)))


def test_ipv4_fragment_gets_a_fragment_header() -> None:
    packet = v4(UDP(sport=1, dport=2, chksum=0x1234) / (b"x" * 32), id=0xBEEF, flags="MF")
    out = parse6(only(clat().translate(packet)))
    frag = out[IPv6ExtHdrFragment]
    assert (frag.id, frag.offset, frag.m, frag.nh) == (0xBEEF, 0, 1, 17)
    assert out.plen == 8 + 40


def test_non_first_fragment_payload_is_unchanged() -> None:
    data = bytes(range(48))
    packet = v4(data, proto=17, id=7, frag=100)
    out = parse6(only(clat().translate(packet)))
    frag = out[IPv6ExtHdrFragment]
    assert (frag.id, frag.offset, frag.m, frag.nh) == (7, 100, 0, 17)
    assert bytes(frag.payload) == data


def test_small_df_clear_packet_has_no_atomic_fragment_header() -> None:
    # RFC 8021 / RFC 7915 §4.1: no Fragment Header on an unfragmented packet that fits.
    out = parse6(only(clat().translate(v4(UDP() / (b"y" * 1000), flags=0))))
    assert IPv6ExtHdrFragment not in out
    assert out.nh == 17


def test_df_clear_packet_is_fragmented_to_lowest_ipv6_mtu() -> None:
    packet = v4(TCP(sport=1, dport=2) / (b"z" * 1460), flags=0, id=0x1234)
    r = clat().translate(packet)
    assert r.drop is None and len(r.out) == 2
    frags = [IPv6(p) for p in r.out]
    assert all(len(p) <= 1280 for p in r.out)
    assert {f[IPv6ExtHdrFragment].id for f in frags} == {0x1234}
    whole = parse6(bytes(defragment6(frags)))
    assert bytes(whole[TCP].payload) == b"z" * 1460
    assert whole.src == CLAT_V6


def test_lowest_ipv6_mtu_setting() -> None:
    r = clat(lowest_ipv6_mtu=1400).translate(v4(UDP() / (b"z" * 2000), flags=0))
    assert max(len(p) for p in r.out) == 1400 - (1400 - 48) % 8
    parse6(bytes(defragment6([IPv6(p) for p in r.out])))


def test_df_set_packet_up_to_ipv6_mtu_is_not_fragmented() -> None:
    out = parse6(only(clat().translate(v4(TCP() / (b"d" * 1400), flags="DF"))))
    assert len(bytes(out)) == 1460
    assert IPv6ExtHdrFragment not in out


def test_df_set_packet_too_big_gets_fragmentation_needed() -> None:
    packet = v4(TCP() / (b"d" * 1500), flags="DF")
    back = refused(clat(ipv6_mtu=1500).translate(packet), drops.FRAGMENTATION_NEEDED)
    err = parse4(back[0])
    assert (err[ICMP].type, err[ICMP].code, err[ICMP].nexthopmtu) == (3, 4, 1480)
    assert err.src == "192.0.0.2" and err.dst == CLAT_V4
    assert len(back[0]) <= 576


def test_unknown_protocol_passes_through() -> None:
    data = bytes(range(100))
    out = parse6(only(clat().translate(v4(data, proto=253))))
    assert out.nh == 253
    assert bytes(out.payload) == data


def test_bad_header_checksum_is_dropped() -> None:
    packet = bytearray(v4(UDP()))
    packet[10] ^= 0xFF
    refused(clat().translate(bytes(packet)), drops.BAD_CHECKSUM)


def test_link_padding_is_trimmed() -> None:
    packet = v4(UDP(sport=1, dport=2) / b"ab")
    out = parse6(only(clat().translate(packet + b"\0" * 16)))
    assert out.plen == 10


def test_echo_request_to_local_ipv4_is_answered() -> None:
    r = clat().translate(v4(ICMP(type=8, id=9, seq=3) / b"ping", dst="192.0.0.2"))
    assert r.drop is None and r.out == []
    reply = parse4(r.back[0])
    assert (reply.src, reply.dst) == ("192.0.0.2", CLAT_V4)
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 9, 3)
    assert bytes(reply[ICMP].payload) == b"ping"


def test_other_traffic_to_local_ipv4_is_dropped() -> None:
    refused(clat().translate(v4(UDP(), dst="192.0.0.2")), drops.TO_TRANSLATOR)


@pytest.mark.parametrize("proto", [1, 6, 17])
@pytest.mark.parametrize("size", [1, 4, 7])
def test_tail_fragment_shorter_than_a_transport_header_is_translated(proto: int, size: int) -> None:
    # RFC 7915 §4.1: a non-first fragment carries no transport header to look at.
    data = bytes(range(size))
    out = parse6(only(clat().translate(v4(data, proto=proto, id=4, frag=9, flags=0))))
    frag = out[IPv6ExtHdrFragment]
    assert (frag.offset, frag.m, frag.id, frag.nh) == (9, 0, 4, 58 if proto == 1 else proto)
    assert bytes(frag.payload) == data
