"""RFC 7915 §4.4: ICMPv4 errors the translator sends when it drops an IPv4 packet."""

import pytest
from clat_translator.xlat import drops
from xlat_helpers import CLAT_V4, ICMP, IP, SERVER_V4, UDP, clat, icmp4_message, parse4, refused, v4


def test_untranslatable_destination_gets_administratively_prohibited() -> None:
    packet = v4(UDP(sport=1, dport=2) / b"x", dst="127.0.0.9")
    back = refused(clat().translate(packet), drops.UNTRANSLATABLE_DESTINATION)
    err = parse4(back[0])
    assert (err.src, err.dst, err.ttl) == ("192.0.0.2", CLAT_V4, 64)
    assert (err[ICMP].type, err[ICMP].code) == (3, 13)
    assert icmp4_message(err)[8:] == packet


def test_quote_is_cut_to_576_bytes() -> None:
    packet = v4(UDP() / (b"x" * 1400), dst="10.0.0.1")
    back = refused(
        clat(denylist4=["10.0.0.0/8"]).translate(packet), drops.UNTRANSLATABLE_DESTINATION
    )
    assert len(back[0]) == 576
    assert icmp4_message(parse4(back[0]))[8:] == packet[:548]


def test_no_error_about_an_icmp_error() -> None:
    error = ICMP(type=3, code=1) / IP(src=SERVER_V4, dst=CLAT_V4) / UDP()
    assert (
        refused(clat().translate(v4(error, dst="127.0.0.9")), drops.UNTRANSLATABLE_DESTINATION)
        == []
    )


def test_no_error_about_a_non_first_fragment() -> None:
    packet = v4(b"\0" * 64, proto=17, frag=10, ttl=1)
    assert refused(clat().translate(packet), drops.TTL_EXPIRED) == []


@pytest.mark.parametrize("source", ["0.0.0.0", "224.0.0.1", "255.255.255.255", "127.0.0.1"])
def test_no_error_to_a_source_that_is_not_one_host(source: str) -> None:
    packet = v4(UDP(), src=source)
    assert refused(clat().translate(packet), drops.UNTRANSLATABLE_SOURCE) == []


def test_no_error_about_a_multicast_destination() -> None:
    packet = v4(UDP(), dst="239.1.1.1")
    assert refused(clat().translate(packet), drops.UNTRANSLATABLE_DESTINATION) == []


def test_echo_request_error_is_sent() -> None:
    # Echo requests are informational: an error about them is allowed.
    back = refused(clat().translate(v4(ICMP(type=8), ttl=1)), drops.TTL_EXPIRED)
    assert parse4(back[0])[ICMP].type == 11
