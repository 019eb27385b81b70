"""RFC 7915 §4.2: ICMPv4 -> ICMPv6 (informational messages and the error mapping)."""

import pytest
from clat_translator.xlat import Translator, XlatConfig, drops
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    LOCAL_V6,
    ROUTER_V4,
    ROUTER_V6,
    SERVER_V4,
    SERVER_V6,
    TCP,
    UDP,
    IPv6,
    clat,
    icmp6_message,
    only,
    parse4,
    parse6,
    refused,
    v4,
)


def test_echo_request() -> None:
    out = parse6(only(clat().translate(v4(ICMP(type=8, id=0x1234, seq=7) / b"hello"))))
    req = out[ICMPv6EchoRequest]
    assert (req.type, req.code, req.id, req.seq, req.data) == (128, 0, 0x1234, 7, b"hello")
    assert out.nh == 58


def test_echo_reply() -> None:
    out = parse6(only(clat().translate(v4(ICMP(type=0, id=1, seq=2) / b"pong"))))
    rep = out[ICMPv6EchoReply]
    assert (rep.type, rep.id, rep.seq, rep.data) == (129, 1, 2, b"pong")


def test_bad_icmp_checksum_dropped() -> None:
    refused(clat().translate(v4(ICMP(type=8, chksum=0xDEAD))), drops.BAD_CHECKSUM)


@pytest.mark.parametrize(
    "icmp_type",
    [
        9,  # router advertisement
        10,  # router solicitation
        13,  # timestamp
        14,  # timestamp reply
        15,  # information request
        16,  # information reply
        17,  # address mask request
        18,  # address mask reply
        4,  # source quench
        5,  # redirect
        6,  # alternative host address
        42,  # extended echo (unknown here)
    ],
)
def test_single_hop_and_obsolete_messages_silently_dropped(icmp_type: int) -> None:
    refused(clat().translate(v4(ICMP(type=icmp_type) / (b"\0" * 28))), drops.ICMP_UNTRANSLATABLE)


def test_fragmented_icmp_first_fragment_dropped() -> None:
    packet = v4(ICMP(type=8) / (b"e" * 64), flags="MF")
    refused(clat().translate(packet), drops.FRAGMENTED_ICMP)


# -- errors --------------------------------------------------------------------------------------

# RFC 7915 §4.2, written out from the RFC text (not imported from the code under test).
# (ICMPv4 type, code) -> (ICMPv6 type, code), or None: "silently drop".
ERRORS_4TO6 = {
    (3, 0): (1, 0),
    (3, 1): (1, 0),
    (3, 2): (4, 1),
    (3, 3): (1, 4),
    (3, 4): (2, 0),
    (3, 5): (1, 0),
    (3, 6): (1, 0),
    (3, 7): (1, 0),
    (3, 8): (1, 0),
    (3, 9): (1, 1),
    (3, 10): (1, 1),
    (3, 11): (1, 0),
    (3, 12): (1, 0),
    (3, 13): (1, 1),
    (3, 14): None,
    (3, 15): (1, 1),
    (3, 16): None,
    (11, 0): (3, 0),
    (11, 1): (3, 1),
    (11, 2): None,
    (12, 0): (4, 0),
    (12, 1): None,
    (12, 2): (4, 0),
    (12, 3): None,
}

QUOTED = IP(src=SERVER_V4, dst=CLAT_V4, ttl=57, id=0) / UDP(sport=53, dport=5353) / b"answer"
EXPECTED_QUOTE = IPv6(src=SERVER_V6, dst=CLAT_V6, hlim=57) / UDP(sport=53, dport=5353) / b"answer"


def _error(icmp_type: int, code: int, quoted: bytes = bytes(QUOTED), **fields: object) -> bytes:
    return v4(ICMP(type=icmp_type, code=code, **fields) / quoted, src=ROUTER_V4, dst=SERVER_V4)


@pytest.mark.parametrize(("key", "expected"), ERRORS_4TO6.items(), ids=str)
def test_error_type_code_mapping(key: tuple[int, int], expected: tuple[int, int] | None) -> None:
    r = clat().translate(_error(*key))
    if expected is None:
        refused(r, drops.ICMP_UNTRANSLATABLE)
        return
    out = parse6(only(r))
    msg = icmp6_message(out)
    assert (msg[0], msg[1]) == expected
    assert (out.src, out.dst) == (ROUTER_V6, SERVER_V6)
    # §4.3: the quoted packet is translated as scapy would build its IPv6 form.
    assert msg[8:] == bytes(EXPECTED_QUOTE)


def test_protocol_unreachable_points_at_next_header() -> None:
    msg = icmp6_message(parse6(only(clat().translate(_error(3, 2)))))
    assert msg[4:8] == (6).to_bytes(4, "big")


# RFC 7915 §4.2 Figure 3: IPv4 pointer -> IPv6 pointer (None: n/a, drop).
POINTERS_4TO6 = {
    0: 0,
    1: 1,
    2: 4,
    3: 4,
    4: None,
    5: None,
    6: None,
    7: None,
    8: 7,
    9: 6,
    10: None,
    11: None,
    **dict.fromkeys(range(12, 16), 8),
    **dict.fromkeys(range(16, 20), 24),
    20: None,
}


@pytest.mark.parametrize(("pointer", "expected"), POINTERS_4TO6.items())
def test_parameter_problem_pointer(pointer: int, expected: int | None) -> None:
    r = clat().translate(_error(12, 0, ptr=pointer))
    if expected is None:
        refused(r, drops.ICMP_UNTRANSLATABLE)
        return
    msg = icmp6_message(parse6(only(r)))
    assert (msg[0], msg[1]) == (4, 0)
    assert int.from_bytes(msg[4:8], "big") == expected


