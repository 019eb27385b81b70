"""RFC 6052 §2.2: IPv4-embedded IPv6 addresses, every prefix length, both directions; and
the module that owns the rules (clat_translator.xlat.rfc6052): parsing, embed/extract, and
RFC 7050's search for the prefix in the AAAA answers for ipv4only.arpa."""

import ipaddress

import pytest
from clat_translator.xlat import Translator, XlatConfig, drops, rfc6052
from hypothesis import given
from hypothesis import strategies as st
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    UDP,
    clat,
    only,
    parse4,
    parse6,
    refused,
    v4,
    v6,
)

# RFC 6052 §2.4, the examples table (the RFC's own data is the oracle).
RFC6052_EXAMPLES = [
    ("2001:db8::/32", "192.0.2.33", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "192.0.2.33", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "192.0.2.33", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "192.0.2.33", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "192.0.2.33", "2001:db8:122:344::c000:221"),
    ("64:ff9b::/96", "192.0.2.33", "64:ff9b::c000:221"),
]


@pytest.mark.parametrize(("prefix", "address4", "address6"), RFC6052_EXAMPLES)
def test_embeds_destination_at_every_prefix_length(
    prefix: str, address4: str, address6: str
) -> None:
    t = clat(pool6=prefix)
    out = parse6(only(t.translate(v4(UDP(sport=1, dport=2), dst=address4))))
    assert out.dst == address6
    assert out.src == CLAT_V6


@pytest.mark.parametrize(("prefix", "address4", "address6"), RFC6052_EXAMPLES)
def test_extracts_source_at_every_prefix_length(prefix: str, address4: str, address6: str) -> None:
    t = clat(pool6=prefix)
    out = parse4(only(t.translate(v6(UDP(sport=1, dport=2), src=address6))))
    assert out.src == address4
    assert out.dst == CLAT_V4


@pytest.mark.parametrize(("prefix", "address4", "address6"), RFC6052_EXAMPLES[:5])
def test_u_octet_and_suffix_ignored_on_extraction(
    prefix: str, address4: str, address6: str
) -> None:
    # RFC 6052 §2.2: bits 64-71 and the suffix are zero when made; a receiver ignores them.

    n = int(ipaddress.IPv6Address(address6)) | (0xAB << 56) | 0x5
    noisy = str(ipaddress.IPv6Address(n))
    t = clat(pool6=prefix)
    out = parse4(only(t.translate(v6(UDP(sport=1, dport=2), src=noisy))))
    assert out.src == address4


def test_source_outside_pool6_is_untranslatable() -> None:
    t = clat()
    refused(t.translate(v6(UDP(sport=1, dport=2), src="2001:db8::1")), drops.UNTRANSLATABLE_SOURCE)


def test_destination_outside_pool6_and_eamt_is_untranslatable() -> None:
    t = clat()
    back = refused(
        t.translate(v6(UDP(sport=1, dport=2), dst="2001:db8::99")),
        drops.UNTRANSLATABLE_DESTINATION,
    )
    # RFC 7915 §5.4: Communication with Destination Administratively Prohibited, from local_ipv6.
    err = parse6(back[0])
    assert (err.payload.type, err.payload.code) == (1, 1)


def test_no_pool6_means_eam_only() -> None:
    t = clat(pool6=None)
    refused(t.translate(v4(ICMP())), drops.UNTRANSLATABLE_DESTINATION)


@pytest.mark.parametrize(
    "reserved", ["127.0.0.1", "0.1.2.3", "169.254.1.1", "224.0.0.5", "255.255.255.255"]
)
def test_reserved_ipv4_never_uses_pool6(reserved: str) -> None:
    t = clat()
    refused(t.translate(v4(UDP(), dst=reserved)), drops.UNTRANSLATABLE_DESTINATION)
    refused(
        t.translate(v6(UDP(), src=f"64:ff9b::{reserved}")),
        drops.UNTRANSLATABLE_SOURCE,
    )


def test_denylist4_blocks_pool6_translation_both_ways() -> None:
    t = clat(denylist4=["10.0.0.0/8"])
    refused(t.translate(v4(UDP(), dst="10.1.2.3")), drops.UNTRANSLATABLE_DESTINATION)
    refused(t.translate(v6(UDP(), src="64:ff9b::10.1.2.3")), drops.UNTRANSLATABLE_SOURCE)
    assert only(t.translate(v4(UDP(), dst="11.1.2.3")))


