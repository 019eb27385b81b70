"""The kernel path on a real `clat` TUN: the real sidecar (userspace path) in the testbed's pod,
and the program attached to its TUN by `KernelDatapath`. Ping and TCP through the real router,
NAT64 and servers must then flow in the kernel (its counters grow) with none of their packets
reaching the TUN's descriptor (the sidecar's own counters stay still); what the program passes
still works through the sidecar. Attach, detach and a killed run's leftover are checked on the
device with pyroute2."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clat_translator.bpf import KernelConfig, KernelDatapath
from clat_translator.bpf.loader import PROGRAM_NAME, TC_H_CLSACT_EGRESS
from pyroute2 import NetNS

from testbed import Testbed
from testbed.servers import pattern_bytes
from tests.integration.conftest import ClatProcess

pytestmark = pytest.mark.root

NS_PREFIX = os.environ.get("CLAT_TEST_NS", "clt") + "k"  # not the integration suite's testbed
SERVER = "203.0.113.10"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    with Testbed(NS_PREFIX) as tb:
        yield tb


@pytest.fixture(scope="module")
def sidecar(testbed: Testbed) -> Iterator[ClatProcess]:
    process = ClatProcess(testbed, "--datapath", "userspace")  # the kernel path is attached here
    try:
        process.wait_ready()
        yield process
        assert process.stop() == 0
    finally:
        process.close()


def kernel_config(tb: Testbed, sidecar: ClatProcess) -> KernelConfig:
    """What the sidecar translates with, read from its log and the pod's uplink."""
    clat_v6 = sidecar.wait_log(r"CLAT IPv6 ([0-9a-f:]+)").group(1)
    prefix = sidecar.wait_log(r"translating via PLAT prefix (\S+)").group(1)
    with NetNS(tb.pod) as ns:
        mtu = ns.get_links(ifname="eth0")[0].get_attr("IFLA_MTU")
    return KernelConfig(pool6=prefix, clat_v4="192.0.0.1", clat_v6=clat_v6, ipv6_mtu=mtu)


def our_filters(tb: Testbed) -> list[str]:
    with NetNS(tb.pod) as ns:
        index = ns.link_lookup(ifname="clat")[0]
        try:
            filters = ns.get_filters(index=index, parent=TC_H_CLSACT_EGRESS)
        except Exception:  # noqa: BLE001 - no clsact qdisc at all
            return []
    names = []
    for f in filters:
        options = f.get_attr("TCA_OPTIONS")
        name = options.get_attr("TCA_BPF_NAME") if options is not None else None
        if name:
            names.append(str(name))
    return names


@pytest.fixture
def kernel(testbed: Testbed, sidecar: ClatProcess) -> Iterator[KernelDatapath]:
    path = KernelDatapath("clat", kernel_config(testbed, sidecar))
    with testbed.inside(testbed.pod):
        path.start()
    try:
        yield path
    finally:
        with testbed.inside(testbed.pod):
            path.stop()


def userspace_packets(sidecar: ClatProcess) -> tuple[float, float]:
    return (
        sidecar.metric("clat_packets_total", 'direction="4to6"'),
        sidecar.metric("clat_packets_total", 'direction="6to4"'),
    )


def test_ping_and_tcp_run_in_the_kernel(
    testbed: Testbed, sidecar: ClatProcess, kernel: KernelDatapath
) -> None:
    assert [n for n in our_filters(testbed) if n.startswith(PROGRAM_NAME)]
    before, users_before = kernel.counters(), userspace_packets(sidecar)

    ping = testbed.run(testbed.pod, ["ping", "-c", "20", "-i", "0.01", "-W", "2", SERVER])
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
    size = 5 * 1024 * 1024
    down = subprocess.run(
        ["ip", "netns", "exec", testbed.pod, "curl", "-sS", "-m", "60"]
        + [f"http://{SERVER}/bytes/{size}"],
        capture_output=True,
        timeout=90,
    )
    assert down.returncode == 0, down.stderr
    assert down.stdout == pattern_bytes(size)
    body = bytes(1024 * 1024)
    up = testbed.run(
        testbed.pod,
        [
            "sh",
            "-c",
            f"head -c {len(body)} /dev/zero | curl -sS -m 60 --data-binary @- "
            f"http://{SERVER}/sha256",
        ],
    )
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == hashlib.sha256(body).hexdigest()

    after = kernel.counters()
    assert after.packets46 - before.packets46 >= 20 + 500  # echo requests, ACKs, the upload
    assert after.packets64 - before.packets64 >= 20 + 3000  # echo replies, 5 MB down
    assert after.bytes64 - before.bytes64 >= size
    assert after.dropped == before.dropped
    # Not one packet of these flows reached the TUN's descriptor, but PMTUD's Packet Too Big
    # from the 1400-byte hop (an ICMP error: userspace's), at most a few.
    users_after = userspace_packets(sidecar)
    assert users_after[1] - users_before[1] == after.passed["icmp"] - before.passed["icmp"]
    assert users_after[0] == users_before[0]


