"""4->6->4 and 6->4->6 through a mirrored configuration give the original packet back.

SIIT is symmetric: the CLAT's configuration also translates its own output back (the PLAT
does the mirror image). Equal modulo what a router hop and RFC 7915 change: TTL / hop limit
(one per translation), and for IPv4 the Identification/DF of unfragmented packets (RFC 7915
§5.1 sets them anew) and so the header checksum; for IPv6 the flow label (§4.1: zero).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest
from scapy.packet import Packet
from xlat_helpers import CLAT_V4, CLAT_V6, ICMP, IP, TCP, UDP, IPv6, clat, parse4, parse6

ROUND = settings(max_examples=600, deadline=None, derandomize=True)

GLOBAL_V4 = (
    st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address).filter(lambda a: a.is_global)
)

transports4 = st.one_of(
    st.builds(
        lambda s, d, q, f: TCP(sport=s, dport=d, seq=q, flags=f),
        st.integers(1, 65535),
        st.integers(1, 65535),
        st.integers(0, 2**32 - 1),
        st.sampled_from(["S", "SA", "A", "PA", "F", "R"]),
    ),
    st.builds(lambda s, d: UDP(sport=s, dport=d), st.integers(1, 65535), st.integers(1, 65535)),
    st.builds(
        lambda t, i, q: ICMP(type=t, id=i, seq=q),
        st.sampled_from([0, 8]),
        st.integers(0, 65535),
        st.integers(0, 65535),
    ),
)


@ROUND
@given(
    dst=GLOBAL_V4,
    l4=transports4,
    payload=st.binary(max_size=1500),
    tos=st.integers(0, 255),
    ttl=st.integers(3, 255),
    df=st.booleans(),
)
def test_4to6to4(
    dst: ipaddress.IPv4Address, l4: Packet, payload: bytes, tos: int, ttl: int, df: bool
) -> None:
    original = (
        IP(src=CLAT_V4, dst=str(dst), tos=tos, ttl=ttl, flags="DF" if df else 0) / l4 / payload
    )
    raw = bytes(original)
    original = IP(raw)
    t = clat()
    there = t.translate(raw)
    if len(raw) + 20 > 1280 and not df:
        # DF clear and over lowest_ipv6_mtu: fragmented (RFC 7915 §4.1); covered elsewhere.
        assert len(there.out) >= 2
        return
    if len(raw) + 20 > 1500:
        assert there.drop == "fragmentation-needed"
        return
    (six,) = there.out
    parse6(six)
    (back,) = t.translate(six).out
    got = parse4(back)
    assert got.ttl == ttl - 2
    assert got.tos == tos
    assert (got.src, got.dst, got.proto, got.len) == (
        CLAT_V4,
        str(dst),
        original.proto,
        original.len,
    )
    assert bytes(got.payload) == bytes(original.payload)  # transport header, checksum, data


@ROUND
@given(
    dst=GLOBAL_V4,
    payload=st.binary(min_size=8, max_size=1200).map(lambda b: b[: len(b) // 8 * 8]),
    ident=st.integers(0, 65535),
    offset=st.integers(0, 1000),
    more=st.booleans(),
)
def test_4to6to4_fragments(
    dst: ipaddress.IPv4Address, payload: bytes, ident: int, offset: int, more: bool
) -> None:
    # A non-first fragment of anything: its identification, offset and MF survive exactly.
    original = (
        IP(
            src=CLAT_V4,
            dst=str(dst),
            id=ident,
            frag=offset + 1,
            flags="MF" if more else 0,
            proto=17,
            ttl=9,
        )
        / payload
    )
    t = clat()
    (six,) = t.translate(bytes(original)).out
    (back,) = t.translate(six).out
    got = parse4(back)
    assert (got.id, got.frag, got.flags.MF, got.ttl) == (ident, offset + 1, int(more), 7)
    assert bytes(got)[20:] == bytes(original)[20:]
    assert bytes(got)[12:20] == bytes(original)[12:20]


transports6 = st.one_of(
    st.builds(
        lambda s, d: TCP(sport=s, dport=d, flags="A"), st.integers(1, 65535), st.integers(1, 65535)
    ),
    st.builds(lambda s, d: UDP(sport=s, dport=d), st.integers(1, 65535), st.integers(1, 65535)),
    st.builds(
        lambda i, q: ICMPv6EchoRequest(id=i, seq=q), st.integers(0, 65535), st.integers(0, 65535)
    ),
    st.builds(
        lambda i, q: ICMPv6EchoReply(id=i, seq=q), st.integers(0, 65535), st.integers(0, 65535)
    ),
)


@ROUND
@given(
    src=GLOBAL_V4,
    l4=transports6,
    payload=st.binary(max_size=1400),
    tc=st.integers(0, 255),
    hlim=st.integers(3, 255),
)
def test_6to4to6(
    src: ipaddress.IPv4Address, l4: Packet, payload: bytes, tc: int, hlim: int
) -> None:
    source6 = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(src)))
    if isinstance(l4, (ICMPv6EchoRequest, ICMPv6EchoReply)):
        l4.data = payload
        original = IPv6(src=source6, dst=CLAT_V6, tc=tc, hlim=hlim) / l4
    else:
        original = IPv6(src=source6, dst=CLAT_V6, tc=tc, hlim=hlim) / l4 / payload
    t = clat()
    (four,) = t.translate(bytes(original)).out
    parse4(four)
    (back,) = t.translate(four).out
    got = parse6(back)
    assert got.hlim == hlim - 2
    assert bytes(got)[:7] == bytes(original)[:7]  # version, TC, flow label, length, next header
    assert bytes(got)[8:] == bytes(original)[8:]  # addresses, transport header and data
