"""XlatConfig.clat_mode: a CLAT (RFC 6877) translates only its own host's traffic.

A pod's IPv4 side has one legitimate source, the CLAT address (an EAM entry); its IPv6 side
talks to the PLAT (pool6) and EAM hosts. Anything else is forged: dropped as `foreign-source`,
never translated, never answered. Off by default: the core stays a general SIIT translator.
"""

import pytest
from clat_translator.xlat import DROP_REASONS, drops
from clat_translator.xlat.offload import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    NO_VNET_HDR,
    VNET_HDR,
    OffloadTranslator,
    UdpCoalescer,
    frame_bytes,
)
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6TimeExceeded
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    OUTSIDE_V6,
    SERVER_V4,
    SERVER_V6,
    TCP,
    UDP,
    IPv6,
    clat,
    only,
    parse4,
    parse6,
    refused,
    v4,
    v6,
)

FORGED4 = ["10.9.9.9", "198.51.100.77", "192.0.0.2", "127.0.0.1", "0.0.0.0"]


def _clat(**config: object) -> object:
    return clat(clat_mode=True, rfc6791v4="192.0.0.8", **config)


def test_foreign_source_is_a_drop_reason() -> None:
    assert drops.FOREIGN_SOURCE == "foreign-source" and "foreign-source" in DROP_REASONS


@pytest.mark.parametrize("source", ["10.9.9.9", "198.51.100.77"])
def test_general_siit_translates_any_source_by_default(source: str) -> None:
    out = parse6(only(clat().translate(v4(UDP(), src=source))))
    assert out.src == "64:ff9b::" + ("a09:909" if source == "10.9.9.9" else "c633:644d")


@pytest.mark.parametrize("source", FORGED4)
@pytest.mark.parametrize(
    "packet",
    [
        lambda s: v4(UDP(sport=1, dport=2) / b"x", src=s),
        lambda s: v4(TCP(flags="S"), src=s),
        lambda s: v4(ICMP() / b"ping", src=s),
        lambda s: v4(UDP() / b"x", src=s, ttl=1),  # would get Time Exceeded
        lambda s: v4(UDP() / b"x", src=s, dst="169.254.1.1"),  # would get 3/13
        lambda s: v4(UDP() / (b"x" * 1500), src=s, flags="DF"),  # would get Frag. Needed
        lambda s: v4(ICMP() / b"ping", src=s, dst="192.0.0.2"),  # would get an Echo Reply
        lambda s: v4(UDP() / (b"x" * 40), src=s, flags="MF"),  # a first fragment
        lambda s: v4(b"tail", proto=17, src=s, frag=9),
        lambda s: v4(ICMP(type=3, code=3) / bytes(IP(src=SERVER_V4, dst=s) / UDP()), src=s),
    ],
    ids=[
        "udp",
        "tcp",
        "echo",
        "ttl",
        "untranslatable",
        "too-big",
        "to-translator",
        "first",
        "tail",
        "icmp-error",
    ],
)
def test_foreign_ipv4_source_is_dropped_unanswered(source: str, packet: object) -> None:
    t = _clat()
    for _ in range(2):  # the second time through the fast path's address cache
        refused(t.translate(packet(source)), drops.FOREIGN_SOURCE)  # type: ignore[operator]
        assert t.translate(packet(source)).back == []  # type: ignore[operator]


def test_own_ipv4_source_is_translated() -> None:
    t = _clat()
    for _ in range(2):
        out = parse6(only(t.translate(v4(UDP(sport=1, dport=2) / b"ok"))))
        assert (out.src, out.dst) == (CLAT_V6, SERVER_V6)


def test_every_eam_prefix_is_an_own_source() -> None:
    t = _clat(eamt=[(f"{CLAT_V4}/32", f"{CLAT_V6}/128"), ("10.9.0.0/16", "2001:db8:9::/112")])
    assert parse6(only(t.translate(v4(UDP(), src="10.9.9.9")))).src == "2001:db8:9::909"
    refused(t.translate(v4(UDP(), src="10.8.9.9")), drops.FOREIGN_SOURCE)