def test_update_pool6_swaps_the_prefix_live() -> None:
    t = clat()
    before = parse6(only(t.translate(v4(UDP(), dst="192.0.2.33"))))
    assert before.dst == "64:ff9b::c000:221"
    t.update_pool6("2001:db8:122:344::/96")
    after = parse6(only(t.translate(v4(UDP(), dst="192.0.2.33"))))
    assert after.dst == "2001:db8:122:344::c000:221"
    refused(t.translate(v6(UDP(), src="64:ff9b::c000:221")), drops.UNTRANSLATABLE_SOURCE)
    with pytest.raises(ValueError, match="pool6"):
        t.update_pool6("2001:db8::/33")
    assert parse6(only(t.translate(v4(UDP(), dst="192.0.2.33")))).dst == after.dst


def test_ip_header_of_translated_packet_is_scapy_clean() -> None:
    t = clat()
    out = parse4(only(t.translate(v6(UDP(sport=5, dport=6) / b"hi"))))
    assert isinstance(out, IP)


# ---- the rfc6052 module ----------------------------------------------------------------------


def _embed_by_hand(prefix: str, ipv4: str) -> ipaddress.IPv6Address:
    """Independent of the code under test: the IPv4 octets after the prefix, octet 8 skipped."""
    network = ipaddress.IPv6Network(prefix)
    raw = bytearray(network.network_address.packed)
    positions = [i for i in range(network.prefixlen // 8, 16) if i != 8][:4]
    for position, octet in zip(positions, ipaddress.IPv4Address(ipv4).packed, strict=True):
        raw[position] = octet
    return ipaddress.IPv6Address(bytes(raw))


@pytest.mark.parametrize(("prefix", "address4", "address6"), RFC6052_EXAMPLES)
def test_embed_and_extract_follow_the_rfc_examples(
    prefix: str, address4: str, address6: str
) -> None:
    network = ipaddress.IPv6Network(prefix)
    v4, v6 = ipaddress.IPv4Address(address4), ipaddress.IPv6Address(address6)
    assert rfc6052.embed(network, v4) == v6
    assert rfc6052.extract(v6, network.prefixlen) == v4


@given(
    length=st.sampled_from(rfc6052.PREFIX_LENGTHS),
    high=st.integers(0, 2**64 - 1),
    v4=st.integers(0, 2**32 - 1),
)
def test_embed_matches_the_octet_layout_and_extract_undoes_it(
    length: int, high: int, v4: int
) -> None:
    # A prefix of `length` bits from random bits, with the u-octet cleared for lengths above 64.
    bits = (high << 64) >> (128 - length) << (128 - length)
    bits &= ~(0xFF << 56)
    network = ipaddress.IPv6Network((bits, length))
    address4 = ipaddress.IPv4Address(v4)
    embedded = rfc6052.embed(network, address4)
    assert embedded == _embed_by_hand(str(network), str(address4))
    assert rfc6052.extract(embedded, length) == address4


@pytest.mark.parametrize("length", rfc6052.PREFIX_LENGTHS)
def test_parse_prefix_accepts_every_length_from_text_and_as_a_network(length: int) -> None:
    network = ipaddress.IPv6Network(f"2001:db8::/{length}")
    assert rfc6052.parse_prefix(f" 2001:db8::/{length} ") == network
    assert rfc6052.parse_prefix(network) is network


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001:db8::/33", "RFC 6052 allows prefix lengths /32, /40, /48, /56, /64, /96 only"),
        ("2001:db8::/128", "RFC 6052 allows"),
        ("2001:db8::", "with its length"),
        ("2001:db8::1/96", "no bits set after its length"),
        ("2001:db8:0:0:ff00::/96", "bits 64-71"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("fe80::/64", "link-local"),
        ("ff0e::/96", "multicast"),
        ("::/96", "unspecified or loopback"),
        ("192.0.2.0/24", "not an IPv6 prefix"),
        ("", "not an IPv6 prefix"),
        (ipaddress.IPv6Network("2001:db8::/80"), "RFC 6052 allows"),
    ],
)
def test_parse_prefix_refuses_and_says_why(value: object, message: str) -> None:
    with pytest.raises(rfc6052.PrefixError, match=message):
        rfc6052.parse_prefix(value)  # type: ignore[arg-type]


def test_xlat_config_takes_the_prefix_as_text_or_parsed_and_applies_the_same_rules() -> None:
    network = ipaddress.IPv6Network("2001:db8:122:344::/96")
    t = Translator(XlatConfig(pool6=network))
    out = parse6(only(t.translate(v4(UDP(), dst="192.0.2.33"))))
    assert out.dst == "2001:db8:122:344::c000:221"
    assert XlatConfig(pool6="64:ff9b::/96").pool6 == "64:ff9b::/96"  # the public API: text
    with pytest.raises(ValueError, match=r"XlatConfig\.pool6=.*link-local"):
        XlatConfig(pool6="fe80::/64")
    t.update_pool6(ipaddress.IPv6Network("64:ff9b::/96"))
    assert parse6(only(t.translate(v4(UDP(), dst="192.0.2.33")))).dst == "64:ff9b::c000:221"


# ---- RFC 7050 §3: the prefix from the answers for ipv4only.arpa --------------------------------

PREFIXES = [
    "2001:db8:64::/96",
    "64:ff9b::/96",
    "2001:db8:6464::/64",
    "2001:db8:100::/56",
    "2001:db8:100::/48",
    "2001:db8:100::/40",
    "2001:db8::/32",
]


def test_the_well_known_name_and_addresses_are_rfc_7050s() -> None:
    assert rfc6052.WELL_KNOWN_NAME == "ipv4only.arpa."
    assert [str(a) for a in rfc6052.WELL_KNOWN_IPV4] == ["192.0.0.170", "192.0.0.171"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("wka", ["192.0.0.170", "192.0.0.171"])
def test_prefix_of_finds_the_wka_at_every_rfc6052_position(prefix: str, wka: str) -> None:
    found = rfc6052.prefix_of(_embed_by_hand(prefix, wka))
    assert found == ipaddress.IPv6Network(prefix)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        (_embed_by_hand("2001:db8:64::/96", "192.0.2.1"), "no well-known address"),
        (ipaddress.IPv6Address("2001:db8::1"), "no well-known address"),
        # A /96 whose u-octet is not zero: the DNS64 answer is refused, saying why.
        (_embed_by_hand("2001:db8:0:0:ff00::/96", "192.0.0.170"), "u-octet"),
        (
            ipaddress.IPv6Address(int(_embed_by_hand("2001:db8:6464::/64", "192.0.0.170")) | 1),
            "suffix",
        ),
        (_embed_by_hand("fe80::/96", "192.0.0.170"), "link-local"),
        (_embed_by_hand("::ffff:0:0/96", "192.0.0.171"), "IPv4-mapped"),
        # The well-known value inside the prefix too: RFC 7050 §3 wants it found once only.
        (_embed_by_hand("2001:db8:c000:aa::/96", "192.0.0.170"), "several positions"),
    ],
)
def test_prefix_of_refuses_with_a_reason(address: ipaddress.IPv6Address, why: str) -> None:
    with pytest.raises(rfc6052.PrefixError, match=why):
        rfc6052.prefix_of(address)


def test_search_keeps_answer_order_without_duplicates_and_tells_the_refused() -> None:
    bad = _embed_by_hand("2001:db8:0:0:100::/96", "192.0.0.170")
    found = rfc6052.search(
        [
            str(_embed_by_hand("2001:db8:64::/96", "192.0.0.170")),
            _embed_by_hand("2001:db8:64::/96", "192.0.0.171"),
            bad,
            str(_embed_by_hand("2001:db8:6464::/64", "192.0.0.170")),
            "not-an-address",
        ]
    )
    assert found.prefixes == (
        ipaddress.IPv6Network("2001:db8:64::/96"),
        ipaddress.IPv6Network("2001:db8:6464::/64"),
    )
    assert len(found.refused) == 2
    assert found.refused[0].startswith(f"{bad}: prefix 2001:db8:0:0:100::/96: RFC 6052 §2.2")
    assert found.refused[1] == "not-an-address: not an IPv6 address"