def test_what_the_program_passes_the_sidecar_translates(
    testbed: Testbed, sidecar: ClatProcess, kernel: KernelDatapath
) -> None:
    """A DF-clear UDP datagram bigger than 1280 bytes as IPv6 needs fragments (§4.1): passed,
    translated and fragmented by userspace, answered by the server's echo."""
    before, users_before = kernel.counters(), userspace_packets(sidecar)
    script = (
        "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        "s.setsockopt(socket.IPPROTO_IP,10,0);s.settimeout(3);"  # IP_MTU_DISCOVER: DONT
        f"s.connect(('{SERVER}',7));s.send(b'x'*1400);print(len(s.recv(9000)))"
    )
    result = testbed.run(testbed.pod, [sys.executable, "-c", script])
    assert result.stdout.strip() == "1400", result.stderr
    after = kernel.counters()
    assert after.passed["size"] > before.passed["size"]
    assert userspace_packets(sidecar)[0] > users_before[0]


def test_stop_detaches_and_traffic_returns_to_userspace(
    testbed: Testbed, sidecar: ClatProcess
) -> None:
    path = KernelDatapath("clat", kernel_config(testbed, sidecar))
    with testbed.inside(testbed.pod):
        path.start()
        assert any(n.startswith(PROGRAM_NAME) for n in our_filters(testbed))
        path.stop()
        path.stop()  # twice is harmless
    assert not any(n.startswith(PROGRAM_NAME) for n in our_filters(testbed))
    before = userspace_packets(sidecar)
    ping = testbed.run(testbed.pod, ["ping", "-c", "3", "-i", "0.05", "-W", "2", SERVER])
    assert ping.returncode == 0, ping.stdout
    assert userspace_packets(sidecar)[0] >= before[0] + 3


def test_a_killed_runs_filter_is_found_and_replaced(testbed: Testbed, sidecar: ClatProcess) -> None:
    config = kernel_config(testbed, sidecar)
    script = (
        "import sys,time;from clat_translator.bpf import KernelConfig,KernelDatapath;"
        f"p=KernelDatapath('clat',KernelConfig(**{config.__dict__!r}));p.start();"
        "print('attached',flush=True);time.sleep(60)"
    )
    killed = testbed.popen(
        testbed.pod, [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert killed.stdout is not None
        assert killed.stdout.readline().strip() == b"attached"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    # The filter outlives its process: the kernel keeps the program while it is attached.
    left = [n for n in our_filters(testbed) if n.startswith(PROGRAM_NAME)]
    assert len(left) == 1
    path = KernelDatapath("clat", config)
    with testbed.inside(testbed.pod):
        path.start()
        try:
            now = [n for n in our_filters(testbed) if n.startswith(PROGRAM_NAME)]
            assert path.replaced_leftovers == 1
            assert len(now) == 1 and now != left  # ours, with a new program id
            ping = testbed.run(testbed.pod, ["ping", "-c", "3", "-i", "0.05", "-W", "2", SERVER])
            assert ping.returncode == 0
            assert path.counters().packets64 >= 3
        finally:
            path.stop()
    assert not [n for n in our_filters(testbed) if n.startswith(PROGRAM_NAME)]


def test_the_clat_address_is_the_sidecars(testbed: Testbed, sidecar: ClatProcess) -> None:
    """The configuration above is read from the sidecar, not assumed: its CLAT address is
    routed to the TUN in the pod."""
    config = kernel_config(testbed, sidecar)
    with NetNS(testbed.pod) as ns:
        tun = ns.link_lookup(ifname="clat")[0]
        routes = ns.get_routes(family=10, oif=tun)
    dsts = {ipaddress.IPv6Address(r.get_attr("RTA_DST")) for r in routes if r.get_attr("RTA_DST")}
    assert ipaddress.IPv6Address(config.clat_v6) in dsts
    assert re.fullmatch(r"[0-9a-f:]+/96", config.pool6)
