"""The kernel program against the reference, packet by packet (BPF_PROG_TEST_RUN).

Every packet the program translates (TC_ACT_REDIRECT) must equal `Translator.translate`'s one
output byte for byte; every packet it passes (TC_ACT_OK) must come out unchanged. And which of
the two happens is decided here, independently of the C code, from issue 11's list of what the
kernel path takes: `kernel_takes` below. Packets: hypothesis-generated ones around every rule,
and every packet the RFC-section tests of tests/xlat hand to the translator.

The one field the reference does not fix is the IPv4 Identification of DF-clear packets
(RFC 7915 §5.1: any fresh value; the core draws it at random, the program with
bpf_get_prandom_u32): the reference is given the program's value, and a separate test checks
that the program's values vary.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clat_translator.bpf import BpfProgram, KernelConfig
from clat_translator.bpf.loader import TC_ACT_OK, TC_ACT_REDIRECT, run_test_packet
from clat_translator.xlat import Translator, XlatConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Raw

from tests.xlat.xlat_helpers import CLAT_V4, CLAT_V6

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
LOCAL_V4 = "192.0.0.2"
RESERVED4 = [
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
]
ICMP_SUMMED_MAX = 2048  # the program sums ICMP messages up to this size, in 4-byte words


def sidecar_config(pool6: str = "64:ff9b::/96", ipv6_mtu: int = 1500) -> XlatConfig:
    """The XlatConfig runner.py's _make_translator builds."""
    return XlatConfig(
        pool6=pool6,
        eamt=[(f"{CLAT_V4}/32", f"{CLAT_V6}/128")],
        local_ipv4=LOCAL_V4,
        rfc6791v4="192.0.0.8",
        amend_udp_checksum_zero=True,
        ipv6_mtu=ipv6_mtu,
        ipv4_mtu=65535,
    )


# ---- what the kernel path takes (issue 11, "Deliver / The program") -------------------------


def _sum16(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    return sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)) % 0xFFFF


def _no_form4(a: ipaddress.IPv4Address) -> bool:
    """IPv4 addresses the sidecar never maps through the prefix, or that are its own."""
    return any(a in n for n in RESERVED4) or str(a) in (LOCAL_V4, CLAT_V4)


