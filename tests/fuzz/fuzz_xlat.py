"""Coverage-guided fuzzing (atheris, libFuzzer) of `Translator.translate` and of the offload
parser (`OffloadTranslator.translate` on virtio-net frames).

    python tests/fuzz/fuzz_xlat.py translate|offload [libFuzzer flags] [CORPUS_DIR ...]

The first input byte picks a configuration (and whether to fix the packet's checksums first,
so the fuzzer gets past them); the rest is the packet (translate) or the frame (offload).
Checks: nothing raises, no `internal-error`, every drop reason is listed, every packet that
comes out parses with scapy with right lengths and IPv4 header checksum, and its transport
checksum is right whenever the input's was. Offloaded frames are first cut as the kernel would
(tests/offload/gso.py, independent of the code under test).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "offload"))

with atheris.instrument_imports(include=["clat_translator"]):
    from clat_translator.xlat import DROP_REASONS, Translator, XlatConfig, drops
    from clat_translator.xlat.offload import OFFLOAD_DROP_REASONS, OffloadTranslator

import gso  # noqa: E402  (tests/offload: the kernel's segmentation, written independently)
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402

EAMT = [("192.0.0.1/32", "fd00:c1a7::1/128"), ("198.51.100.0/24", "2001:db8:b::/120")]
CONFIGS = [
    XlatConfig(pool6="64:ff9b::/96", eamt=EAMT, local_ipv6="fd00:c1a7::2"),
    XlatConfig(
        pool6="2001:db8:64::/96",
        eamt=EAMT,
        local_ipv6="fd00:c1a7::2",
        rfc6791v4="192.0.0.8",
        amend_udp_checksum_zero=True,
        ipv6_mtu=1500,
        ipv4_mtu=65535,
        clat_mode=True,
    ),
    XlatConfig(pool6="2001:db8::/40", eamt=EAMT, eam_hairpin_mode="simple", ipv4_mtu=576),
    XlatConfig(pool6=None, eamt=EAMT, lowest_ipv6_mtu=1500, ipv6_mtu=1280, reset_tos=True),
    XlatConfig(pool6="2001:db8::/64", eamt=EAMT, eam_hairpin_mode="off", ipv6_mtu=90000),
]
TRANSLATORS = [Translator(c) for c in CONFIGS]
OFFLOADERS = [OffloadTranslator(t) for t in TRANSLATORS]
REASONS = DROP_REASONS | OFFLOAD_DROP_REASONS


class Finding(AssertionError):
    """An output that breaks the contract."""


def _upper(packet: bytes) -> tuple[int, int] | None:
    """(offset, protocol) of the transport header of an unfragmented packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 not in (4, 6):
        return None
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        if ihl < 20 or ihl > len(packet) or struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:
            return None
        return ihl, packet[9]
    if len(packet) < 40:
        return None
    nh, off = packet[6], 40
    while nh in (0, 43, 60, 44):
        if off + 8 > len(packet):
            return None
        if nh == 44:
            if struct.unpack_from("!H", packet, off + 2)[0] & 0xFFF9:
                return None  # offset or M set: a fragment
            nh, off = packet[off], off + 8
            continue
        nh, off = packet[off], off + (packet[off + 1] + 1) * 8
    return off, nh


def _declared(packet: bytes) -> bytes:
    """The packet without link-layer padding: as long as its header says."""
    if len(packet) >= 4 and packet[0] >> 4 == 4:
        return packet[: struct.unpack_from("!H", packet, 2)[0]]
    if len(packet) >= 6:
        return packet[: 40 + struct.unpack_from("!H", packet, 4)[0]]
    return packet


def _transport_ok(packet: bytes) -> bool:
    """Whether the transport checksum is right (True where there is none to check)."""
    packet = _declared(packet)
    found = _upper(packet)
    if found is None:
        return True
    off, proto = found
    body = packet[off:]
    v4 = packet[0] >> 4 == 4
    if proto == 1 and v4:
        return len(body) < 2 or gso.ones_sum(body) == 0xFFFF
    if proto not in (6, 17, 58) or len(body) < (18 if proto == 6 else 8):
        return True
    if proto == 17 and v4 and body[6:8] == b"\0\0":
        return True  # RFC 768: no checksum
    pseudo = (
        gso.ones_sum(packet[12:20] + struct.pack("!HH", proto, len(body)))
        if v4
        else gso.ones_sum(packet[8:40] + struct.pack("!IxxxB", len(body), proto))
    )
    total = pseudo + gso.ones_sum(body)
    return (total & 0xFFFF) + (total >> 16) == 0xFFFF


