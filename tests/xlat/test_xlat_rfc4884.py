"""RFC 4884 ICMP extensions carried through translated errors (RFC 7915 §4.2, §5.2)."""

from scapy.layers.inet import ICMPExtension_Header, ICMPExtension_InterfaceInformation
from scapy.layers.inet6 import ICMPv6Unknown
from scapy.utils import checksum
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    ROUTER_V4,
    ROUTER_V6,
    SERVER_V4,
    SERVER_V6,
    UDP,
    IPv6,
    clat,
    icmp4_message,
    icmp6_message,
    only,
    parse4,
    parse6,
    v4,
    v6,
)

EXTENSION = bytes(
    ICMPExtension_Header()
    / ICMPExtension_InterfaceInformation(has_ifindex=1, ifindex=7, has_mtu=1, mtu=1400)
)


def _pad(data: bytes, size: int) -> bytes:
    return data + b"\0" * (size - len(data))


# -- IPv4 -> IPv6 --------------------------------------------------------------------------------

QUOTED4 = IP(src=SERVER_V4, dst=CLAT_V4, id=0) / UDP(sport=53, dport=5353) / (b"q" * 60)
EXPECTED6 = IPv6(src=SERVER_V6, dst=CLAT_V6) / UDP(sport=53, dport=5353) / (b"q" * 60)


def _error4(icmp_type: int, code: int, length: int, quote: bytes, **fields: object) -> bytes:
    icmp = ICMP(type=icmp_type, code=code, length=length, **fields)
    return v4(icmp / (quote + EXTENSION), src=ROUTER_V4, dst=SERVER_V4)


def test_time_exceeded_extension_to_ipv6() -> None:
    msg = icmp6_message(
        parse6(only(clat().translate(_error4(11, 0, 32, _pad(bytes(QUOTED4), 128)))))
    )
    assert (msg[0], msg[1]) == (3, 0)
    assert msg[4] == 16  # 128 bytes, in 64-bit words
    assert msg[8 : 8 + 128] == _pad(bytes(EXPECTED6), 128)
    assert msg[136:] == EXTENSION
    assert checksum(msg[136:]) == 0  # the extension's own checksum is untouched and valid


def test_destination_unreachable_extension_to_ipv6() -> None:
    long_quote = IP(src=SERVER_V4, dst=CLAT_V4) / UDP(sport=1, dport=2) / (b"L" * 200)
    quote = bytes(long_quote)[:132]  # 33 words, a multiple of 4 but not of 8
    msg = icmp6_message(parse6(only(clat().translate(_error4(3, 1, 33, quote)))))
    assert (msg[0], msg[1]) == (1, 0)
    assert msg[4] * 8 == 152  # 152 translated bytes, already a multiple of 8
    expected = IPv6(src=SERVER_V6, dst=CLAT_V6) / UDP(sport=1, dport=2) / (b"L" * 200)
    assert msg[8:160] == bytes(expected)[:152]
    assert msg[160:] == EXTENSION


def test_extension_dropped_where_icmpv6_has_no_length_field() -> None:
    # Packet Too Big and Parameter Problem carry no RFC 4884 length: quote only.
    for icmp_type, code, fields in ((3, 4, {"nexthopmtu": 1400}), (12, 0, {"ptr": 8})):
        packet = _error4(icmp_type, code, 32, _pad(bytes(QUOTED4), 128), **fields)
        msg = icmp6_message(parse6(only(clat().translate(packet))))
        assert msg[8:] == bytes(EXPECTED6)


def test_invalid_length_means_no_extension() -> None:
    # RFC 4884 §5: a length shorter than 128 bytes is not compliant: all of it is quote.
    msg = icmp6_message(parse6(only(clat().translate(_error4(11, 0, 10, bytes(QUOTED4))))))
    assert msg[4] == 0
    assert msg[8:] == bytes(EXPECTED6)