def _v4_octets(pool6: ipaddress.IPv6Network) -> list[int]:
    """RFC 6052 §2.2: where the IPv4 octets sit after the prefix, skipping the u-octet."""
    return [i for i in range(pool6.prefixlen // 8, 16) if i != 8][:4]


def _embedded4(a6: bytes, pool6: ipaddress.IPv6Network) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a pool6 address (u-octet and suffix ignored)."""
    if ipaddress.IPv6Address(a6) not in pool6:
        return None
    return ipaddress.IPv4Address(bytes(a6[i] for i in _v4_octets(pool6)))


def _embed(pool6: str, v4: str | ipaddress.IPv4Address) -> bytes:
    """The IPv4-embedded IPv6 address of `v4` (u-octet and suffix zero)."""
    net = ipaddress.IPv6Network(pool6)
    a = bytearray(net.network_address.packed)
    for i, b in zip(_v4_octets(net), ipaddress.IPv4Address(v4).packed, strict=True):
        a[i] = b
    return bytes(a)


def _checksum_edge(proto: int, l4: bytes, at: int, old_addrs: bytes, new_addrs: bytes) -> bool:
    """TCP checksum 0xFFFF (never valid) with an address change that sums to zero: the one
    place where two correct RFC 1624 updates write different zeros. Left to userspace."""
    return (
        proto == 6
        and l4[at : at + 2] == b"\xff\xff"
        and (_sum16(new_addrs) - _sum16(old_addrs)) % 0xFFFF == 0
    )


def kernel_takes(pkt: bytes, cfg: XlatConfig) -> bool:
    """True when issue 11 puts `pkt` on the kernel path with this configuration."""
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        return _takes46(pkt, cfg)
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return _takes64(pkt, cfg)
    return False


def _takes46(pkt: bytes, cfg: XlatConfig) -> bool:
    n = len(pkt)
    flags = int.from_bytes(pkt[6:8], "big")
    src, dst = ipaddress.IPv4Address(pkt[12:16]), ipaddress.IPv4Address(pkt[16:20])
    proto, l4 = pkt[9], pkt[20:]
    if (
        pkt[0] != 0x45  # no options
        or int.from_bytes(pkt[2:4], "big") != n
        or _sum16(pkt[:20])  # a wrong header checksum
        or flags & 0x3FFF  # a fragment
        or str(src) != CLAT_V4  # anti-spoofing: only the CLAT's address
        or _no_form4(dst)
        or pkt[8] <= 1  # TTL expires here
        or n + 20 > (cfg.ipv6_mtu if flags & 0x4000 else cfg.lowest_ipv6_mtu)  # §4.1 sizes
    ):
        return False
    addrs6 = ipaddress.IPv6Address(CLAT_V6).packed + _embed(str(cfg.pool6), dst)
    if proto == 6:
        return n >= 40 and not _checksum_edge(6, l4, 16, pkt[12:20], addrs6)
    if proto == 17:
        return n >= 28 and l4[6:8] != b"\0\0"  # a zero checksum must be computed
    if proto == 1:
        return (
            n >= 28
            and l4[0] in (0, 8)  # echo reply / request
            and len(l4) % 4 == 0
            and len(l4) <= ICMP_SUMMED_MAX
            and _sum16(l4) == 0
        )
    return False


def _takes64(pkt: bytes, cfg: XlatConfig) -> bool:
    n = len(pkt)
    plen, nh, hop = int.from_bytes(pkt[4:6], "big"), pkt[6], pkt[7]
    src6, dst6, l4 = pkt[8:24], pkt[24:40], pkt[40:]
    src4 = _embedded4(src6, ipaddress.IPv6Network(cfg.pool6))
    if (
        plen + 40 != n
        or nh not in (6, 17, 58)  # extension headers, other protocols
        or dst6 != ipaddress.IPv6Address(CLAT_V6).packed
        or src6 == dst6
        or src4 is None
        or _no_form4(src4)
        or hop <= 1
        or n - 20 > cfg.ipv4_mtu
    ):
        return False
    addrs4 = src4.packed + ipaddress.IPv4Address(CLAT_V4).packed
    if nh == 6:
        return n >= 60 and not _checksum_edge(6, l4, 16, pkt[8:40], addrs4)
    if nh == 17:
        return n >= 48 and l4[6:8] != b"\0\0"
    pseudo = _sum16(pkt[8:40]) + 58 + plen
    return (
        n >= 48
        and l4[0] in (128, 129)
        and plen % 4 == 0
        and plen <= ICMP_SUMMED_MAX
        and (_sum16(l4) + pseudo) % 0xFFFF == 0
        # an ICMPv4 message summing to 0 mod 0xFFFF: all zero (field 0xFFFF) or not (0x0000)
        and (((8 if l4[0] == 128 else 0) << 8 | l4[1]) + _sum16(l4[4:])) % 0xFFFF != 0
    )


# ---- the comparison ------------------------------------------------------------------------


def check(program: BpfProgram, translator: Translator, pkt: bytes) -> int:
    """Run `pkt` through both and assert the contract; returns the program's verdict."""
    verdict, out = run_test_packet(program, pkt)
    takes = kernel_takes(pkt, translator.config)
    if verdict == TC_ACT_OK:
        assert out == pkt, "a passed packet must reach userspace unchanged"
        assert not takes, f"the kernel path should have translated {pkt.hex()}"
        return verdict
    assert verdict == TC_ACT_REDIRECT, f"verdict {verdict} for {pkt.hex()}"
    assert takes, f"the kernel path translated what it must leave alone: {pkt.hex()}"
    if out[0] >> 4 == 4:
        ident = int.from_bytes(out[4:6], "big")
        translator._ctx.next_ident = lambda: ident  # type: ignore[method-assign]
    result = translator.translate(pkt)
    assert result.drop is None and result.back == [], (result, pkt.hex())
    assert result.out == [out], f"\nin   {pkt.hex()}\nbpf  {out.hex()}\nref  {result.out}"
    return verdict


PREFIXES = [
    "64:ff9b::/96",
    "2001:db8:64::/96",
    "2001:db8:6400::/64",
    "2001:db8:600::/56",
    "2001:db8:1::/48",
    "2001:db8:100::/40",
    "2001:db8::/32",
]


@pytest.fixture(params=PREFIXES)
def pool6(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(program: BpfProgram, pool6: str) -> tuple[BpfProgram, Translator]:
    config = sidecar_config(pool6)
    program.configure(KernelConfig.from_xlat(config), tun_ifindex=1, l3_offset=14)
    return program, Translator(config)


def _synth(pool6: str, v4: str) -> str:
    return str(ipaddress.IPv6Address(_embed(pool6, v4)))


# ---- hypothesis: packets around every rule ----------------------------------------------------

routable4 = st.one_of(
    st.sampled_from(["203.0.113.10", "198.51.100.7", "8.8.8.8", "192.0.0.8"]),
    st.ip_addresses(v=4).map(str),
)
no_form4 = st.sampled_from(
    [LOCAL_V4, CLAT_V4, "0.1.2.3", "127.0.0.1", "169.254.1.1", "224.0.0.1", "255.255.255.255"]
)
sizes = st.one_of(
    st.integers(0, 64),
    st.integers(1180, 1300),  # around the 1260 / 1280 limits
    st.integers(1400, 1480),  # around the uplink MTU
    st.integers(0, 2100),
)
payloads = sizes.map(lambda k: bytes((i * 7 + 3) & 0xFF for i in range(k)))
checksums = st.one_of(st.none(), st.none(), st.sampled_from([0, 0xFFFF]), st.integers(0, 0xFFFF))
# Most packets are plain ones the kernel path takes; each of the rest breaks one rule.
FAULTS4 = ["none"] * 12 + [
    "source", "destination", "ttl", "mf", "offset", "evil-bit", "options", "header-checksum",
    "padding", "truncated", "protocol",
]  # fmt: skip
FAULTS6 = ["none"] * 12 + [
    "source-outside", "source-clat", "source-no-form", "u-octet", "destination", "hop-limit",
    "padding", "truncated", "protocol", "extension",
]  # fmt: skip


@st.composite
def ipv4_packets(draw: st.DrawFn) -> bytes:
    payload = draw(payloads)
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "udp", "echo", "echo", "icmp"]))
    fault = draw(st.sampled_from(FAULTS4))
    if kind == "tcp":
        l4 = TCP(sport=draw(st.integers(1, 65535)), dport=443, flags="PA", chksum=draw(checksums))
    elif kind == "udp":
        l4 = UDP(sport=draw(st.integers(1, 65535)), dport=53, chksum=draw(checksums))
    elif kind == "echo":
        l4 = ICMP(type=draw(st.sampled_from([0, 8])), id=draw(st.integers(0, 65535)), seq=1)
        l4.chksum = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 0xFFFF)))
        payload = payload[: draw(st.sampled_from([len(payload), len(payload) & ~3]))]
    else:
        l4 = ICMP(type=draw(st.sampled_from([3, 11, 12, 13, 17])), code=draw(st.integers(0, 4)))
    ip = IP(
        src=CLAT_V4,
        dst=draw(no_form4 if fault == "destination" else routable4),
        tos=draw(st.integers(0, 255)),
        ttl=draw(st.sampled_from([0, 1]) if fault == "ttl" else st.sampled_from([2, 64, 255])),
        flags=draw(st.sampled_from([0, 2, 2])) | {"mf": 1, "evil-bit": 4}.get(fault, 0),
        frag=draw(st.integers(1, 8000)) if fault == "offset" else 0,
        id=draw(st.integers(0, 65535)),
    )
    if fault == "source":
        ip.src = draw(st.sampled_from(["192.0.0.9", "10.0.0.1", "203.0.113.10"]))
    if fault == "protocol":
        ip.proto = draw(st.sampled_from([47, 58, 132, 255]))
    if fault == "options":
        ip.options = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    pkt = bytearray(bytes(ip / l4 / Raw(payload)))
    if fault == "header-checksum":
        pkt[10] ^= 1 << draw(st.integers(0, 7))
    elif fault == "padding":
        pkt += bytes(draw(st.integers(1, 8)))
    elif fault == "truncated":
        del pkt[-draw(st.integers(1, 3)) :]
    return bytes(pkt)