@pytest.mark.parametrize("source", [OUTSIDE_V6, "2001:db8:bad::1", "fe80::1", "::1"])
@pytest.mark.parametrize(
    "packet",
    [
        lambda s: v6(UDP(sport=1, dport=2) / b"x", src=s),
        lambda s: v6(ICMPv6EchoRequest(), src=s),
        lambda s: v6(UDP() / b"x", src=s, hlim=1),  # would get Time Exceeded
    ],
    ids=["udp", "echo", "hop-limit"],
)
def test_foreign_ipv6_source_to_the_clat_is_dropped_unanswered(source: str, packet: object) -> None:
    t = _clat()
    for _ in range(2):
        refused(t.translate(packet(source)), drops.FOREIGN_SOURCE)  # type: ignore[operator]


def test_foreign_ipv6_source_is_untranslatable_without_clat_mode() -> None:
    refused(clat().translate(v6(UDP(), src=OUTSIDE_V6)), drops.UNTRANSLATABLE_SOURCE)


def test_ipv6_from_pool6_and_from_an_eam_is_translated() -> None:
    t = _clat(eamt=[(f"{CLAT_V4}/32", f"{CLAT_V6}/128"), ("10.9.0.0/16", "2001:db8:9::/112")])
    assert parse4(only(t.translate(v6(UDP())))).src == SERVER_V4
    assert parse4(only(t.translate(v6(UDP(), src="2001:db8:9::909")))).src == "10.9.9.9"


@pytest.mark.parametrize("error", [ICMPv6DestUnreach(code=0), ICMPv6TimeExceeded()])
def test_icmpv6_error_from_outside_takes_the_rfc6791_source(error: object) -> None:
    quoted = IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP(sport=1, dport=2)
    out = parse4(only(_clat().translate(v6(error / bytes(quoted), src=OUTSIDE_V6))))
    assert (out.src, out.dst) == ("192.0.0.8", CLAT_V4)


def test_offload_super_packet_with_a_foreign_source_is_dropped() -> None:
    t = _clat()
    offload = OffloadTranslator(t)
    for source, dropped in ((CLAT_V4, False), ("10.9.9.9", True)):
        packet = v4(TCP(sport=1, dport=2, flags="A") / (b"s" * 3000), src=source, flags="DF")
        vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 40, 1000, 20, 16)
        # the TCP checksum field of a NEEDS_CSUM frame holds the pseudo-header sum
        partial = bytearray(packet)
        partial[36:38] = b"\0\0"
        r = offload.translate(vnet + bytes(partial))
        if dropped:
            assert r.frames == [] and r.drops == [drops.FOREIGN_SOURCE] * 3
        else:
            assert r.drops == [] and r.frames
    r = offload.translate(NO_VNET_HDR + v4(UDP() / b"x", src="198.51.100.77"))
    assert r.frames == [] and r.drops == [drops.FOREIGN_SOURCE]
    assert t.plain_pair46(bytes(IP(src="10.9.9.9", dst=SERVER_V4))[12:20]) is None


def test_udp_coalescer_does_not_let_a_foreign_source_join_a_run() -> None:
    # A datagram may skip translation when it repeats its predecessor's headers exactly; a
    # forged source differs in those headers, so it is translated (and dropped) on its own.
    offload = OffloadTranslator(_clat())
    coalescer = UdpCoalescer()
    own = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6) + v4(UDP(sport=5, dport=6) / b"p")
    own_frame = memoryview(bytearray(own))
    result = offload.fast(own_frame, len(own))
    assert result is not None and coalescer.add(result[0][0], own_frame, len(own))
    forged = bytearray(own)
    forged[22:26] = bytes([10, 9, 9, 9])
    forged[20:22] = b"\0\0"
    forged[20:22] = (0xFFFF - int.from_bytes(forged[10:30], "big") % 0xFFFF).to_bytes(2, "big")
    assert not coalescer.follow(memoryview(forged), len(forged))
    assert offload.fast(memoryview(forged), len(forged)) is None
    assert offload.translate(bytes(forged)).drops == [drops.FOREIGN_SOURCE]
    assert frame_bytes(coalescer.flush()[0])
