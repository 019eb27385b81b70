"""The fast path (cached address pairs, plain TCP/UDP) gives the general path's exact bytes."""

import pytest
from clat_translator.xlat import Translator
from clat_translator.xlat.context import TranslateResult
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6ExtHdrFragment
from scapy.packet import Packet
from xlat_helpers import ICMP, TCP, UDP, clat, v4, v6

PACKETS = [
    v4(TCP(sport=1, dport=2) / (b"t" * 1360), flags="DF"),
    v4(TCP(sport=1, dport=2) / (b"t" * 1360), flags=0),
    v4(TCP(sport=1, dport=2) / (b"t" * 1500), flags="DF"),
    v4(TCP(sport=1, dport=2) / (b"t" * 1360), flags="evil"),  # reserved bit, DF clear: fragment
    v4(UDP(sport=3, dport=4) / (b"u" * 36)),
    v4(UDP(sport=3, dport=4, chksum=0) / b"u"),
    v4(UDP(sport=3, dport=4) / b"u", ttl=1),
    v4(UDP(sport=3, dport=4) / b"u", tos=0xFF),
    v4(ICMP() / b"ping"),
    v4(ICMP(type=0, id=3, seq=4) / (b"e" * 36)),
    v4(ICMP(type=8) / b"odd"),
    v4(ICMP(type=8, chksum=1) / b"bad!"),
    v4(ICMP(type=8, code=3) / b"code"),
    v4(ICMP(type=13) / (b"\0" * 12)),
    v4(TCP(), dst="192.0.0.2"),
    v4(TCP(), dst="10.0.0.1"),
    v6(TCP(sport=5, dport=6) / (b"t" * 1340)),
    v6(TCP(sport=5, dport=6) / (b"t" * 100)),
    v6(TCP(sport=5, dport=6) / (b"t" * 1600)),
    v6(UDP(sport=7, dport=8) / (b"u" * 16)),
    v6(ICMPv6EchoRequest(id=1, seq=2, data=b"e" * 16)),
    v6(ICMPv6EchoReply(id=1, seq=2, data=b"e" * 1300)),
    v6(ICMPv6EchoRequest(data=b"odd")),
    v6(ICMPv6EchoRequest(cksum=1, data=b"bad!")),
    v6(UDP(sport=7, dport=8, chksum=0) / (b"u" * 16)),
    v6(UDP(sport=7, dport=8) / b"u", hlim=1),
    v6(IPv6ExtHdrFragment(m=1) / UDP() / (b"u" * 40)),
    v6(UDP(), dst="64:ff9b::192.0.0.1"),
    v6(UDP(), src="2001:db8::1"),
    v6(UDP() / (b"u" * (1281 - 48))),  # RFC 7915 §5.1: DF above 1260 bytes, fixed
    v6(TCP() / (b"t" * (1421 - 60))),
    v4(UDP(sport=3, dport=4) / b"u", src="10.9.9.9"),  # foreign sources (clat_mode)
    v4(TCP(sport=3, dport=4), src="198.51.100.77"),
    v4(ICMP() / b"ping", src="10.9.9.9"),
    v6(UDP(), src="2001:db8:bad::1"),
]


def _same(a: TranslateResult, b: TranslateResult) -> bool:
    return (a.out, a.back, a.drop) == (b.out, b.back, b.drop)


def _pair(**config: object) -> tuple[Translator, Translator]:
    fast, general = clat(**config), clat(**config)
    general._fast_path = False
    fast._ctx._rng.seed(7)
    general._ctx._rng.seed(7)
    return fast, general


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"reset_traffic_class": True, "reset_tos": True, "new_tos": 4},
        {"ipv4_mtu": 576},
        {"lowest_ipv6_mtu": 1500, "ipv4_mtu": 1400},
        {"clat_mode": True},
        {
            "clat_mode": True,
            "eamt": [("192.0.0.1/32", "fd00:c1a7::1/128"), ("10.9.0.0/16", "2001:db8:9::/112")],
        },
    ],
)
def test_fast_path_bytes_equal_general_path(config: dict[str, object]) -> None:
    fast, general = _pair(**config)
    for _ in range(3):  # the first pass learns the address pairs, later passes use them
        for packet in PACKETS:
            assert _same(fast.translate(packet), general.translate(packet)), packet


def test_fast_path_is_taken() -> None:
    fast, _ = _pair()
    fast.translate(v4(TCP()))
    assert fast._cache46  # the pair was learnt
    fast.translate(v6(TCP()))
    assert fast._cache64


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    version=st.sampled_from([4, 6]),
    proto=st.sampled_from(["tcp", "udp", "echo", "reply"]),
    size=st.integers(0, 1600),
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    df=st.booleans(),
    zero_checksum=st.booleans(),
    corrupt=st.one_of(st.none(), st.integers(0, 2000)),
)
def test_fast_path_bytes_equal_general_path_for_generated_packets(
    version: int,
    proto: str,
    size: int,
    ttl: int,
    tos: int,
    df: bool,
    zero_checksum: bool,
    corrupt: int | None,
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    l4: Packet
    if proto == "tcp":
        l4 = TCP(sport=1, dport=2, chksum=0 if zero_checksum else None) / data
    elif proto == "udp":
        l4 = UDP(sport=3, dport=4, chksum=0 if zero_checksum else None) / data
    elif version == 4:
        l4 = ICMP(type=8 if proto == "echo" else 0) / data
    else:
        l4 = (ICMPv6EchoRequest if proto == "echo" else ICMPv6EchoReply)(data=data)
    if version == 4:
        packet = bytearray(v4(l4, ttl=ttl, tos=tos, flags="DF" if df else 0))
    else:
        packet = bytearray(v6(l4, hlim=ttl, tc=tos))
    if corrupt is not None:
        packet[corrupt % len(packet)] ^= 0x5A
    fast, general = _pair(amend_udp_checksum_zero=zero_checksum)
    for _ in range(2):
        assert _same(fast.translate(bytes(packet)), general.translate(bytes(packet)))
