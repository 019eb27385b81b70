"""RFC 7915 §4.3: the IPv4 packet inside an ICMPv4 error, translated to IPv6."""

from clat_translator.xlat import drops
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6ExtHdrFragment
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    ROUTER_V4,
    SERVER_V4,
    SERVER_V6,
    TCP,
    UDP,
    IPv6,
    clat,
    icmp6_message,
    only,
    parse6,
    refused,
    v4,
)


def _translate_error(quoted: bytes, icmp_type: int = 3, code: int = 3) -> bytes:
    packet = v4(ICMP(type=icmp_type, code=code) / quoted, src=ROUTER_V4, dst=SERVER_V4)
    return icmp6_message(parse6(only(clat().translate(packet))))[8:]


def test_quoted_tcp_with_checksum() -> None:
    quoted = IP(src=SERVER_V4, dst=CLAT_V4, ttl=3) / TCP(sport=80, dport=999, seq=77) / b"data"
    inner = _translate_error(bytes(quoted))
    expected = IPv6(src=SERVER_V6, dst=CLAT_V6, hlim=3) / TCP(sport=80, dport=999, seq=77) / b"data"
    assert inner == bytes(expected)


def test_truncated_quote_keeps_the_original_lengths() -> None:
    # RFC 792 quotes the IP header + 8 bytes: the TCP checksum is not in it.
    full = IP(src=SERVER_V4, dst=CLAT_V4) / TCP(sport=80, dport=999) / (b"x" * 972)
    inner = IPv6(_translate_error(bytes(full)[:28]))
    assert inner.plen == 20 + 972  # from the quoted Total Length, not from the quote
    assert (inner.src, inner.dst, inner.nh) == (SERVER_V6, CLAT_V6, 6)
    assert bytes(inner.payload)[:8] == bytes(full[TCP])[:8]


def test_truncated_quote_with_checksum_updates_it() -> None:
    full = IP(src=SERVER_V4, dst=CLAT_V4) / UDP(sport=53, dport=5353) / (b"y" * 500)
    inner = _translate_error(bytes(full)[:100])
    expected = IPv6(src=SERVER_V6, dst=CLAT_V6) / UDP(sport=53, dport=5353) / (b"y" * 500)
    assert inner == bytes(expected)[:120]


def test_quoted_echo_request() -> None:
    quoted = IP(src=SERVER_V4, dst=CLAT_V4) / ICMP(type=8, id=5, seq=6) / b"ping"
    inner = IPv6(_translate_error(bytes(quoted), 11, 0))
    expected = IPv6(src=SERVER_V6, dst=CLAT_V6) / ICMPv6EchoRequest(id=5, seq=6, data=b"ping")
    assert bytes(inner) == bytes(expected)


def test_quoted_fragment_gets_a_fragment_header() -> None:
    quoted = (
        IP(src=SERVER_V4, dst=CLAT_V4, id=0x55, flags="MF") / UDP(sport=1, dport=2) / (b"f" * 32)
    )
    inner = IPv6(_translate_error(bytes(quoted)))
    frag = inner[IPv6ExtHdrFragment]
    assert (frag.id, frag.m, frag.offset, frag.nh) == (0x55, 1, 0, 17)
    assert inner.plen == 8 + 40


def test_error_inside_an_error_is_dropped() -> None:
    nested = (
        IP(src=SERVER_V4, dst=CLAT_V4)
        / ICMP(type=3, code=1)
        / IP(src=CLAT_V4, dst=SERVER_V4)
        / UDP()
    )
    packet = v4(ICMP(type=11, code=0) / bytes(nested), src=ROUTER_V4, dst=SERVER_V4)
    refused(clat().translate(packet), drops.ICMP_NESTED_ERROR)


def test_garbage_quote_is_dropped() -> None:
    packet = v4(ICMP(type=3, code=1) / (b"\x99" * 40), src=ROUTER_V4, dst=SERVER_V4)
    refused(clat().translate(packet), drops.BAD_INNER_PACKET)


def test_quote_with_untranslatable_address_is_dropped() -> None:
    quoted = IP(src="127.0.0.1", dst=CLAT_V4) / UDP()
    packet = v4(ICMP(type=3, code=1) / bytes(quoted), src=ROUTER_V4, dst=SERVER_V4)
    refused(clat().translate(packet), drops.BAD_INNER_PACKET)


def test_quote_keeps_traffic_class_and_ttl() -> None:
    quoted = IP(src=SERVER_V4, dst=CLAT_V4, tos=0x10, ttl=1) / UDP(sport=1, dport=2)
    inner = IPv6(_translate_error(bytes(quoted)))
    assert (inner.tc, inner.hlim) == (0x10, 1)
