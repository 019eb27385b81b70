"""Super-packets (TSO/USO, partial checksums) through `OffloadTranslator`: after the kernel's
segmentation (tests/offload/gso.py, independent of the code under test) they are the packets
`Translator.translate` makes of each segment, and the virtio-net header says what the kernel
needs (gso type, gso size, csum_start, hdr_len)."""

from __future__ import annotations

import struct

import pytest
from clat_translator.xlat import Translator, XlatConfig
from clat_translator.xlat.offload import (
    BAD_VNET_HEADER,
    VNET_HDR,
    OffloadResult,
    OffloadTranslator,
    UdpCoalescer,
    frame_bytes,
)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt

from .gso import (
    DATA_VALID,
    ECN,
    NEEDS_CSUM,
    TCPV4,
    TCPV6,
    UDP_L4,
    checksums_valid,
    frame,
    kernel_segment,
    normalize,
    super_packet,
    tcp,
    udp,
)

CLAT_V4, CLAT_V6 = "192.0.0.1", "fd64:c1a7:464::1"
SERVER_V4, SERVER_V6 = "203.0.113.10", "2001:db8:64::cb00:710a"
SIDECAR = {  # the settings the sidecar gives the core (runner.py)
    "pool6": "2001:db8:64::/96",
    "eamt": [(f"{CLAT_V4}/32", f"{CLAT_V6}/128")],
    "local_ipv4": "192.0.0.2",
    "rfc6791v4": "192.0.0.8",
    "amend_udp_checksum_zero": True,
    "ipv6_mtu": 1500,
    "ipv4_mtu": 65535,
}


def translators(**overrides: object) -> tuple[Translator, OffloadTranslator]:
    config = XlatConfig(**(SIDECAR | overrides))  # type: ignore[arg-type]
    return Translator(config), OffloadTranslator(Translator(config))


def reference(t: Translator, frame_in: bytes, broken: bool = False) -> list[bytes]:
    """What the reference makes of the segments the kernel would have cut the frame into."""
    out: list[bytes] = []
    for segment in kernel_segment(frame_in):
        assert broken or checksums_valid(segment), "the test's own input is broken"
        r = t.translate(segment)
        out += r.out + r.back
    return [normalize(p) for p in out]


def offloaded(result: OffloadResult) -> list[bytes]:
    """What the kernel makes of the frames the offload path writes."""
    return [normalize(p) for f in result.frames for p in kernel_segment(frame_bytes(f))]


def check(frame_in: bytes, whole: bool | None = None, **config: object) -> OffloadResult:
    t, o = translators(**config)
    result = o.translate(frame_in)
    expected = reference(t, frame_in)
    got = offloaded(result)
    assert got == expected
    for packet in got:
        assert checksums_valid(packet), packet.hex()
    if whole is not None:
        assert result.offloaded is whole, result
    return result


def v4(**fields: object) -> IP:
    return IP(**({"src": CLAT_V4, "dst": SERVER_V4, "ttl": 64, "flags": "DF", "id": 7} | fields))


def v6(**fields: object) -> IPv6:
    return IPv6(**({"src": SERVER_V6, "dst": CLAT_V6, "hlim": 64} | fields))


def vnet(result: OffloadResult, index: int = 0) -> tuple[int, ...]:
    return tuple(VNET_HDR.unpack(bytes(result.frames[index][0])))


# ---- TSO / USO super-packets translated whole -----------------------------------------------