def check_packet(packet: bytes, transport_must_be_ok: bool) -> None:
    """The packet parses with scapy, lengths and checksums right."""
    if not packet or packet[0] >> 4 not in (4, 6):
        raise Finding(f"not an IP packet: {packet[:8].hex()}")
    if packet[0] >> 4 == 4:
        parsed4 = IP(packet)
        if parsed4.len != len(packet) or parsed4.ihl * 4 > len(packet) or parsed4.ihl < 5:
            raise Finding("IPv4 lengths")
        if gso.ones_sum(packet[: parsed4.ihl * 4]) != 0xFFFF:
            raise Finding("IPv4 header checksum")
    else:
        parsed6 = IPv6(packet)
        if parsed6.plen + 40 != len(packet):
            raise Finding("IPv6 payload length")
        found = _upper(packet)
        if found and found[1] == 17 and packet[found[0] + 6 : found[0] + 8] == b"\0\0":
            raise Finding("IPv6 UDP without a checksum (RFC 8200 §8.1)")
    if transport_must_be_ok and not _transport_ok(packet):
        raise Finding("transport checksum")


def fix_checksums(packet: bytearray) -> None:
    """Set the input's IPv4 header and transport checksums right (so they are not the wall)."""
    if len(packet) < 20:
        return
    v4 = packet[0] >> 4 == 4
    if v4:
        ihl = (packet[0] & 15) * 4
        if ihl < 20 or ihl > len(packet):
            return
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", ~gso.ones_sum(bytes(packet[:ihl])) & 0xFFFF)
    elif len(packet) < 40:
        return
    found = _upper(bytes(packet))
    end = len(_declared(bytes(packet)))
    if found is None or found[0] > end:
        return
    off, proto = found
    at = off + {1: 2, 58: 2, 6: 16, 17: 6}.get(proto, -1000)
    if at < off or at + 2 > end or (proto == 1) != v4:
        return
    packet[at : at + 2] = b"\0\0"
    body = bytes(packet[off:end])
    if proto == 1:
        total = gso.ones_sum(body)
    elif v4:
        total = gso.ones_sum(bytes(packet[12:20]) + struct.pack("!HH", proto, len(body)))
        total += gso.ones_sum(body)
    else:
        total = gso.ones_sum(bytes(packet[8:40]) + struct.pack("!IxxxB", len(body), proto))
        total += gso.ones_sum(body)
    total = (total & 0xFFFF) + (total >> 16)
    packet[at : at + 2] = struct.pack("!H", ~total & 0xFFFF or (0xFFFF if proto == 17 else 0))


def _split(data: bytes) -> tuple[int, bool, bytearray]:
    if not data:
        return 0, False, bytearray()
    return data[0] % len(CONFIGS), bool(data[0] & 0x80), bytearray(data[1:])


def one_translate(data: bytes) -> None:
    which, fix, packet = _split(data)
    if fix:
        fix_checksums(packet)
    t = TRANSLATORS[which]
    r = t.translate(bytes(packet))
    if r.drop == drops.INTERNAL_ERROR or (r.drop is not None and r.drop not in DROP_REASONS):
        raise Finding(f"drop {r.drop!r}")
    if r.drop is None and not (r.out or r.back):
        raise Finding("neither translated nor dropped")
    input_ok = len(packet) >= 20 and _transport_ok(bytes(packet))
    for out in r.out:
        check_packet(out, input_ok)
    for back in r.back:
        # errors the translator makes are right whatever came in; hairpinned packets carry the
        # input's transport checksum, echo replies answer only a right one
        check_packet(back, input_ok or r.drop is not None)


