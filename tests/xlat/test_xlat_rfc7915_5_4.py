"""RFC 7915 §5.4: ICMPv6 errors the translator sends when it drops an IPv6 packet."""

from clat_translator.xlat import drops
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPv6ExtHdrFragment
from xlat_helpers import (
    CLAT_V6,
    LOCAL_V6,
    SERVER_V6,
    UDP,
    IPv6,
    clat,
    icmp6_message,
    parse6,
    refused,
    v6,
)


def test_untranslatable_destination_gets_administratively_prohibited() -> None:
    packet = v6(UDP() / b"x", dst="2001:db8::dead")
    back = refused(clat().translate(packet), drops.UNTRANSLATABLE_DESTINATION)
    err = parse6(back[0])
    assert (err.src, err.dst, err.hlim) == (LOCAL_V6, SERVER_V6, 64)
    assert (err.payload.type, err.payload.code) == (1, 1)
    assert icmp6_message(err)[8:] == packet


def test_quote_is_cut_to_1280_bytes() -> None:
    packet = v6(UDP() / (b"x" * 1400), hlim=1)
    back = refused(clat().translate(packet), drops.TTL_EXPIRED)
    assert len(back[0]) == 1280
    assert icmp6_message(parse6(back[0]))[8:] == packet[:1232]


def test_no_error_about_an_icmpv6_error() -> None:
    error = ICMPv6DestUnreach() / IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP()
    assert refused(clat().translate(v6(error, hlim=1)), drops.TTL_EXPIRED) == []


def test_no_error_about_a_non_first_fragment() -> None:
    packet = v6(IPv6ExtHdrFragment(offset=10, nh=17) / (b"\0" * 64), hlim=1)
    assert refused(clat().translate(packet), drops.TTL_EXPIRED) == []


def test_no_error_to_a_multicast_or_unspecified_source() -> None:
    for source in ("ff02::1", "::"):
        packet = v6(UDP(), src=source)
        assert refused(clat().translate(packet), drops.UNTRANSLATABLE_SOURCE) == []


def test_echo_request_error_is_sent() -> None:
    back = refused(clat().translate(v6(ICMPv6EchoRequest(), hlim=1)), drops.TTL_EXPIRED)
    assert parse6(back[0]).payload.type == 3
