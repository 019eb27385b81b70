"""The public API of the core: XlatConfig validation, DROP_REASONS, TranslateResult."""

import re

import pytest
from clat_translator.xlat import DROP_REASONS, RFC1191_PLATEAUS, Translator, XlatConfig, drops


def test_defaults_match_the_architecture_table() -> None:
    c = XlatConfig()
    assert c.pool6 == "64:ff9b::/96"
    assert list(c.eamt) == []
    assert (c.local_ipv4, c.local_ipv6) == ("192.0.0.2", None)
    assert (c.rfc6791v4, c.rfc6791v6) == (None, None)
    assert (c.lowest_ipv6_mtu, c.ipv4_mtu, c.ipv6_mtu) == (1280, 1500, 1500)
    assert c.amend_udp_checksum_zero is False
    assert (c.reset_traffic_class, c.reset_tos, c.new_tos) == (False, False, 0)
    assert tuple(c.mtu_plateaus) == RFC1191_PLATEAUS
    assert c.eam_hairpin_mode == "intrinsic"
    assert list(c.denylist4) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pool6", "64:ff9b::/95"),
        ("pool6", "64:ff9b::1/96"),  # host bits set
        ("pool6", "2001:db8:0:0:100::/96"),  # RFC 6052 u-octet not zero
        ("pool6", "not a prefix"),
        ("pool6", "192.0.2.0/24"),
        ("eamt", [("192.0.2.0/24", "2001:db8::/128")]),  # IPv6 suffix too short
        ("eamt", [("192.0.2.0/24",)]),
        ("eamt", "192.0.2.1=2001:db8::1"),
        ("eamt", [("2001:db8::/64", "192.0.2.0/24")]),
        ("local_ipv4", "::1"),
        ("local_ipv6", "192.0.0.2"),
        ("rfc6791v4", "nope"),
        ("rfc6791v6", "1.2.3.4"),
        ("lowest_ipv6_mtu", 1279),
        ("lowest_ipv6_mtu", 2**32),  # wider than the 32-bit MTU fields
        ("ipv4_mtu", 67),
        ("ipv6_mtu", 1000),
        ("ipv6_mtu", "1500"),
        ("ipv6_mtu", 2**32),
        ("ipv4_mtu", 65536),  # an IPv4 packet is at most 65535 bytes
        ("amend_udp_checksum_zero", "yes"),
        ("reset_tos", 1),
        ("new_tos", 256),
        ("mtu_plateaus", []),
        ("mtu_plateaus", [1500, 10]),
        ("eam_hairpin_mode", "always"),
        ("denylist4", ["10.0.0.0/33"]),
        ("denylist4", "10.0.0.0/8"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"XlatConfig\.{field}="):
        XlatConfig(**{field: value})  # type: ignore[arg-type]


def test_every_prefix_length_of_rfc6052_is_accepted() -> None:
    for prefix in (
        "2001:db8::/32",
        "2001:db8::/40",
        "2001:db8::/48",
        "2001:db8::/56",
        "2001:db8::/64",
        "2001:db8::/96",
    ):
        Translator(XlatConfig(pool6=prefix))


def test_drop_reasons_are_listed_in_one_place() -> None:
    assert isinstance(DROP_REASONS, frozenset)
    constants = {v for k, v in vars(drops).items() if k.isupper() and isinstance(v, str)}
    assert constants == DROP_REASONS
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", reason) for reason in DROP_REASONS)


@pytest.mark.parametrize(
    "junk", [b"", b"\x45", b"\x00" * 60, b"\x70" + b"\0" * 50, bytearray(b"\x45\0")]
)
def test_translate_never_raises_and_names_a_reason(junk: bytes) -> None:
    r = Translator(XlatConfig()).translate(junk)
    assert r.out == [] and r.drop in DROP_REASONS


def test_bad_version_reason() -> None:
    assert Translator(XlatConfig()).translate(b"\x50" + b"\0" * 40).drop == drops.BAD_VERSION


def test_lowest_ipv6_mtu_and_ipv6_mtu_are_independent() -> None:
    # Jool: lowest-ipv6-mtu is the smallest MTU anywhere on the IPv6 side, the next hop's may
    # be smaller still; a jumbo IPv6 link (RFC 2675) may exceed 65535.
    XlatConfig(lowest_ipv6_mtu=1500, ipv6_mtu=1280)
    XlatConfig(ipv6_mtu=78000, lowest_ipv6_mtu=9000)


def test_clat_mode_defaults_off_and_must_be_a_bool() -> None:
    assert XlatConfig().clat_mode is False
    with pytest.raises(ValueError, match=r"XlatConfig\.clat_mode="):
        XlatConfig(clat_mode=1)  # type: ignore[arg-type]
