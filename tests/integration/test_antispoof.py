"""Only the pod's own traffic leaves through the CLAT (XlatConfig.clat_mode in the sidecar).

Real raw sockets in the pod namespace send forged sources; a packet socket on the router's
pod-facing link sees everything that leaves the pod. Nothing forged may appear there, the
legitimate flow must, and the drops are counted in /metrics as foreign-source.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from testbed import Testbed
from testbed.servers import pattern_bytes

from .conftest import ClatProcess

pytestmark = pytest.mark.root

SERVER = "203.0.113.10"
FORGED4 = ("10.9.9.9", "198.51.100.77")
FORGED6 = ("2001:db8:bad::1", "2001:db8:1::99")  # outside the PLAT prefix, not an EAM
ETH_P_ALL = 0x0003
DATA_PATHS = {
    "kernel": ("--datapath", "kernel"),  # the program passes foreign sources to userspace
    "offload": ("--datapath", "userspace"),
    "no-offload": ("--datapath", "userspace", "--no-offload", "--workers", "2"),
}


@pytest.fixture(scope="module", params=sorted(DATA_PATHS))
def clat(testbed: Testbed, request: pytest.FixtureRequest) -> Iterator[ClatProcess]:
    process = ClatProcess(testbed, *DATA_PATHS[request.param])
    try:
        process.wait_ready()
        yield process
        assert process.stop() == 0
    finally:
        process.close()


class RouterTap:
    """Every frame on the router's link to the pod (a packet socket in the rtr namespace)."""

    def __init__(self, tb: Testbed) -> None:
        with tb.inside(tb.rtr):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("to-pod", 0))
        self.sock.settimeout(0.2)

    def frames(self, settle: float = 1.0) -> list[bytes]:
        out, deadline = [], time.monotonic() + settle
        while time.monotonic() < deadline:
            try:
                out.append(self.sock.recv(65535))
            except TimeoutError:
                continue
        return out

    def close(self) -> None:
        self.sock.close()


def _foreign_drops(clat: ClatProcess) -> float:
    return clat.metric("clat_drops_total", 'reason="foreign-source"')


def _wait_drops(clat: ClatProcess, at_least: float) -> float:
    for _ in range(50):
        seen = _foreign_drops(clat)
        if seen >= at_least:
            return seen
        time.sleep(0.1)
    return _foreign_drops(clat)


def test_forged_sources_never_leave_the_pod(clat: ClatProcess, testbed: Testbed) -> None:
    clat_v6 = re.search(r"CLAT IPv6 (\S+)", clat.log)
    assert clat_v6, clat.log
    before = _foreign_drops(clat)
    tap = RouterTap(testbed)
    try:
        with testbed.inside(testbed.pod):
            raw4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with raw4, raw6, legit:
            for i, source in enumerate(FORGED4):
                marker = b"FORGED4-%d" % i
                packet = IP(src=source, dst=SERVER) / UDP(sport=4000 + i, dport=7) / marker
                for _ in range(3):
                    raw4.sendto(bytes(packet), (SERVER, 0))
            for i, source in enumerate(FORGED6):
                marker = b"FORGED6-%d" % i
                packet = IPv6(src=source, dst=clat_v6[1]) / UDP(sport=5000 + i, dport=9) / marker
                for _ in range(3):
                    raw6.sendto(bytes(packet), (clat_v6[1], 0))
            legit.settimeout(3)
            legit.connect((SERVER, 7))
            legit.send(b"LEGIT-4")
            assert legit.recv(100) == b"LEGIT-4"
        frames = tap.frames()
    finally:
        tap.close()
    wire = b"".join(frames)
    assert b"LEGIT-4" in wire  # the pod's own flow leaves, translated
    assert b"FORGED" not in wire, [Ether(f).summary() for f in frames if b"FORGED" in f]
    for frame in frames:
        pkt = Ether(frame)
        if IPv6 in pkt:
            assert pkt[IPv6].src not in (testbed.synthesized(s) for s in FORGED4)
    expected = before + 3 * (len(FORGED4) + len(FORGED6))
    assert _wait_drops(clat, expected) == expected


def test_native_ipv6_and_clat_tcp_from_the_same_source_port(
    clat: ClatProcess, testbed: Testbed
) -> None:
    """The CLAT shares the pod's one IPv6 address: the NAT66 keeps the two connections apart."""
    server6 = testbed.synthesized(SERVER)
    size = 3 * 1024 * 1024
    with testbed.inside(testbed.pod):
        native = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        translated = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bodies: dict[str, bytes] = {}

    def fetch(name: str, sock: socket.socket, peer: tuple[str, int]) -> None:
        sock.settimeout(60)
        sock.connect(peer)
        sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n" % size)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        bodies[name] = b"".join(chunks).partition(b"\r\n\r\n")[2]

    with native, translated:
        native.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        native.bind(("::", 0))
        port = native.getsockname()[1]
        translated.bind(("0.0.0.0", port))  # same port: masquerade would map onto the native one
        threads = [
            threading.Thread(target=fetch, args=("v6", native, (server6, 80))),
            threading.Thread(target=fetch, args=("v4", translated, (SERVER, 80))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    for name in ("v6", "v4"):
        assert bodies.get(name) == pattern_bytes(size), (name, len(bodies.get(name, b"")))