def test_tso4_becomes_tso6_in_one_frame() -> None:
    packet = super_packet(tcp(v4(tos=0x28), 64000 - 40))
    result = check(frame(packet, gso_size=1428), whole=True)
    assert len(result.frames) == 1
    flags, gso, hdr_len, gso_size, start, offset = vnet(result)
    assert (flags, gso, gso_size, start, offset) == (NEEDS_CSUM, TCPV6, 1428, 40, 16)
    assert hdr_len == 20 + 20 + 20  # IPv4 + TCP headers as the kernel said, +20 for IPv6
    assert result.segments == -(-(64000 - 40) // 1428)
    assert len(offloaded(result)) == result.segments
    out = IPv6(frame_bytes(result.frames[0])[10:])
    assert (out.src, out.dst, out.hlim, out.tc, out.plen) == (
        CLAT_V6,
        SERVER_V6,
        63,
        0x28,
        64000 - 20,
    )


def test_tso6_becomes_tso4_in_one_frame() -> None:
    packet = super_packet(tcp(v6(tc=0x10), 14 * 1408))
    result = check(frame(packet, gso_size=1408), whole=True)
    flags, gso, hdr_len, gso_size, start, offset = vnet(result)
    assert (flags, gso, gso_size, start, offset) == (NEEDS_CSUM, TCPV4, 1408, 20, 16)
    assert hdr_len == 40 + 20 - 20
    out = IP(frame_bytes(result.frames[0])[10:])
    assert (out.src, out.dst, out.ttl, out.tos, out.flags, out.id) == (
        SERVER_V4,
        CLAT_V4,
        63,
        0x10,
        "DF",
        0,
    )
    assert result.segments == 14


@pytest.mark.parametrize("payload", [1200 * 5, 1200 * 5 + 17])
def test_uso_both_ways(payload: int) -> None:
    result = check(frame(super_packet(udp(v4(), payload)), gso_size=1200), whole=True)
    assert vnet(result)[1:5] == (UDP_L4, 8 + 20 + 20, 1200, 40)
    # 1228-byte IPv4 segments: under 1260, so DF clear on every one (RFC 7915 §5.1)
    result = check(frame(super_packet(udp(v6(), payload)), gso_size=1200), whole=True)
    assert vnet(result)[1:5] == (UDP_L4, 8 + 40 - 20, 1200, 20)
    assert IP(frame_bytes(result.frames[0])[10:]).flags == 0


def test_ecn_gso_flag_is_kept() -> None:
    packet = super_packet(tcp(v4(tos=0x02), 4 * 1400, options=[]))
    result = check(frame(packet, gso_size=1400, ecn=True), whole=True)
    assert vnet(result)[1] == TCPV6 | ECN


def test_cwr_fin_psh_land_on_the_right_segments() -> None:
    packet = super_packet(
        IPv6(src=SERVER_V6, dst=CLAT_V6) / TCP(flags="FPAC", seq=1) / bytes(5 * 1000)
    )
    result = check(frame(packet, gso_size=1000, ecn=True), whole=True)
    flags = [TCP(p[20:]).flags for p in offloaded(result)]
    assert flags == ["AC", "A", "A", "A", "FPA"]


# ---- IPv6 -> IPv4: the last segment's DF ------------------------------------------------------


def test_small_last_segment_leaves_on_its_own_without_df() -> None:
    """RFC 7915 §5.1: DF above 1260 bytes only; a super-packet carries one DF for all."""
    packet = super_packet(tcp(v6(), 3 * 1400 + 300))
    result = check(frame(packet, gso_size=1400), whole=True)
    assert len(result.frames) == 2
    assert vnet(result, 0)[1] == TCPV4 and vnet(result, 1)[1] == 0
    segments = [IP(p) for p in offloaded(result)]
    assert [s.flags for s in segments] == ["DF", "DF", "DF", 0]
    assert [len(s) for s in segments] == [1440, 1440, 1440, 340]


def test_small_segments_are_df_clear() -> None:
    result = check(frame(super_packet(tcp(v6(), 10 * 500)), gso_size=500), whole=True)
    assert {IP(p).flags for p in offloaded(result)} == {0}


def test_udp_split_fixes_each_udp_length() -> None:
    packet = super_packet(udp(v6(), 2 * 1400 + 100))
    result = check(frame(packet, gso_size=1400), whole=True)
    assert [UDP(p[20:]).len for p in offloaded(result)] == [1408, 1408, 108]


# ---- partial checksums and DATA_VALID without GSO ---------------------------------------------


@pytest.mark.parametrize("build", [tcp, udp])
@pytest.mark.parametrize("ip", [v4, v6])
def test_partial_checksum_without_gso(build: object, ip: object) -> None:
    packet = super_packet(build(ip(), 300))  # type: ignore[operator]
    result = check(frame(packet), whole=True)
    assert vnet(result)[0] == NEEDS_CSUM and vnet(result)[1] == 0
    assert vnet(result)[4] == (40 if packet[0] >> 4 == 4 else 20)


@pytest.mark.parametrize("ip", [v4, v6])
def test_data_valid_is_carried(ip: object) -> None:
    packet = bytes(tcp(ip(), 100))  # type: ignore[operator]
    result = check(frame(packet, needs_csum=False, data_valid=True), whole=True)
    assert vnet(result) == (DATA_VALID, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("ip", [v4, v6])
def test_plain_frame_gives_the_reference_bytes(ip: object) -> None:
    packet = bytes(udp(ip(), 100))  # type: ignore[operator]
    t, o = translators()
    result = o.translate(frame(packet, needs_csum=False))
    assert vnet(result) == (0,) * 6
    assert [normalize(frame_bytes(f)[10:]) for f in result.frames] == [
        normalize(p) for p in t.translate(packet).out
    ]


# ---- what cannot be offloaded takes the reference path, segment by segment ----------------------


def fallback_cases() -> dict[str, tuple[bytes, dict[str, object]]]:
    big4 = 6 * 1400
    return {
        "icmp": (frame(bytes(v4() / ICMP() / bytes(100)), needs_csum=False), {}),
        "ipv4 options": (
            frame(super_packet(tcp(v4(options=b"\x01\x01\x01\x00"), big4)), gso_size=1400),
            {},
        ),
        "ipv4 fragment": (
            frame(
                bytes(IP(src=CLAT_V4, dst=SERVER_V4, flags="MF") / UDP() / bytes(400)),
                needs_csum=False,
            ),
            {},
        ),
        "udp checksum zero": (
            frame(
                bytes(udp(v4(), 300))[:26] + b"\0\0" + bytes(udp(v4(), 300))[28:], needs_csum=False
            ),
            {},
        ),
        "df segments too big for the ipv6 mtu": (
            frame(super_packet(tcp(v4(), big4)), gso_size=1400),
            {"ipv6_mtu": 1400},
        ),
        "df clear segments above 1280": (
            frame(super_packet(tcp(v4(flags=0), big4)), gso_size=1400),
            {},
        ),
        "ttl 1": (frame(super_packet(tcp(v4(ttl=1), big4)), gso_size=1400), {}),
        "hop limit 1": (frame(super_packet(tcp(v6(hlim=1), big4)), gso_size=1400), {}),
        "untranslatable destination": (
            frame(
                super_packet(tcp(IP(src=CLAT_V4, dst="127.0.0.1", flags="DF"), big4)), gso_size=1400
            ),
            {},
        ),
        "ipv6 extension header": (
            frame(
                super_packet(v6(nh=60) / IPv6ExtHdrDestOpt() / TCP() / bytes(big4)), gso_size=1400
            ),
            {},
        ),
        "ipv4 segments too big for ipv4_mtu": (
            frame(super_packet(tcp(v6(), big4)), gso_size=1400),
            {"ipv4_mtu": 1280, "local_ipv6": "fd64:c1a7:464::2"},
        ),
        "gso without a partial checksum": (
            frame(bytes(tcp(v4(), big4)), gso_size=1400, needs_csum=False),
            {},
        ),
        "partial checksum of a fragment": (
            frame(super_packet(udp(IP(src=CLAT_V4, dst=SERVER_V4, flags=0), 2000))),
            {},
        ),
    }


@pytest.mark.parametrize("case", sorted(fallback_cases()))
def test_what_cannot_be_offloaded_takes_the_reference(case: str) -> None:
    frame_in, config = fallback_cases()[case]
    result = check(frame_in, whole=False, **config)
    for f in result.frames:
        assert bytes(f[0]) == bytes(10)  # finished checksums, no GSO: plain packets


def test_the_reference_answers_what_it_refuses() -> None:
    result = check(frame(super_packet(tcp(v4(ttl=1), 3 * 1400)), gso_size=1400), whole=False)
    assert result.drops == ["ttl-expired"] * 3
    assert result.back == 3 and result.segments == 0


def test_a_header_that_does_not_describe_the_packet_is_dropped() -> None:
    _, o = translators()
    good = frame(super_packet(tcp(v4(), 3 * 1400)), gso_size=1400)
    wrong_type = good[:1] + bytes([TCPV6]) + good[2:]
    no_size = good[:6] + b"\0\0" + good[8:]
    bad_start = good[:6] + struct.pack("<HHH", 1400, 9000, 16) + good[12:]
    for bad in (wrong_type, no_size, bad_start, frame(super_packet(tcp(v4(), 100)))[:8]):
        result = o.translate(bad)
        assert result.drops == [BAD_VNET_HEADER], bad[:10].hex()
        assert result.frames == []


def test_a_new_prefix_applies_to_the_offload_path() -> None:
    t, o = translators()
    frame_in = frame(super_packet(tcp(v4(), 3 * 1400)), gso_size=1400)
    o.translate(frame_in)
    o.translator.update_pool6("64:ff9b::/96")
    out = IPv6(frame_bytes(o.translate(frame_in).frames[0])[10:])
    assert out.dst == "64:ff9b::cb00:710a"


# ---- software GRO: runs of UDP datagrams leave as one USO frame ----------------------------------


def coalesce(
    frames_in: list[bytes], broken: bool = False, **config: object
) -> tuple[list[bytes], list[bytes], list]:
    """(after the kernel's segmentation, the reference's packets, the USO frames), the frames
    handled as the sidecar's loop does (datapath.py): follow, else fast and add, else the
    reference path after a flush."""
    t, o = translators(**config)
    coalescer = UdpCoalescer()
    written: list = []
    for f in frames_in:
        source = memoryview(bytearray(f))  # each read has its own slot of the arena
        if coalescer.follow(source, len(f)):
            continue
        fast = o.fast(source, len(f))
        if fast is None:
            written += coalescer.flush() + o.fallback(source, len(f)).frames
            continue
        for out in fast[0]:
            if not coalescer.add(out, source, len(f)):
                written += coalescer.flush() + [out]
    written += coalescer.flush()
    got = [normalize(p) for f in written for p in kernel_segment(frame_bytes(f))]
    expected = [p for f in frames_in for p in reference(t, f, broken)]
    return got, expected, written


@pytest.mark.parametrize("ip", [v4, v6])
def test_a_run_of_datagrams_leaves_as_one_uso_frame(ip: object) -> None:
    sizes = [1200] * 10 + [700]  # the shorter last one ends the run
    frames_in = [frame(super_packet(udp(ip(), size))) for size in sizes]  # type: ignore[operator]
    got, expected, written = coalesce(frames_in)
    assert got == expected
    assert len(written) == 1
    flags, gso, hdr_len, gso_size, start, offset = VNET_HDR.unpack(bytes(written[0][0]))
    l3 = 40 if frames_in[0][10] >> 4 == 4 else 20
    assert (flags, gso, hdr_len, gso_size, start, offset) == (
        NEEDS_CSUM,
        UDP_L4,
        l3 + 8,
        1200,
        l3,
        6,
    )
    for p in got:
        assert checksums_valid(p)


def test_flows_sizes_and_limits_cut_runs() -> None:
    a = [frame(super_packet(udp(v4(), 1000))) for _ in range(3)]
    other_flow = frame(super_packet(v4() / UDP(sport=1, dport=2) / bytes(1000)))
    bigger = frame(super_packet(udp(v4(), 1100)))
    tcp_frame = frame(super_packet(tcp(v4(), 500)))
    many = [frame(super_packet(udp(v4(), 1000))) for _ in range(70)]  # more than 64
    cases = [a + [other_flow] + a, a + [bigger] + a, a + [tcp_frame] + a, many]
    for frames_in in cases:
        got, expected, written = coalesce(frames_in)
        assert sorted(got) == sorted(expected)  # flows may interleave differently
        for flow in {p[8:40] + p[40:44] for p in expected if p[6] == 17}:
            # ... but each flow's datagrams stay in order
            assert [p for p in got if p[8:44] == flow] == [p for p in expected if p[8:44] == flow]
    assert [len(f) - 2 for f in coalesce(many)[2]] == [64, 6]


def test_only_partial_checksum_datagrams_are_merged() -> None:
    _, o = translators()
    coalescer = UdpCoalescer()
    for f in (
        frame(bytes(udp(v4(), 500)), needs_csum=False),  # a finished checksum: not vouched for
        frame(super_packet(tcp(v4(), 500))),
        frame(super_packet(udp(v4(), 3 * 1000)), gso_size=1000),  # already a USO frame
    ):
        fast = o.fast(memoryview(f), len(f))
        assert fast is not None
        assert not coalescer.add(fast[0][0])
    assert not coalescer.pending


def test_followers_of_a_run_skip_translation_but_not_the_checks() -> None:
    """`follow` takes the next datagrams of a run untranslated: each must repeat its
    predecessor exactly, but for the IPv4 Identification; a broken header does not slip in."""
    good = [bytearray(frame(super_packet(udp(v4(id=i), 1000)))) for i in range(6)]
    broken = bytearray(good[3])
    broken[20] ^= 0xFF  # the IPv4 header checksum (frame offset 10 + 10)
    other_ttl = bytearray(frame(super_packet(udp(v4(ttl=9), 1000))))
    frames_in = [bytes(f) for f in (*good[:3], broken, other_ttl, *good[4:])]
    got, expected, written = coalesce(frames_in, broken=True)
    assert got == expected  # the broken one dropped (bad-checksum) as the reference does
    assert len(expected) == 6
    t, o = translators()
    coalescer = UdpCoalescer()
    first = memoryview(bytearray(good[0]))
    fast = o.fast(first, len(good[0]))
    assert fast is not None and coalescer.add(fast[0][0], first, len(good[0]))
    assert coalescer.follow(memoryview(good[1]), len(good[1]))  # another ID: the same
    assert not coalescer.follow(memoryview(broken), len(broken))
    assert not coalescer.follow(memoryview(other_ttl), len(other_ttl))
    shorter = bytearray(frame(super_packet(udp(v4(), 999))))
    assert not coalescer.follow(memoryview(shorter), len(shorter))


@pytest.mark.parametrize("ip", [v4, v6])
def test_long_runs_through_follow_match_the_reference(ip: object) -> None:
    frames_in = [frame(super_packet(udp(ip(), 1200))) for _ in range(150)]  # type: ignore[operator]
    frames_in.append(frame(super_packet(udp(ip(), 300))))  # type: ignore[operator]
    got, expected, written = coalesce(frames_in)
    assert got == expected
    assert [len(f) - 2 for f in written] == [54, 54, 43]  # 64 KB per frame at most
