"""RFC 7915 §5.3: the IPv6 packet inside an ICMPv6 error, translated to IPv4."""

from clat_translator.xlat import drops
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6TimeExceeded,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
)
from scapy.packet import Packet
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    ROUTER_V6,
    SERVER_V4,
    SERVER_V6,
    TCP,
    UDP,
    IPv6,
    clat,
    icmp4_message,
    only,
    parse4,
    refused,
    v6,
)


def _translate_error(quoted: Packet | bytes, error: Packet | None = None) -> bytes:
    packet = v6((error or ICMPv6DestUnreach(code=4)) / quoted, src=ROUTER_V6, dst=CLAT_V6)
    return icmp4_message(parse4(only(clat().translate(packet))))[8:]


def test_quoted_tcp_with_checksum() -> None:
    quoted = IPv6(src=CLAT_V6, dst=SERVER_V6, hlim=2) / TCP(sport=999, dport=80) / b"data"
    expected = (
        IP(src=CLAT_V4, dst=SERVER_V4, ttl=2, id=0, flags=0) / TCP(sport=999, dport=80) / b"data"
    )
    assert _translate_error(quoted) == bytes(expected)


def test_truncated_quote_keeps_the_original_lengths() -> None:
    full = IPv6(src=CLAT_V6, dst=SERVER_V6) / TCP(sport=999, dport=80) / (b"x" * 1300)
    inner = IP(_translate_error(bytes(full)[:48]))
    assert inner.len == 20 + 20 + 1300
    assert inner.flags.DF  # RFC 7915 §5.1: over 1260 bytes
    assert (inner.src, inner.dst, inner.proto) == (CLAT_V4, SERVER_V4, 6)


def test_quoted_echo_request() -> None:
    quoted = IPv6(src=CLAT_V6, dst=SERVER_V6) / ICMPv6EchoRequest(id=1, seq=2, data=b"ping")
    inner = _translate_error(quoted, ICMPv6TimeExceeded())
    expected = IP(src=CLAT_V4, dst=SERVER_V4, id=0, flags=0) / ICMP(type=8, id=1, seq=2) / b"ping"
    assert inner == bytes(expected)


def test_quoted_fragment_becomes_ipv4_fragment() -> None:
    quoted = (
        IPv6(src=CLAT_V6, dst=SERVER_V6)
        / IPv6ExtHdrFragment(id=0xABCDEF, m=1)
        / UDP()
        / (b"f" * 40)
    )
    inner = IP(_translate_error(quoted))
    assert (inner.id, inner.flags.MF, inner.frag, inner.proto, inner.len) == (0xCDEF, 1, 0, 17, 68)


def test_quoted_extension_headers_are_removed() -> None:
    quoted = IPv6(src=CLAT_V6, dst=SERVER_V6) / IPv6ExtHdrDestOpt() / UDP(sport=7, dport=8) / b"e"
    expected = IP(src=CLAT_V4, dst=SERVER_V4, id=0, flags=0) / UDP(sport=7, dport=8) / b"e"
    assert _translate_error(quoted) == bytes(expected)


def test_error_inside_an_error_is_dropped() -> None:
    nested = (
        IPv6(src=CLAT_V6, dst=SERVER_V6)
        / ICMPv6DestUnreach()
        / IPv6(src=SERVER_V6, dst=CLAT_V6)
        / UDP()
    )
    packet = v6(ICMPv6TimeExceeded() / nested, src=ROUTER_V6, dst=CLAT_V6)
    refused(clat().translate(packet), drops.ICMP_NESTED_ERROR)


def test_garbage_quote_is_dropped() -> None:
    packet = v6(ICMPv6DestUnreach() / (b"\x42" * 60), src=ROUTER_V6, dst=CLAT_V6)
    refused(clat().translate(packet), drops.BAD_INNER_PACKET)


def test_quote_keeps_traffic_class() -> None:
    quoted = IPv6(src=CLAT_V6, dst=SERVER_V6, tc=0x28) / UDP()
    assert IP(_translate_error(quoted)).tos == 0x28
