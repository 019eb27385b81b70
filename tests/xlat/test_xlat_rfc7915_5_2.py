"""RFC 7915 §5.2: ICMPv6 -> ICMPv4 (informational messages and the error mapping)."""

import pytest
from clat_translator.xlat import drops
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLDone,
    ICMPv6MLQuery,
    ICMPv6MLReport,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6Unknown,
    IPv6ExtHdrFragment,
)
from scapy.packet import Packet
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    OUTSIDE_V6,
    ROUTER_V4,
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


def test_echo_request() -> None:
    out = parse4(only(clat().translate(v6(ICMPv6EchoRequest(id=0x4321, seq=9, data=b"hello")))))
    icmp = out[ICMP]
    assert (icmp.type, icmp.code, icmp.id, icmp.seq) == (8, 0, 0x4321, 9)
    assert bytes(icmp.payload) == b"hello"
    assert out.proto == 1


def test_echo_reply() -> None:
    out = parse4(only(clat().translate(v6(ICMPv6EchoReply(id=3, seq=4, data=b"pong")))))
    assert (out[ICMP].type, out[ICMP].id, out[ICMP].seq) == (0, 3, 4)


def test_bad_icmpv6_checksum_dropped() -> None:
    refused(clat().translate(v6(ICMPv6EchoRequest(cksum=0xBEEF))), drops.BAD_CHECKSUM)


