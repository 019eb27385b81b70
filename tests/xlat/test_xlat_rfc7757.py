"""RFC 7757: the Explicit Address Mapping table, longest match both ways, and hairpinning."""

import pytest
from clat_translator.xlat import Translator, XlatConfig, drops
from scapy.layers.inet6 import ICMPv6DestUnreach
from xlat_helpers import ICMP, IP, TCP, UDP, IPv6, clat, only, parse4, parse6, refused, v4, v6

OVERLAPPING = [
    ("192.0.2.0/24", "2001:db8:aaaa::/120"),
    ("192.0.2.8/29", "2001:db8:bbbb::/125"),
    ("198.51.100.0/24", "2001:db8:cc::/120"),
    ("203.0.113.5/32", "2001:db8:cc::5/128"),
]


def _eamt(entries: list[tuple[str, str]], **config: object) -> Translator:
    return Translator(XlatConfig(pool6="64:ff9b::/96", eamt=entries, **config))


@pytest.mark.parametrize(
    ("address4", "address6"),
    [
        ("192.0.2.9", "2001:db8:bbbb::1"),  # the /29 is longer than the /24
        ("192.0.2.15", "2001:db8:bbbb::7"),
        ("192.0.2.20", "2001:db8:aaaa::14"),
        ("192.0.2.7", "2001:db8:aaaa::7"),
        ("198.51.100.6", "2001:db8:cc::6"),
    ],
)
def test_longest_ipv4_prefix_wins(address4: str, address6: str) -> None:
    t = _eamt(OVERLAPPING)
    assert parse6(only(t.translate(v4(UDP(), src=address4, dst="203.0.113.99")))).src == address6


@pytest.mark.parametrize(
    ("address6", "address4"),
    [
        ("2001:db8:cc::5", "203.0.113.5"),  # the /128 is longer than the /120
        ("2001:db8:cc::6", "198.51.100.6"),
        ("2001:db8:bbbb::3", "192.0.2.11"),
        ("2001:db8:aaaa::ff", "192.0.2.255"),
    ],
)
def test_longest_ipv6_prefix_wins(address6: str, address4: str) -> None:
    t = _eamt(OVERLAPPING)
    out = parse4(only(t.translate(v6(UDP(), src=address6, dst="2001:db8:aaaa::1"))))
    assert out.src == address4
    assert out.dst == "192.0.2.1"


def test_eam_wins_over_pool6() -> None:
    # RFC 7757 §3.3: the EAM table is consulted before RFC 6052.
    entries = [("203.0.113.10/32", "2001:db8::10/128"), ("192.0.0.1/32", "fd00::1/128")]
    t = _eamt(entries, eam_hairpin_mode="simple")
    out = parse6(only(t.translate(v4(UDP(), src="192.0.0.1", dst="203.0.113.10"))))
    assert (out.src, out.dst) == ("fd00::1", "2001:db8::10")


def test_ipv6_suffix_longer_than_ipv4_suffix() -> None:
    # RFC 7757 §3.3: the IPv4 suffix follows the IPv6 prefix; remaining bits are zero.
    t = _eamt([("192.0.2.0/24", "2001:db8:dd::/64"), ("192.0.0.1/32", "fd00::1/128")])
    out = parse6(only(t.translate(v4(UDP(), src="192.0.2.33", dst="203.0.113.1"))))
    assert out.src == "2001:db8:dd:0:2100::"
    back = parse4(only(t.translate(v6(UDP(), src="2001:db8:dd:0:2100::", dst="fd00::1"))))
    assert back.src == "192.0.2.33"


def test_eam_ignores_denylist4() -> None:
    t = _eamt([("10.0.0.1/32", "fd00::1/128")], denylist4=["10.0.0.0/8"])
    assert parse6(only(t.translate(v4(UDP(), src="10.0.0.1", dst="192.0.2.1")))).src == "fd00::1"


def test_ipv6_address_in_neither_table_is_untranslatable() -> None:
    t = _eamt(OVERLAPPING)
    refused(
        t.translate(v6(UDP(), src="2001:db8:cc::1:1", dst="2001:db8:aaaa::1")),
        drops.UNTRANSLATABLE_SOURCE,
    )


# -- hairpinning (RFC 7757 §4.2) -------------------------------------------------------------------

A6, A4 = "2001:db8:a::1", "192.0.2.1"
B6, B4 = "2001:db8:b::1", "192.0.2.2"
A4_POOL6, B4_POOL6 = "64:ff9b::c000:201", "64:ff9b::c000:202"
HOSTS = [(f"{A4}/32", f"{A6}/128"), (f"{B4}/32", f"{B6}/128")]


@pytest.mark.parametrize("mode", ["simple", "intrinsic"])
def test_hairpinned_exchange(mode: str) -> None:
    t = _eamt(HOSTS, eam_hairpin_mode=mode)
    # A knows B only by its IPv4 address (as DNS64 synthesized it).
    r = t.translate(v6(UDP(sport=1000, dport=53) / b"q", src=A6, dst=B4_POOL6, hlim=10))
    assert r.drop is None and r.out == []
    to_b = parse6(r.back[0])
    # B sees A's pool6 form, so its reply comes back through the translator.
    assert (to_b.src, to_b.dst, to_b.hlim) == (A4_POOL6, B6, 9)
    assert bytes(to_b[UDP].payload) == b"q"
    r = t.translate(v6(UDP(sport=53, dport=1000) / b"a", src=B6, dst=to_b.src))
    to_a = parse6(r.back[0])
    assert (to_a.src, to_a.dst) == (B4_POOL6, A6)


