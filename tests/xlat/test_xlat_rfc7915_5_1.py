"""RFC 7915 §5.1: translating the IPv6 header into an IPv4 header (and §5.4 errors we send)."""

import pytest
from clat_translator.xlat import drops
from scapy.layers.inet import IP, defragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    LOCAL_V6,
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
    v6,
)


def test_header_fields() -> None:
    out = parse4(only(clat().translate(v6(TCP(sport=80, dport=4000) / b"abc", tc=0xB8, hlim=64))))
    assert (out.version, out.ihl) == (4, 5)
    assert out.tos == 0xB8
    assert out.ttl == 63
    assert out.proto == 6
    assert (out.src, out.dst) == (SERVER_V4, CLAT_V4)
    assert out.len == 20 + 20 + 3
    assert out.frag == 0 and not out.flags.MF


def test_small_packet_df_clear_large_packet_df_set() -> None:
    # RFC 7915 §5.1: DF set only when the IPv4 packet is bigger than 1260 bytes.
    t = clat()
    small = parse4(only(t.translate(v6(UDP() / (b"s" * (1260 - 28))))))
    big = parse4(only(t.translate(v6(UDP() / (b"b" * (1261 - 28))))))
    assert len(bytes(small)) == 1260 and not small.flags.DF
    assert len(bytes(big)) == 1261 and big.flags.DF and big.id == 0


def test_reset_tos() -> None:
    out = parse4(only(clat(reset_tos=True, new_tos=0x20).translate(v6(UDP(), tc=0xB8))))
    assert out.tos == 0x20


@pytest.mark.parametrize("hlim", [0, 1])
def test_hop_limit_expiry_sends_time_exceeded_from_local_ipv6(hlim: int) -> None:
    packet = v6(UDP() / b"trace", hlim=hlim)
    back = refused(clat().translate(packet), drops.TTL_EXPIRED)
    err = parse6(back[0])
    assert (err.src, err.dst) == (LOCAL_V6, SERVER_V6)
    assert (err.payload.type, err.payload.code) == (3, 0)
    assert bytes(err.payload.payload) == packet


def test_no_time_exceeded_without_local_ipv6() -> None:
    assert refused(clat(local_ipv6=None).translate(v6(UDP(), hlim=1)), drops.TTL_EXPIRED) == []


def test_extension_headers_are_skipped() -> None:
    packet = v6(
        IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(segleft=0, addresses=[])
        / UDP(sport=1, dport=2)
        / b"ext"
    )
    out = parse4(only(clat().translate(packet)))
    assert out.proto == 17
    assert out.len == 20 + 8 + 3
    assert bytes(out[UDP].payload) == b"ext"


def test_routing_header_with_segments_left_is_refused() -> None:
    packet = v6(IPv6ExtHdrRouting(segleft=1, addresses=["2001:db8::5"]) / UDP())
    back = refused(clat().translate(packet), drops.SEGMENTS_LEFT)
    err = parse6(back[0])
    assert (err.payload.type, err.payload.code, err.payload.ptr) == (4, 0, 43)


def test_fragment_header_to_ipv4_fragment() -> None:
    packet = v6(
        IPv6ExtHdrFragment(id=0x12345678, offset=0, m=1) / UDP(sport=1, dport=2) / (b"x" * 40)
    )
    out = parse4(only(clat().translate(packet)))
    assert out.id == 0x5678  # low-order 16 bits
    assert out.flags.MF and not out.flags.DF
    assert out.frag == 0 and out.proto == 17
    assert out.len == 20 + 48


def test_non_first_fragment_payload_unchanged() -> None:
    data = bytes(range(64))
    packet = v6(IPv6ExtHdrFragment(id=9, offset=50, m=0, nh=6) / data)
    out = parse4(only(clat().translate(packet)))
    assert (out.id, out.frag, out.flags.MF, out.proto) == (9, 50, 0, 6)
    assert bytes(out.payload) == data


def test_atomic_fragment_becomes_unfragmented() -> None:
    packet = v6(IPv6ExtHdrFragment(id=77, offset=0, m=0) / UDP(sport=1, dport=2) / b"a")
    out = parse4(only(clat().translate(packet)))
    assert out.frag == 0 and not out.flags.MF and not out.flags.DF
    assert out.id == 77


def test_too_big_for_ipv4_gets_packet_too_big() -> None:
    packet = v6(TCP() / (b"p" * 1400))
    back = refused(clat(ipv4_mtu=1400).translate(packet), drops.PACKET_TOO_BIG)
    err = parse6(back[0])
    assert (err.payload.type, err.payload.mtu) == (2, 1420)
    assert len(back[0]) <= 1280