@st.composite
def ipv6_packets(draw: st.DrawFn, pool6: str) -> bytes:
    payload = draw(payloads)
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "udp", "echo", "echo", "icmp"]))
    fault = draw(st.sampled_from(FAULTS6))
    if kind == "tcp":
        l4 = TCP(sport=443, dport=draw(st.integers(1, 65535)), flags="A", chksum=draw(checksums))
    elif kind == "udp":
        l4 = UDP(sport=53, dport=draw(st.integers(1, 65535)), chksum=draw(checksums))
    elif kind == "echo":
        cls = draw(st.sampled_from([ICMPv6EchoRequest, ICMPv6EchoReply]))
        l4 = cls(id=draw(st.integers(0, 65535)), seq=2)
        l4.cksum = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 0xFFFF)))
        payload = payload[: draw(st.sampled_from([len(payload), len(payload) & ~3]))]
    else:
        l4 = draw(st.sampled_from([ICMPv6DestUnreach(), ICMPv6PacketTooBig(mtu=1280)]))
    if fault == "extension":
        head = draw(st.sampled_from([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment]))
        l4 = head() / l4
    src = _synth(pool6, draw(no_form4 if fault == "source-no-form" else routable4))
    if fault == "source-outside":
        src = draw(st.sampled_from(["2001:db8:ffff::1", "::1", "fd00:c1a7::2"]))
    elif fault == "source-clat":
        src = CLAT_V6
    elif fault == "u-octet":  # the u-octet and suffix are ignored on the way in
        raw = bytearray(ipaddress.IPv6Address(src).packed)
        raw[8] |= draw(st.integers(1, 255))
        raw[15] |= draw(st.integers(0, 255)) if ipaddress.IPv6Network(pool6).prefixlen < 96 else 0
        src = str(ipaddress.IPv6Address(bytes(raw)))
    ip = IPv6(
        src=src,
        dst=CLAT_V6,
        tc=draw(st.integers(0, 255)),
        fl=draw(st.integers(0, 0xFFFFF)),
        hlim=draw(st.sampled_from([0, 1]) if fault == "hop-limit" else st.sampled_from([2, 64])),
    )
    if fault == "destination":
        ip.dst = draw(st.sampled_from(["fd00:c1a7::2", _synth(pool6, CLAT_V4), "::1"]))
    if fault == "protocol":
        ip.nh = draw(st.sampled_from([1, 47, 59, 132]))
    pkt = bytearray(bytes(ip / l4 / Raw(payload)))
    if fault == "padding":
        pkt += bytes(draw(st.integers(1, 8)))
    elif fault == "truncated":
        del pkt[-draw(st.integers(1, 3)) :]
    return bytes(pkt)


