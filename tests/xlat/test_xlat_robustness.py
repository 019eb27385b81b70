"""Robustness: malformed input is dropped with a reason, never an exception or a bad packet.

hypothesis feeds random and mutated packets; every output is checked with scapy.
"""

from __future__ import annotations

import pytest
from clat_translator.xlat import DROP_REASONS, Translator, drops
from clat_translator.xlat.context import TranslateResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.utils import checksum
from xlat_helpers import (
    CLAT_V4,
    CLAT_V6,
    ICMP,
    IP,
    ROUTER_V4,
    SERVER_V4,
    SERVER_V6,
    TCP,
    UDP,
    IPv6,
    clat,
    v4,
    v6,
)

FUZZ = settings(
    max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

SEEDS = [
    v4(TCP(sport=1, dport=2, flags="S") / b"syn"),
    v4(UDP(sport=3, dport=4) / (b"u" * 30)),
    v4(ICMP(type=8) / b"ping"),
    v4(
        ICMP(type=3, code=4, nexthopmtu=1400) / IP(src=SERVER_V4, dst=CLAT_V4) / TCP() / b"x",
        src=ROUTER_V4,
    ),
    v4(
        ICMP(type=11, length=32)
        / bytes(IP(src=SERVER_V4, dst=CLAT_V4) / UDP()).ljust(128, b"\0")
        / (b"\x20\0\0\0" * 3)
    ),
    v4(UDP() / (b"f" * 48), flags="MF", options=[]),
    v6(TCP(sport=1, dport=2) / b"ack"),
    v6(UDP(sport=3, dport=4) / (b"u" * 30)),
    v6(ICMPv6EchoRequest(data=b"ping")),
    v6(ICMPv6PacketTooBig(mtu=1300) / IPv6(src=CLAT_V6, dst=SERVER_V6) / TCP()),
    v6(ICMPv6DestUnreach(code=4) / IPv6(src=CLAT_V6, dst=SERVER_V6) / UDP()),
    v6(IPv6ExtHdrFragment(m=1, id=5) / UDP() / (b"f" * 40)),
    v6(IPv6ExtHdrRouting(segleft=0) / UDP()),
]

TRANSLATOR = clat(amend_udp_checksum_zero=True, rfc6791v4="192.0.0.8")


def _check_well_formed(result: TranslateResult) -> None:
    """The result names a known reason, never an internal error, and emits sane packets."""
    assert result.drop is None or result.drop in DROP_REASONS
    assert result.drop != drops.INTERNAL_ERROR
    for packet in result.out + result.back:
        version = packet[0] >> 4
        if version == 4:
            pkt = IP(packet)
            assert pkt.len == len(packet)
            assert checksum(packet[: pkt.ihl * 4]) == 0
            assert len(packet) <= 65535
        else:
            assert version == 6
            pkt6 = IPv6(packet)
            assert pkt6.plen == len(packet) - 40
    if result.drop is None:
        assert result.out or result.back


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([0x45, 0x46, 0x4F, 0x60, 0x6A, 0x40, 0x41]))
def test_random_bytes(tail: bytes, first: int) -> None:
    _check_well_formed(TRANSLATOR.translate(bytes((first,)) + tail))


def _repair_checksums(packet: bytearray) -> None:
    """Give a mutated packet valid IPv4 header and ICMP checksums (scapy's `checksum`), so
    that the mutation reaches the deeper layers instead of stopping at `bad-checksum`."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        if 20 <= ihl <= len(packet):
            packet[10:12] = b"\0\0"
            packet[10:12] = checksum(bytes(packet[:ihl])).to_bytes(2, "big")
            if packet[9] == 1 and len(packet) >= ihl + 4:
                packet[ihl + 2 : ihl + 4] = b"\0\0"
                packet[ihl + 2 : ihl + 4] = checksum(bytes(packet[ihl:])).to_bytes(2, "big")
    elif len(packet) >= 44 and packet[0] >> 4 == 6 and packet[6] == 58:
        packet[42:44] = b"\0\0"
        body = bytes(packet[40:])
        pseudo = bytes(packet[8:40]) + len(body).to_bytes(4, "big") + b"\0\0\0\x3a"
        packet[42:44] = checksum(pseudo + body).to_bytes(2, "big")


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(0, 200)),
    st.booleans(),
)
def test_mutated_packets(
    seed: bytes, flips: list[tuple[int, int]], cut: int | None, repair: bool
) -> None:
    packet = bytearray(seed)
    for at, value in flips:
        packet[at % len(packet)] = value
    if cut is not None:
        del packet[cut:]
    if repair:
        _repair_checksums(packet)
    t = clat(amend_udp_checksum_zero=True)
    _check_well_formed(t.translate(bytes(packet)))
    _check_well_formed(t.translate(bytes(packet)))  # second time through the fast path cache


@pytest.mark.parametrize("seed", SEEDS)
def test_every_truncation_of_a_valid_packet(seed: bytes) -> None:
    t: Translator = clat()
    for end in range(len(seed)):
        result = t.translate(seed[:end])
        _check_well_formed(result)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x44" + b"\0" * 30, drops.BAD_HEADER_LENGTH),  # IHL 4
        (bytes(IP(ihl=15, len=80) / UDP())[:40], drops.TRUNCATED),
        (bytes(IP(len=10) / UDP()), drops.BAD_LENGTH),
        (bytes(IP(len=100) / UDP()), drops.TRUNCATED),
        (bytes(IPv6(plen=100) / UDP()), drops.TRUNCATED),
        (v6(IPv6ExtHdrFragment(m=1) / (b"\0" * 13), nh=44), drops.BAD_FRAGMENT),  # not 8-byte units
        (v4(UDP() / (b"\0" * 13), flags="MF"), drops.BAD_FRAGMENT),
        (v4(b"\0" * 64, proto=17, frag=8190), drops.BAD_FRAGMENT),  # beyond 65535
        (
            v6(IPv6ExtHdrFragment(m=1) / IPv6ExtHdrFragment() / UDP() / b"1234567"),
            drops.BAD_EXTENSION_HEADER,
        ),
        (v6(b"\x11\x05" + b"\0" * 6, nh=0), drops.BAD_EXTENSION_HEADER),  # runs past the end
        (v6(UDP(), nh=0, plen=0), drops.BAD_LENGTH),  # jumbogram
        (v6(IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP()), drops.BAD_EXTENSION_HEADER),
        (
            v6(IPv6ExtHdrFragment(m=1) / IPv6ExtHdrDestOpt() / UDP() / b"1234567"),
            drops.BAD_EXTENSION_HEADER,
        ),
        (v4(b"\0" * 20, proto=58), drops.ICMP_WRONG_FAMILY),
        (v6(ICMP(type=8), nh=1), drops.ICMP_WRONG_FAMILY),
    ],
)
def test_malformed_packets_have_reasons(packet: bytes, reason: str) -> None:
    result = clat().translate(packet)
    assert result.drop == reason
    assert result.out == []