def test_small_packet_over_small_ipv4_mtu_is_fragmented() -> None:
    # DF clear (<= 1260 bytes): IPv4 routers could fragment it, so the translator does.
    r = clat(ipv4_mtu=576).translate(v6(UDP(sport=1, dport=2) / (b"f" * 1000)))
    assert r.drop is None and len(r.out) == 2
    whole = defragment([IP(p) for p in r.out])[0]
    assert bytes(whole[UDP].payload) == b"f" * 1000
    parse4(bytes(whole))


def test_unknown_next_header_passes_through() -> None:
    data = bytes(range(30))
    out = parse4(only(clat().translate(v6(data, nh=253))))
    assert out.proto == 253
    assert bytes(out.payload) == data


def test_echo_request_to_local_ipv6_is_answered() -> None:
    r = clat().translate(v6(ICMPv6EchoRequest(id=4, seq=2, data=b"hi"), dst=LOCAL_V6))
    assert r.drop is None and r.out == []
    reply = parse6(r.back[0])
    assert (reply.src, reply.dst) == (LOCAL_V6, SERVER_V6)
    assert (reply.payload.type, reply.payload.id, reply.payload.data) == (129, 4, b"hi")


def test_clat_address_is_the_eam_entry() -> None:
    out = parse4(only(clat().translate(v6(UDP(), dst=CLAT_V6))))
    assert out.dst == CLAT_V4
    assert isinstance(IPv6(v6(UDP())), IPv6)


# -- §5.1 DF: a fixed 1260 bytes, whatever lowest_ipv6_mtu says ----------------------------------


@pytest.mark.parametrize("lowest", [1280, 1500])
def test_df_threshold_is_1260_bytes_whatever_the_lowest_ipv6_mtu(lowest: int) -> None:
    t = clat(lowest_ipv6_mtu=lowest)
    big = parse4(only(t.translate(v6(UDP() / (b"d" * (1281 - 48))))))
    assert len(bytes(big)) == 1261 and big.flags.DF and big.id == 0
    small = parse4(only(t.translate(v6(UDP() / (b"d" * (1280 - 48))))))
    assert len(bytes(small)) == 1260 and not small.flags.DF


def test_df_packet_too_big_for_the_ipv4_next_hop_gets_packet_too_big_not_fragments() -> None:
    # 1421-byte IPv6 -> 1401-byte IPv4 with DF (§5.1), over a 1400-byte next hop: PTB 1420.
    t = clat(lowest_ipv6_mtu=1500, ipv4_mtu=1400)
    back = refused(t.translate(v6(UDP() / (b"p" * (1421 - 48)))), drops.PACKET_TOO_BIG)
    err = parse6(back[0])
    assert (err.payload.type, err.payload.mtu) == (2, 1420)


# -- §5.1: extension headers before a Fragment Header; §5.1.1: tail fragments -------------------

BEFORE_FRAGMENT = [
    IPv6ExtHdrHopByHop(),
    IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 4)]),
    IPv6ExtHdrRouting(segleft=0),
    IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0),
]


@pytest.mark.parametrize("headers", BEFORE_FRAGMENT, ids=["hbh", "dest", "routing", "all"])
@pytest.mark.parametrize("offset", [0, 100])
def test_extension_headers_before_a_fragment_header_are_skipped(
    headers: object, offset: int
) -> None:
    if offset:
        payload = IPv6ExtHdrFragment(id=5, offset=offset, m=1, nh=17) / (b"f" * 40)
    else:
        payload = IPv6ExtHdrFragment(id=5, m=1) / UDP(sport=1, dport=2) / (b"f" * 32)
    out = parse4(only(clat().translate(v6(headers / payload))))
    assert (out.id, out.frag, out.flags.MF, out.proto, len(out.payload)) == (5, offset, 1, 17, 40)


@pytest.mark.parametrize("nh", [6, 17, 58])
@pytest.mark.parametrize("size", [1, 4, 7])
def test_tail_fragment_shorter_than_a_transport_header_is_translated(nh: int, size: int) -> None:
    data = bytes(range(size))
    out = parse4(only(clat().translate(v6(IPv6ExtHdrFragment(id=3, offset=9, m=0, nh=nh) / data))))
    assert (out.frag, out.flags.MF, out.proto) == (9, 0, 1 if nh == 58 else nh)
    assert bytes(out.payload) == data