HYPOTHESIS = settings(
    max_examples=int(os.environ.get("CLAT_BPF_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(data=st.data())
def test_ipv4_packets_match_the_reference(
    pair: tuple[BpfProgram, Translator], data: st.DataObject
) -> None:
    program, translator = pair
    check(program, translator, data.draw(ipv4_packets()))


@HYPOTHESIS
@given(data=st.data())
def test_ipv6_packets_match_the_reference(
    pair: tuple[BpfProgram, Translator], pool6: str, data: st.DataObject
) -> None:
    program, translator = pair
    check(program, translator, data.draw(ipv6_packets(pool6)))


@pytest.mark.parametrize("ipv6_mtu", [1280, 1400, 1500, 9000])
def test_the_size_rules_follow_the_mtus(program: BpfProgram, ipv6_mtu: int) -> None:
    """§4.1: DF set fits the uplink, DF clear fits 1280; §5.1: DF above 1260 bytes."""
    config = sidecar_config(ipv6_mtu=ipv6_mtu)
    program.configure(KernelConfig.from_xlat(config), tun_ifindex=1, l3_offset=14)
    translator = Translator(config)
    seen = set()
    for size in range(1180, min(ipv6_mtu, 1600), 4):
        for flags in (0, 2):
            pkt = bytes(
                IP(src=CLAT_V4, dst="203.0.113.10", flags=flags) / UDP() / Raw(bytes(size - 28))
            )
            seen.add(check(program, translator, pkt))
        reply = bytes(IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6) / TCP() / Raw(bytes(size - 60)))
        seen.add(check(program, translator, reply))
    assert seen == {TC_ACT_OK, TC_ACT_REDIRECT}


# ---- the RFC-section packets of tests/xlat ---------------------------------------------------


@pytest.fixture(scope="module")
def xlat_packets(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Every packet tests/xlat's RFC-section and fast-path tests translate."""
    out = tmp_path_factory.mktemp("xlat") / "packets.hex"
    tests = sorted(str(p) for p in (REPO / "tests" / "xlat").glob("test_xlat_rfc*.py"))
    tests.append(str(REPO / "tests" / "xlat" / "test_xlat_fastpath.py"))
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-p", "tests.bpf.record_xlat_packets", *tests],
        cwd=REPO,
        env={**os.environ, "CLAT_RECORD_PACKETS": str(out)},
        check=True,
        capture_output=True,
    )
    unique = dict.fromkeys(bytes.fromhex(line) for line in out.read_text().split())
    return list(unique)


@pytest.mark.parametrize("pool6", ["64:ff9b::/96", "2001:db8:64::/96"])
def test_the_rfc_section_packets_match_the_reference(
    program: BpfProgram, xlat_packets: list[bytes], pool6: str
) -> None:
    config = sidecar_config(pool6)
    program.configure(KernelConfig.from_xlat(config), tun_ifindex=1, l3_offset=14)
    translator = Translator(config)
    verdicts = [check(program, translator, pkt) for pkt in xlat_packets]
    assert len(xlat_packets) > 500
    if pool6 == "64:ff9b::/96":  # the prefix tests/xlat builds its packets for
        assert verdicts.count(TC_ACT_REDIRECT) > 50, verdicts.count(TC_ACT_REDIRECT)
        assert verdicts.count(TC_ACT_OK) > 300, verdicts.count(TC_ACT_OK)


# ---- the fields the reference leaves free, and the rest of the contract -----------------------


def test_df_clear_identifications_vary(program: BpfProgram) -> None:
    """RFC 7915 §5.1 / RFC 6864: a fresh Identification per DF-clear packet (a small ping
    reply); random like the core's, so not one value over and over."""
    program.configure(KernelConfig.from_xlat(sidecar_config()), tun_ifindex=1, l3_offset=14)
    reply = bytes(
        IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6) / ICMPv6EchoReply(id=7, seq=1, data=bytes(56))
    )
    idents = set()
    for _ in range(32):
        verdict, out = run_test_packet(program, reply)
        assert verdict == TC_ACT_REDIRECT and out[6] & 0x40 == 0  # DF clear
        idents.add(out[4:6])
    assert len(idents) > 16


def test_a_prefix_change_applies_to_the_next_packet(program: BpfProgram) -> None:
    old, new = sidecar_config("64:ff9b::/96"), sidecar_config("2001:db8:64::/96")
    program.configure(KernelConfig.from_xlat(old), tun_ifindex=1, l3_offset=14)
    reply_old = bytes(IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6) / TCP() / Raw(b"x"))
    reply_new = bytes(IPv6(src="2001:db8:64::cb00:710a", dst=CLAT_V6) / TCP() / Raw(b"x"))
    request = bytes(IP(src=CLAT_V4, dst="203.0.113.10", flags=2) / TCP() / Raw(b"x"))
    assert run_test_packet(program, reply_old)[0] == TC_ACT_REDIRECT
    assert run_test_packet(program, reply_new)[0] == TC_ACT_OK
    program.configure(KernelConfig.from_xlat(new), tun_ifindex=1, l3_offset=14)
    assert run_test_packet(program, reply_old)[0] == TC_ACT_OK
    assert run_test_packet(program, reply_new)[0] == TC_ACT_REDIRECT
    verdict, out = run_test_packet(program, request)
    assert verdict == TC_ACT_REDIRECT
    assert IPv6(out).dst == "2001:db8:64::cb00:710a"