@pytest.mark.parametrize(
    ("mtu", "inner_length", "config", "expected"),
    [
        (1400, 1500, {}, 1420),  # advertised + 20
        (1492, 1500, {}, 1500),  # capped by the IPv6 next-hop MTU
        (1492, 1500, {"ipv6_mtu": 9000, "ipv4_mtu": 1400}, 1420),  # IPv4 next-hop MTU + 20
        (1000, 1500, {}, 1280),  # never below lowest_ipv6_mtu
        (1000, 1500, {"lowest_ipv6_mtu": 1400}, 1400),
        (0, 1500, {"ipv6_mtu": 9000, "ipv4_mtu": 9000}, 1512),  # RFC 1191 plateau 1492
        (0, 4000, {"ipv6_mtu": 9000, "ipv4_mtu": 9000}, 2022),  # plateau 2002
        (0, 1400, {}, 1280),  # plateau 1006 + 20, raised to 1280
        (0, 1500, {"ipv6_mtu": 9000, "mtu_plateaus": [1450, 1300]}, 1470),
    ],
)
def test_packet_too_big_mtu(
    mtu: int, inner_length: int, config: dict[str, object], expected: int
) -> None:
    quoted = IP(src=SERVER_V4, dst=CLAT_V4, len=inner_length, flags="DF") / TCP()
    r = clat(**config).translate(_error(3, 4, bytes(quoted), nexthopmtu=mtu))
    out = parse6(only(r))
    assert (out.payload.type, out.payload.code) == (2, 0)
    assert out.payload.mtu == expected


def test_error_from_untranslatable_source_uses_rfc6791v6() -> None:
    t = clat(denylist4=["198.51.100.0/24"], rfc6791v6="2001:db8:6791::1")
    out = parse6(only(t.translate(_error(11, 0))))
    assert out.src == "2001:db8:6791::1"


def test_error_from_untranslatable_source_falls_back_to_local_ipv6() -> None:
    out = parse6(only(clat(denylist4=["198.51.100.0/24"]).translate(_error(11, 0))))
    assert out.src == LOCAL_V6


def test_error_from_untranslatable_source_without_any_fallback() -> None:
    t = clat(denylist4=["198.51.100.0/24"], local_ipv6=None)
    refused(t.translate(_error(11, 0)), drops.UNTRANSLATABLE_SOURCE)


def test_translated_error_fits_1280_bytes() -> None:
    big = IP(src=SERVER_V4, dst=CLAT_V4) / UDP(sport=1, dport=2) / (b"B" * 1400)
    out = only(clat(ipv6_mtu=1500).translate(_error(3, 3, bytes(big))))
    assert len(out) == 1280
    pkt = parse6(out)
    assert pkt.payload.type == 1
    # The quote is the IPv6 form of the packet, cut to fit.
    expected = IPv6(src=SERVER_V6, dst=CLAT_V6) / UDP(sport=1, dport=2) / (b"B" * 1400)
    assert icmp6_message(pkt)[8:] == bytes(expected)[: 1280 - 48]


@pytest.mark.parametrize(
    ("router", "router6"), [("0.0.0.0", "64:ff9b::"), ("127.0.0.1", "64:ff9b::7f00:1")]
)
def test_error_from_a_reserved_source_is_embedded_in_pool6(router: str, router6: str) -> None:
    # RFC 7915 §4.2 does not forbid it, Jool does it: the reserved ranges bar ordinary
    # packets, not the source of an ICMP error.
    quoted = IP(src=CLAT_V4, dst=SERVER_V4) / UDP(sport=1, dport=2) / b"q"
    error = v4(ICMP(type=11, code=0) / bytes(quoted), src=router, dst=CLAT_V4)
    out = parse6(only(clat().translate(error)))
    assert (out.src, out.dst) == (router6, CLAT_V6)
    assert icmp6_message(out)[0] == 3


@pytest.mark.parametrize("router", ["0.0.0.0", "127.0.0.1"])
def test_ordinary_packet_from_a_reserved_source_is_still_refused(router: str) -> None:
    refused(clat().translate(v4(UDP(), src=router, dst=CLAT_V4)), drops.UNTRANSLATABLE_SOURCE)


@pytest.mark.parametrize("size", [0, 1, 4, 7])
@pytest.mark.parametrize(
    "ip", [{"ttl": 1}, {"dst": "169.254.0.1"}, {}], ids=["ttl-expired", "untranslatable", "plain"]
)
def test_icmp_shorter_than_its_header_is_dropped_silently(size: int, ip: dict[str, object]) -> None:
    # RFC 792: 8 bytes of header. Shorter is malformed: counted, never answered.
    message = b"\x08\x00\xf7\xff\0\0\0"[:size]
    packet = v4(message, proto=1, **ip)
    refused(Translator(XlatConfig(pool6="64:ff9b::/96")).translate(packet), drops.TRUNCATED)
    refused(clat().translate(packet), drops.TRUNCATED)


def test_the_translators_own_echo_reply_with_all_zero_words() -> None:
    """An Echo Request to local_ipv4 with identifier, sequence number and data 0: the reply's
    words are all zero, so its checksum is 0xFFFF (RFC 1071). Found by the fuzzer."""
    t = clat(local_ipv4="192.0.0.2")
    result = t.translate(v4(ICMP(type=8, id=0, seq=0), dst="192.0.0.2"))
    assert result.drop is None and result.out == []
    reply = parse4(result.back[0])
    assert reply[ICMP].type == 0 and reply[ICMP].chksum == 0xFFFF