def test_extension_kept_within_1280_bytes() -> None:
    big = IP(src=SERVER_V4, dst=CLAT_V4) / UDP(sport=1, dport=2) / (b"B" * 1300)
    out = only(clat().translate(_error4(11, 0, 255, bytes(big)[:1020])))
    assert len(out) <= 1280
    msg = icmp6_message(parse6(out))
    assert msg[-len(EXTENSION) :] == EXTENSION
    assert 8 + msg[4] * 8 + len(EXTENSION) == len(msg)


# -- IPv6 -> IPv4 --------------------------------------------------------------------------------

QUOTED6 = IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP(sport=5353, dport=53) / (b"r" * 40)
EXPECTED4 = IP(src=CLAT_V4, dst=SERVER_V4, id=0, flags=0) / UDP(sport=5353, dport=53) / (b"r" * 40)


def _error6(icmp_type: int, code: int, length: int, quote: bytes) -> bytes:
    body = bytes((length, 0, 0, 0)) + quote + EXTENSION
    return v6(ICMPv6Unknown(type=icmp_type, code=code, msgbody=body), src=ROUTER_V6, dst=CLAT_V6)


def test_destination_unreachable_extension_to_ipv4() -> None:
    msg = icmp4_message(
        parse4(only(clat().translate(_error6(1, 4, 16, _pad(bytes(QUOTED6), 128)))))
    )
    assert (msg[0], msg[1]) == (3, 3)
    assert msg[5] == 32  # 128 bytes, in 32-bit words
    assert msg[8:136] == _pad(bytes(EXPECTED4), 128)
    assert msg[136:] == EXTENSION


def test_time_exceeded_extension_to_ipv4() -> None:
    msg = icmp4_message(
        parse4(only(clat().translate(_error6(3, 0, 16, _pad(bytes(QUOTED6), 128)))))
    )
    assert (msg[0], msg[1], msg[5]) == (11, 0, 32)
    assert msg[136:] == EXTENSION


def test_extension_kept_within_576_bytes() -> None:
    big = IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP(sport=1, dport=2) / (b"B" * 1300)
    out = only(clat().translate(_error6(1, 0, 100, bytes(big)[:800])))
    assert len(out) <= 576
    msg = icmp4_message(parse4(out))
    assert msg[-len(EXTENSION) :] == EXTENSION
    assert 8 + msg[5] * 4 + len(EXTENSION) == len(msg)


# -- short original datagrams, zero-padded to 128 bytes, as routers send them -------------------


def test_short_original_datagram_padded_to_128_both_ways() -> None:
    # RFC 4884 §4.1: the original datagram is zero-padded to 128 bytes when extensions follow;
    # the length attribute counts 32-bit words in ICMPv4 and 64-bit words in ICMPv6.
    short4 = bytes(IP(src=SERVER_V4, dst=CLAT_V4, id=0) / UDP(sport=53, dport=5353))  # 28 bytes
    msg6 = icmp6_message(parse6(only(clat().translate(_error4(11, 0, 32, _pad(short4, 128))))))
    short6 = bytes(IPv6(src=SERVER_V6, dst=CLAT_V6) / UDP(sport=53, dport=5353))  # 48 bytes
    assert msg6[4] == 16 and msg6[8:136] == _pad(short6, 128) and msg6[136:] == EXTENSION
    msg4 = icmp4_message(parse4(only(clat().translate(_error6(3, 0, 16, _pad(short6, 128))))))
    assert msg4[5] == 32 and msg4[8:136] == _pad(short4, 128) and msg4[136:] == EXTENSION


def test_original_datagram_longer_than_128_keeps_its_length_in_the_other_units() -> None:
    long4 = bytes(IP(src=SERVER_V4, dst=CLAT_V4, id=0) / UDP(sport=1, dport=2) / (b"L" * 112))
    msg6 = icmp6_message(parse6(only(clat().translate(_error4(3, 1, 35, long4)))))  # 140 bytes
    assert msg6[4] == 20  # 160 bytes: the 140-byte IPv4 quote grew 20 bytes, 64-bit aligned
    assert msg6[8 + 160 :] == EXTENSION