def test_udp46_userspace_leaves_upstream_udp_to_userspace(program: BpfProgram) -> None:
    """With the flag, IPv4 UDP passes unchanged (counted as udp-userspace); TCP up and UDP
    down stay in the kernel, byte-identical to the reference."""
    config = sidecar_config()
    translator = Translator(config)
    kernel = KernelConfig.from_xlat(config, udp46_userspace=True)
    program.configure(kernel, tun_ifindex=1, l3_offset=14)
    try:
        up = bytes(IP(src=CLAT_V4, dst="203.0.113.10", flags=2) / UDP() / Raw(bytes(100)))
        before = program.counters().passed["udp-userspace"]
        assert run_test_packet(program, up) == (TC_ACT_OK, up)
        assert program.counters().passed["udp-userspace"] == before + 1
        tcp_up = bytes(IP(src=CLAT_V4, dst="203.0.113.10", flags=2) / TCP() / Raw(b"x"))
        udp_down = bytes(IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6) / UDP() / Raw(bytes(100)))
        for pkt in (tcp_up, udp_down):
            assert check(program, translator, pkt) == TC_ACT_REDIRECT
    finally:
        program.configure(KernelConfig.from_xlat(config), tun_ifindex=1, l3_offset=14)


def test_udp64_userspace_leaves_downstream_udp_to_userspace(program: BpfProgram) -> None:
    config = sidecar_config()
    translator = Translator(config)
    kernel = KernelConfig.from_xlat(config, udp64_userspace=True)
    program.configure(kernel, tun_ifindex=1, l3_offset=14)
    try:
        down = bytes(IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6) / UDP() / Raw(bytes(100)))
        before = program.counters().passed["udp-userspace"]
        assert run_test_packet(program, down) == (TC_ACT_OK, down)
        assert program.counters().passed["udp-userspace"] == before + 1
        udp_up = bytes(IP(src=CLAT_V4, dst="203.0.113.10", flags=2) / UDP() / Raw(bytes(100)))
        tcp_down = bytes(IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6) / TCP() / Raw(b"x"))
        for pkt in (udp_up, tcp_down):
            assert check(program, translator, pkt) == TC_ACT_REDIRECT
    finally:
        program.configure(KernelConfig.from_xlat(config), tun_ifindex=1, l3_offset=14)


