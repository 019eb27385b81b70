"""RFC 6052 §2.2: IPv4-embedded IPv6 addresses, every prefix length, both directions."""

import ipaddress

import pytest
from clat_translator.xlat import drops
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