def one_offload(data: bytes) -> None:
    which, fix, frame = _split(data)
    plain = len(frame) > 30 and frame[0] & gso.NEEDS_CSUM == 0 and frame[1] == 0
    if fix and len(frame) > 10:
        packet = frame[10:]
        fix_checksums(packet)
        frame[10:] = packet
    input_ok = plain and _transport_ok(bytes(frame[10:]))
    r = OFFLOADERS[which].translate(bytes(frame))
    for reason in r.drops:
        if reason == drops.INTERNAL_ERROR or reason not in REASONS:
            raise Finding(f"drop {reason!r}")
    for out in r.frames:
        written = b"".join(bytes(part) for part in out)
        if len(written) < 10:
            raise Finding("frame without a virtio-net header")
        for segment in gso.kernel_segment(written):
            # cut and finished as the kernel does: right whenever a plain input's was
            check_packet(segment, input_ok)


TARGETS = {"translate": one_translate, "offload": one_offload}


def seed_corpus(root: Path) -> None:
    """Write the seed corpus (scapy-built packets and frames) under `root`."""
    from scapy.layers.inet import ICMP, TCP, UDP
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoRequest,
        ICMPv6PacketTooBig,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
    )

    c4, s4, c6, s6 = "192.0.0.1", "203.0.113.10", "fd00:c1a7::1", "64:ff9b::cb00:710a"
    quote4 = bytes(IP(src=c4, dst=s4) / UDP(sport=1, dport=2) / b"q")
    quote6 = bytes(IPv6(src=c6, dst=s6) / UDP(sport=1, dport=2) / b"q")
    packets = [
        IP(src=c4, dst=s4) / TCP(sport=1, dport=80, flags="S"),
        IP(src=c4, dst=s4, flags="DF") / UDP(sport=5, dport=53) / (b"u" * 40),
        IP(src=c4, dst=s4) / ICMP() / b"ping",
        IP(src=c4, dst=s4, flags="MF", id=7) / UDP() / (b"f" * 16),
        IP(src=c4, dst=s4, frag=3, proto=6) / b"tail",
        IP(src="10.9.9.9", dst=s4) / UDP() / b"forged",
        IP(src="198.51.100.1", dst=c4) / ICMP(type=3, code=4, nexthopmtu=1400) / quote4,
        IP(src="198.51.100.1", dst=c4) / ICMP(type=11, length=32) / quote4.ljust(128, b"\0"),
        IP(src=c4, dst=s4, ttl=1) / UDP() / b"x",
        IPv6(src=s6, dst=c6) / TCP(sport=80, dport=1, flags="SA"),
        IPv6(src=s6, dst=c6) / UDP(sport=53, dport=5) / (b"u" * 1300),
        IPv6(src=s6, dst=c6) / ICMPv6EchoRequest(data=b"ping"),
        IPv6(src=s6, dst=c6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(m=1) / UDP() / (b"f" * 8),
        IPv6(src=s6, dst=c6) / IPv6ExtHdrFragment(offset=5, nh=17) / b"tail",
        IPv6(src="2001:db8::1", dst=c6) / ICMPv6DestUnreach() / quote6,
        IPv6(src=s6, dst=c6) / ICMPv6PacketTooBig(mtu=1400) / quote6,
        IPv6(src=s6, dst="64:ff9b::c633:6401") / UDP() / b"hairpin",
    ]
    for name in TARGETS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(packets):
        raw = bytes(p)
        (root / "translate" / f"seed-{i:02d}").write_bytes(bytes([i % len(CONFIGS)]) + raw)
        vnet = b"\0" * 10
        (root / "offload" / f"seed-{i:02d}").write_bytes(bytes([i % len(CONFIGS)]) + vnet + raw)
    big4 = bytes(IP(src=c4, dst=s4, flags="DF") / TCP(sport=1, dport=2, flags="A") / (b"s" * 3000))
    big6 = bytes(IPv6(src=s6, dst=c6) / UDP(sport=1, dport=2) / (b"s" * 3000))
    supers = [
        (struct.pack("<BBHHHH", 1, 1, 40, 1000, 20, 16), big4),
        (struct.pack("<BBHHHH", 1, 5, 48, 1200, 40, 6), big6),
        (struct.pack("<BBHHHH", 1, 0, 0, 0, 20, 16), big4[:1400]),
    ]
    for i, (vnet, raw) in enumerate(supers):
        (root / "offload" / f"super-{i}").write_bytes(bytes([i]) + vnet + raw)


def main() -> None:
    if sys.argv[1] == "seed":
        seed_corpus(Path(sys.argv[2]))
        return
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