@pytest.mark.parametrize("superpacket_df", [True, False])
@pytest.mark.parametrize("last", [1, 500, 1208, 1209, 1300])
def test_a_superpacket_with_a_small_last_segment(
    program: BpfProgram, superpacket_df: bool, last: int
) -> None:
    """A TCP super-packet down (gso_size 1300, a full segment 1352 bytes as IPv4, DF): a last
    segment of 1260 bytes or less would be DF-clear alone (§5.1). With superpacket_df it is
    translated whole with DF, the bytes of `translate` on the super-packet as one packet;
    without, it is passed to userspace unchanged, counted as gso."""
    config = sidecar_config()
    kernel = KernelConfig.from_xlat(config)
    kernel = KernelConfig(**{**kernel.__dict__, "superpacket_df": superpacket_df})
    program.configure(kernel, tun_ifindex=1, l3_offset=14)
    try:
        gso = 1300  # BPF_PROG_TEST_RUN takes at most a page: two segments
        payload = (bytes(range(256)) * 11)[: gso + last]
        options = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
        pkt = bytes(
            IPv6(src="64:ff9b::cb00:710a", dst=CLAT_V6)
            / TCP(sport=443, dport=40000, flags="A", options=options)
            / Raw(payload)
        )
        small_last = 20 + 32 + last <= 1260
        before = program.counters().passed["gso"]
        verdict, out = run_test_packet(program, pkt, gso_size=gso, gso_segs=2)
        if small_last and not superpacket_df:
            assert (verdict, out) == (TC_ACT_OK, pkt)
            assert program.counters().passed["gso"] == before + 1
            return
        assert verdict == TC_ACT_REDIRECT
        assert out[6] & 0x40 and out[4:6] == b"\0\0"  # DF, ID 0 (RFC 6864)
        assert Translator(config).translate(pkt).out == [out]
    finally:
        program.configure(KernelConfig.from_xlat(config), tun_ifindex=1, l3_offset=14)