@pytest.mark.parametrize(
    "message",
    [
        ICMPv6MLQuery(),
        ICMPv6MLReport(),
        ICMPv6MLDone(),
        ICMPv6ND_RS(),
        ICMPv6ND_RA(),
        ICMPv6ND_NS(tgt="fe80::1"),
        ICMPv6ND_NA(tgt="fe80::1"),
        ICMPv6ND_Redirect(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_single_hop_messages_silently_dropped(message: Packet) -> None:
    refused(clat().translate(v6(message, hlim=64)), drops.ICMP_UNTRANSLATABLE)


# -- errors --------------------------------------------------------------------------------------

# RFC 7915 §5.2, written out from the RFC text: (ICMPv6 type, code) -> (ICMPv4 type, code).
ERRORS_6TO4 = {
    (1, 0): (3, 1),
    (1, 1): (3, 10),
    (1, 2): (3, 1),
    (1, 3): (3, 1),
    (1, 4): (3, 3),
    (1, 5): None,
    (1, 6): None,
    (2, 0): (3, 4),
    (3, 0): (11, 0),
    (3, 1): (11, 1),
    (4, 0): (12, 0),
    (4, 1): (3, 2),
    (4, 2): None,
    (4, 3): None,
    (5, 0): None,
    (100, 0): None,
    (127, 0): None,
}

QUOTED = IPv6(src=CLAT_V6, dst=SERVER_V6, hlim=50) / TCP(sport=4000, dport=80, seq=1) / b"GET"
EXPECTED_QUOTE = (
    IP(src=CLAT_V4, dst=SERVER_V4, ttl=50, id=0, flags=0)
    / TCP(sport=4000, dport=80, seq=1)
    / b"GET"
)


def _error(
    icmp_type: int,
    code: int,
    rest: bytes = b"\0\0\0\0",
    quoted: bytes = bytes(QUOTED),
    src: str = ROUTER_V6,
) -> bytes:
    # scapy computes the ICMPv6 checksum of a generic ICMPv6 message.
    msg = ICMPv6Unknown(type=icmp_type, code=code, msgbody=rest + quoted)
    return v6(msg, src=src, dst=CLAT_V6)


@pytest.mark.parametrize(("key", "expected"), ERRORS_6TO4.items(), ids=str)
def test_error_type_code_mapping(key: tuple[int, int], expected: tuple[int, int] | None) -> None:
    r = clat().translate(_error(*key))
    if expected is None:
        refused(r, drops.ICMP_UNTRANSLATABLE)
        return
    out = parse4(only(r))
    msg = icmp4_message(out)
    assert (msg[0], msg[1]) == expected
    assert (out.src, out.dst) == (ROUTER_V4, CLAT_V4)
    # §5.3: the quoted packet is translated as scapy would build its IPv4 form.
    assert msg[8:] == bytes(EXPECTED_QUOTE)


# RFC 7915 §5.2 Figure 6: IPv6 pointer -> IPv4 pointer (None: n/a, drop).
POINTERS_6TO4 = {
    0: 0,
    1: 1,
    2: None,
    3: None,
    4: 2,
    5: 2,
    6: 9,
    7: 8,
    **dict.fromkeys(range(8, 24), 12),
    **dict.fromkeys(range(24, 40), 16),
    40: None,
    1000: None,
}


@pytest.mark.parametrize(("pointer", "expected"), POINTERS_6TO4.items())
def test_parameter_problem_pointer(pointer: int, expected: int | None) -> None:
    r = clat().translate(_error(4, 0, pointer.to_bytes(4, "big")))
    if expected is None:
        refused(r, drops.ICMP_UNTRANSLATABLE)
        return
    msg = icmp4_message(parse4(only(r)))
    assert (msg[0], msg[1], msg[4]) == (12, 0, expected)


@pytest.mark.parametrize(
    ("mtu", "fragment_header", "config", "expected"),
    [
        (1400, False, {}, 1380),  # advertised - 20
        (1500, False, {"ipv4_mtu": 1400}, 1400),  # capped by the IPv4 next-hop MTU
        (9000, False, {"ipv6_mtu": 1400}, 1380),  # IPv6 next-hop MTU - 20
        (1400, True, {}, 1372),  # the quoted packet had a Fragment Header
        (1280, False, {}, 1260),
    ],
)
def test_fragmentation_needed_mtu(
    mtu: int, fragment_header: bool, config: dict[str, object], expected: int
) -> None:
    if fragment_header:
        quoted = (
            IPv6(src=CLAT_V6, dst=SERVER_V6) / IPv6ExtHdrFragment(m=1, id=3) / UDP() / (b"u" * 1400)
        )
    else:
        quoted = IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP() / (b"u" * 1400)
    r = clat(**config).translate(_error(2, 0, mtu.to_bytes(4, "big"), bytes(quoted)[:1000]))
    out = parse4(only(r))
    assert (out[ICMP].type, out[ICMP].code, out[ICMP].nexthopmtu) == (3, 4, expected)


def test_error_from_outside_pool6_uses_rfc6791v4() -> None:
    # RFC 7915 §5.2 + RFC 7600: the sidecar sets 192.0.0.8.
    r = clat(rfc6791v4="192.0.0.8").translate(_error(3, 0, src=OUTSIDE_V6))
    out = parse4(only(r))
    assert out.src == "192.0.0.8"
    assert icmp4_message(out)[8:] == bytes(EXPECTED_QUOTE)


def test_error_from_outside_pool6_falls_back_to_local_ipv4() -> None:
    out = parse4(only(clat().translate(_error(3, 0, src=OUTSIDE_V6))))
    assert out.src == "192.0.0.2"


def test_non_error_from_outside_pool6_is_dropped() -> None:
    refused(clat().translate(v6(ICMPv6EchoRequest(), src=OUTSIDE_V6)), drops.UNTRANSLATABLE_SOURCE)


def test_translated_error_fits_576_bytes() -> None:
    big = IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP(sport=1, dport=2) / (b"B" * 1400)
    out = only(clat().translate(_error(1, 4, quoted=bytes(big)[:1232])))
    assert len(out) == 576
    pkt = parse4(out)
    expected = (
        IP(src=CLAT_V4, dst=SERVER_V4, id=0, flags="DF") / UDP(sport=1, dport=2) / (b"B" * 1400)
    )
    assert icmp4_message(pkt)[8:] == bytes(expected)[: 576 - 28]


def test_packet_too_big_from_a_jumbo_link_becomes_fragmentation_needed_65535() -> None:
    # RFC 7915 §5.2: the ICMPv4 MTU field has 16 bits.
    quoted = IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP() / (b"u" * 1400)
    t = clat(ipv6_mtu=90000, ipv4_mtu=65535)
    out = parse4(only(t.translate(_error(2, 0, (78000).to_bytes(4, "big"), bytes(quoted)))))
    assert (out[ICMP].type, out[ICMP].code, out[ICMP].nexthopmtu) == (3, 4, 65535)


@pytest.mark.parametrize("data", [b"", bytes(8), bytes(1)])
def test_an_all_zero_echo_reply_gets_checksum_ffff(data: bytes) -> None:
    """§5.2 Echo Reply (129 -> 0) with identifier, sequence number and data all zero: every word
    of the ICMPv4 message is zero, so its checksum is 0xFFFF (RFC 1071), not the 0x0000 of a
    sum 0xFFFF. Found by the fuzzer. Twice: the first packet takes the general path, the second
    the per-address-pair fast path."""
    t = clat()
    pkt = v6(ICMPv6EchoReply(id=0, seq=0, data=data))
    for _ in range(2):
        out = parse4(only(t.translate(pkt)))
        assert out[ICMP].type == 0
        assert out[ICMP].chksum == 0xFFFF


def test_a_sum_of_ffff_still_gets_checksum_zero() -> None:
    """The other zero: an Echo Reply whose words sum to 0xFFFF has checksum field 0x0000."""
    t = clat()
    pkt = v6(ICMPv6EchoReply(id=0xFFFF, seq=0))
    for _ in range(2):
        out = parse4(only(t.translate(pkt)))
        assert out[ICMP].chksum == 0x0000
