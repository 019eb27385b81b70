"""Hypothesis: for any frame the kernel could hand an offloading TUN (TSO/USO or not, partial
checksum or not, options, extension headers, expiring TTLs, odd addresses, DF either way, small
MTUs), the offload path and the reference give the same packets after segmentation."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop

from .gso import frame, super_packet
from .test_offload_translate import CLAT_V4, CLAT_V6, SERVER_V4, SERVER_V6, check

SOURCES4 = [CLAT_V4] * 6 + ["192.0.0.2", "10.1.2.3"]
DESTINATIONS4 = [SERVER_V4] * 6 + ["127.0.0.1", "192.0.0.2"]
SOURCES6 = [SERVER_V6] * 6 + ["2001:db8:1::2"]
DESTINATIONS6 = [CLAT_V6] * 6 + ["2001:db8:64::7f00:1"]


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    v4 = draw(st.booleans())
    is_tcp = draw(st.booleans())
    payload = draw(st.integers(1, 12000))
    gso_size = draw(
        st.sampled_from([0, 0, 200, 536, 1000, 1208, 1220, 1232, 1240, 1380, 1428, 1460])
    )
    needs_csum = (
        draw(st.booleans()) if not gso_size else draw(st.sampled_from([True] * 5 + [False]))
    )
    data_valid = not needs_csum and draw(st.booleans())
    hop = draw(st.sampled_from([1, 2, 64, 255]))
    tos = draw(st.integers(0, 255))
    if v4:
        ip: Any = IP(
            src=draw(st.sampled_from(SOURCES4)),
            dst=draw(st.sampled_from(DESTINATIONS4)),
            ttl=hop,
            tos=tos,
            id=draw(st.integers(0, 0xFFFF)),
            flags=draw(st.sampled_from(["DF", "DF", 0])),
            options=draw(st.sampled_from([b""] * 5 + [b"\x01\x01\x01\x00", b"\x94\x04\x00\x00"])),
        )
    else:
        ip = IPv6(
            src=draw(st.sampled_from(SOURCES6)),
            dst=draw(st.sampled_from(DESTINATIONS6)),
            hlim=hop,
            tc=tos,
        )
        extension = draw(st.sampled_from([None] * 6 + [IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop]))
        if extension is not None:
            ip = ip / extension()
    if is_tcp:
        l4: Any = TCP(
            sport=draw(st.integers(1, 65535)),
            dport=443,
            seq=draw(st.integers(0, 2**32 - 1)),
            flags=draw(st.sampled_from(["A", "PA", "FPA", "AC", "FPAC", "RA"])),
            options=draw(
                st.sampled_from([[], [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]])
            ),
        )
    else:
        l4 = UDP(sport=draw(st.integers(1, 65535)), dport=53)
    packet = ip / l4 / bytes(i % 253 for i in range(payload))
    if needs_csum:
        raw = super_packet(packet)
    else:
        raw = bytes(packet)
        if not is_tcp and draw(st.integers(0, 4)) == 0:  # UDP without a checksum
            at = len(raw) - payload - 2
            raw = raw[:at] + b"\0\0" + raw[at + 2 :]
    ecn = is_tcp and bool(gso_size) and draw(st.booleans())
    config = {
        "ipv6_mtu": draw(st.sampled_from([1280, 1400, 1500, 9000])),
        "ipv4_mtu": draw(st.sampled_from([1500, 65535])),
        "local_ipv6": draw(st.sampled_from([None, "fd64:c1a7:464::2"])),
    }
    return frame(raw, gso_size, needs_csum, data_valid, ecn), config


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames())
def test_offload_path_equals_the_reference_after_segmentation(
    case: tuple[bytes, dict[str, Any]],
) -> None:
    frame_in, config = case
    result = check(frame_in, **config)
    event(f"{'whole' if result.offloaded else 'reference'}, {len(result.frames)} frame(s)")
    event(f"gso={frame_in[1] & 0x7F} needs_csum={frame_in[0] & 1}")
