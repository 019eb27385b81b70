"""RFC 6052 / RFC 7050 / RFC 8781 parsing of the sidecar's prefix discovery."""

import ipaddress

import pytest
from clat_translator.discovery import (
    extract_ipv4,
    parse_pref64,
    prefix_of,
    prefixes_from_answers,
)
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPREF64, ICMPv6NDOptPrefixInfo

# RFC 6052 §2.4, the table of examples for 192.0.2.33
RFC6052_EXAMPLES = [
    (32, "2001:db8:c000:221::"),
    (40, "2001:db8:1c0:2:21::"),
    (48, "2001:db8:122:c000:2:2100::"),
    (56, "2001:db8:122:3c0:0:221::"),
    (64, "2001:db8:122:344:c0:2:2100:0"),
    (96, "2001:db8:122:344::192.0.2.33"),
]


@pytest.mark.parametrize(("length", "address"), RFC6052_EXAMPLES)
def test_extract_ipv4_matches_rfc6052_examples(length: int, address: str) -> None:
    assert str(extract_ipv4(ipaddress.IPv6Address(address), length)) == "192.0.2.33"


def _embed(prefix: str, ipv4: str) -> str:
    """Independent of the code under test: write the v4 bits around the u octet by hand."""
    net = ipaddress.IPv6Network(prefix)
    bits = int(net.network_address)
    v4 = int(ipaddress.IPv4Address(ipv4))
    length = net.prefixlen
    if length == 96:
        return str(ipaddress.IPv6Address(bits | v4))
    before_u = max(0, 64 - length)  # v4 bits that fit before bit 64
    high = v4 >> (32 - before_u) if before_u else 0
    low = v4 & ((1 << (32 - before_u)) - 1)
    value = bits | (high << 64) | (low << (56 - (32 - before_u)))
    return str(ipaddress.IPv6Address(value))


@pytest.mark.parametrize(
    "prefix",
    [
        "2001:db8:64::/96",
        "64:ff9b::/96",
        "2001:db8:6464::/64",
        "2001:db8:100::/56",
        "2001:db8:100::/48",
        "2001:db8:100::/40",
        "2001:db8::/32",
    ],
)
@pytest.mark.parametrize("wka", ["192.0.0.170", "192.0.0.171"])
def test_prefix_of_finds_the_wka_at_every_rfc6052_position(prefix: str, wka: str) -> None:
    assert prefix_of(ipaddress.IPv6Address(_embed(prefix, wka))) == ipaddress.IPv6Network(prefix)


def test_prefix_of_ignores_addresses_without_a_well_known_ipv4() -> None:
    assert prefix_of(ipaddress.IPv6Address(_embed("2001:db8:64::/96", "192.0.2.1"))) is None
    assert prefix_of(ipaddress.IPv6Address("2001:db8::1")) is None


def test_prefix_of_requires_zero_u_octet_and_suffix() -> None:
    good = int(ipaddress.IPv6Address(_embed("2001:db8:6464::/64", "192.0.0.170")))
    assert prefix_of(ipaddress.IPv6Address(good | 1)) is None  # suffix not zero


def test_prefixes_from_answers_keeps_answer_order_without_duplicates() -> None:
    answers = [
        _embed("2001:db8:64::/96", "192.0.0.170"),
        _embed("2001:db8:64::/96", "192.0.0.171"),
        _embed("2001:db8:6464::/64", "192.0.0.170"),
        "2001:db8::99",
    ]
    assert prefixes_from_answers(answers) == (
        ipaddress.IPv6Network("2001:db8:64::/96"),
        ipaddress.IPv6Network("2001:db8:6464::/64"),
    )


@pytest.mark.parametrize(
    ("plc", "prefix"),
    [(0, "2001:db8:64::/96"), (1, "2001:db8:6464::/64"), (5, "2001:db8::/32")],
)
def test_parse_pref64_reads_prefix_length_code_and_scaled_lifetime(plc: int, prefix: str) -> None:
    ra = (
        ICMPv6ND_RA()
        / ICMPv6NDOptPrefixInfo()
        / ICMPv6NDOptPREF64(
            scaledlifetime=75, plc=plc, prefix=str(ipaddress.IPv6Network(prefix).network_address)
        )
    )
    assert parse_pref64(bytes(ra)) == [(ipaddress.IPv6Network(prefix), 600)]


def test_parse_pref64_ignores_malformed_and_other_messages() -> None:
    ra = bytes(ICMPv6ND_RA() / ICMPv6NDOptPREF64(scaledlifetime=1, prefix="2001:db8:64::"))
    assert parse_pref64(ra[:-4]) == []  # option truncated
    zero_length = ra[:16] + bytes([38, 0]) + ra[18:]
    assert parse_pref64(zero_length) == []
    assert parse_pref64(bytes([133]) + ra[1:]) == []  # a Router Solicitation
    bad_plc = ra[:18] + bytes([ra[18], (ra[19] & 0xF8) | 7]) + ra[20:]
    assert parse_pref64(bad_plc) == []
    assert parse_pref64(b"") == []