def test_hairpinning_off_sends_the_packet_out_as_ipv4() -> None:
    t = _eamt(HOSTS, eam_hairpin_mode="off")
    out = parse4(only(t.translate(v6(UDP(), src=A6, dst=B4_POOL6))))
    assert (out.src, out.dst) == (A4, B4)


@pytest.mark.parametrize("mode", ["off", "simple", "intrinsic"])
def test_source_with_an_eam_uses_it_whatever_the_destination(mode: str) -> None:
    # RFC 7757 §3.3: an EAM source translates through its entry; only a hairpinned packet
    # (§4.2) takes its source from pool6, and A4 -> B4 arriving as IPv4 is not one.
    out = parse6(only(_eamt(HOSTS, eam_hairpin_mode=mode).translate(v4(UDP(), src=A4, dst=B4))))
    assert (out.src, out.dst) == (A6, B6)


def test_clat_configuration_is_not_affected_by_hairpinning() -> None:
    out = parse6(only(clat().translate(v4(UDP()))))
    assert out.src == "fd00:c1a7::1"
    assert isinstance(out, IPv6)


# -- RFC 7757 §3.3 with no pool6: both hosts in the EAM table ---------------------------------

V6HOST6, V6HOST4 = "2001:db8:a::1", "192.0.2.1"  # an IPv6 host known to IPv4 by its EAM
V4HOST4, V4HOST6 = "198.51.100.2", "2001:db8:b::2"  # an IPv4 host known to IPv6 by its EAM
EAM_ONLY = [(f"{V6HOST4}/32", f"{V6HOST6}/128"), (f"{V4HOST4}/32", f"{V4HOST6}/128")]


def _eam_only() -> Translator:
    return Translator(XlatConfig(pool6=None, eamt=EAM_ONLY))


@pytest.mark.parametrize(
    "l4",
    [TCP(sport=1, dport=2, flags="S"), UDP(sport=3, dport=4) / b"u", ICMP(type=8) / b"ping"],
    ids=["tcp", "udp", "echo"],
)
def test_eam_only_configuration_translates_ordinary_traffic(l4: object) -> None:
    out = parse6(only(_eam_only().translate(v4(l4, src=V4HOST4, dst=V6HOST4))))
    assert (out.src, out.dst) == (V4HOST6, V6HOST6)
    back = parse4(only(_eam_only().translate(v6(UDP() / b"r", src=V6HOST6, dst=V4HOST6))))
    assert (back.src, back.dst) == (V6HOST4, V4HOST4)


@pytest.mark.parametrize(("icmp_type", "code"), [(3, 1), (3, 3), (3, 4), (11, 0), (12, 0)])
def test_eam_only_configuration_translates_icmp_errors(icmp_type: int, code: int) -> None:
    # The IPv6 host's packet went out as V6HOST4 -> V4HOST4; V4HOST4 answers with an error.
    quoted = IP(src=V6HOST4, dst=V4HOST4, ttl=7) / UDP(sport=5, dport=6) / b"q"
    fields = {"nexthopmtu": 1400} if (icmp_type, code) == (3, 4) else {}
    error = v4(ICMP(type=icmp_type, code=code, **fields) / bytes(quoted), src=V4HOST4, dst=V6HOST4)
    out = parse6(only(_eam_only().translate(error)))
    assert (out.src, out.dst) == (V4HOST6, V6HOST6)
    inner = IPv6(bytes(out.payload)[8:])
    assert (inner.src, inner.dst) == (V6HOST6, V4HOST6)


OVERLAPPING_SOURCES = [
    ("10.0.0.0/16", "2001:db8:1::/112"),
    ("10.0.1.0/24", "2001:db8:2::/120"),
    ("10.0.1.1/32", "2001:db8:3::1/128"),
    (f"{V6HOST4}/32", f"{V6HOST6}/128"),
]


@pytest.mark.parametrize(
    ("source4", "source6"),
    [("10.0.1.1", "2001:db8:3::1"), ("10.0.1.7", "2001:db8:2::7"), ("10.0.2.3", "2001:db8:1::203")],
)
@pytest.mark.parametrize("pool6", ["64:ff9b::/96", None])
def test_source_takes_the_longest_eam_match_when_the_destination_is_an_eam(
    source4: str, source6: str, pool6: str | None
) -> None:
    t = Translator(XlatConfig(pool6=pool6, eamt=OVERLAPPING_SOURCES))
    out = parse6(only(t.translate(v4(UDP(), src=source4, dst=V6HOST4))))
    assert (out.src, out.dst) == (source6, V6HOST6)


@pytest.mark.parametrize("mode", ["simple", "intrinsic"])
def test_hairpinned_icmp_error_mirrors_the_hairpinned_packet(mode: str) -> None:
    # RFC 7757 §4.2: B answers A's hairpinned packet (A4_POOL6 -> B6) with an error; the
    # error is hairpinned too and reaches A as coming from B4_POOL6, quoting A6 -> B4_POOL6.
    quoted = IPv6(src=A4_POOL6, dst=B6, hlim=5) / UDP(sport=1000, dport=53) / b"q"
    error = v6(ICMPv6DestUnreach(code=4) / bytes(quoted), src=B6, dst=A4_POOL6)
    r = _eamt(HOSTS, eam_hairpin_mode=mode).translate(error)
    assert r.drop is None and r.out == []
    to_a = parse6(r.back[0])
    assert (to_a.src, to_a.dst) == (B4_POOL6, A6)
    inner = IPv6(bytes(to_a.payload)[8:])
    assert (inner.src, inner.dst) == (A6, B4_POOL6)
