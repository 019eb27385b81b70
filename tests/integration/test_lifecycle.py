"""The sidecar's life in a pod namespace: discover, stand down, clean exit, SIGKILL recovery,
a PLAT prefix change applied live, a routed CLAT address without NAT66 — over the kernel data
path and the userspace one; `--datapath kernel` refused and `auto` falling back without CAP_BPF."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from pyroute2 import NetNS
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPREF64

from testbed import Testbed

from .conftest import CLAT_TRANSLATOR, ClatProcess, snapshot

pytestmark = pytest.mark.root

SERVER = "203.0.113.10"
PREFIX = "2001:db8:64::/96"
# No CAP_BPF (nor CAP_SYS_ADMIN, which also allows bpf()): as in a pod without them.
WITHOUT_BPF = ("setpriv", "--bounding-set", "-bpf,-sys_admin", "--")


@pytest.fixture(params=["kernel", "userspace"])
def datapath(request: pytest.FixtureRequest) -> tuple[str, str]:
    """`--datapath X` for the sidecars of a test: each runs over both data paths."""
    return ("--datapath", request.param)


def kernel_packets(clat: ClatProcess) -> float:
    return clat.metrics_sum("clat_kernel_packets_total")


def ping(tb: Testbed, count: int = 1) -> bool:
    result = tb.run(tb.pod, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", SERVER])
    return result.returncode == 0


def test_discover_prints_the_dns64_prefix(testbed: Testbed) -> None:
    result = testbed.run(testbed.pod, [CLAT_TRANSLATOR, "discover"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{PREFIX}\n"


def test_discover_without_a_dns64_says_so(testbed: Testbed) -> None:
    # 2001:db8:2::2 is the PLAT's own address: no DNS server listens there
    result = testbed.run(
        testbed.pod, [CLAT_TRANSLATOR, "discover", "--dns64-server", "2001:db8:2::2"]
    )
    assert result.returncode == 1
    assert "no DNS64 prefix from 2001:db8:2::2" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_leaves_the_namespace_exactly_as_before(
    testbed: Testbed, datapath: tuple[str, str]
) -> None:
    before = snapshot(testbed)
    clat = ClatProcess(testbed, "--plat-prefix", PREFIX, *datapath)
    try:
        clat.wait_ready()
        during = snapshot(testbed)
        assert "clat_translator" in during["nftables"]
        assert "default dev clat" in during["routes4"]
        kernel = "kernel" in datapath
        assert ("qdisc clsact ffff: dev clat" in during["qdiscs"]) is kernel, during["qdiscs"]
        assert clat.kernel_path() is kernel
        assert ping(testbed)
        assert (kernel_packets(clat) >= 2) is kernel
        # readiness is checked against the namespace, not remembered
        testbed.run(testbed.pod, ["ip", "-4", "route", "del", "default", "dev", "clat"], check=True)
        assert clat.http("/readyz") == (503, "the routes through clat are missing")
        assert clat.stop(signal.SIGTERM) == 0
    finally:
        clat.close()
    assert snapshot(testbed) == before


def test_sigint_exits_0_too(testbed: Testbed) -> None:
    clat = ClatProcess(testbed, "--plat-prefix", PREFIX)
    try:
        clat.wait_ready()
        assert clat.stop(signal.SIGINT) == 0
        assert "stopping on SIGINT" in clat.log
    finally:
        clat.close()


def test_sigkill_then_restart_replaces_the_leftovers(
    testbed: Testbed, datapath: tuple[str, str]
) -> None:
    before = snapshot(testbed)
    first = ClatProcess(testbed, "--plat-prefix", PREFIX, *datapath)
    try:
        first.wait_ready()
        first.stop(signal.SIGKILL)
    finally:
        first.close()
    leftover = snapshot(testbed)
    assert "clat_translator" in leftover["nftables"]
    assert testbed.sysctl(testbed.pod, "net.ipv6.conf.all.forwarding") == "1"
    # The TUN went with the killed process's descriptor, and the kernel path's qdisc and
    # filter with the TUN: the kernel path itself leaves nothing behind.
    assert leftover["qdiscs"] == before["qdiscs"]
    assert leftover["links"] == before["links"]

    second = ClatProcess(testbed, "--plat-prefix", PREFIX, *datapath)
    try:
        second.wait_ready()
        assert "removed leftovers of an earlier run: nftables table ip6 clat_translator" in (
            second.log
        )
        assert second.kernel_path() is ("kernel" in datapath)
        assert ping(testbed)
        assert (kernel_packets(second) >= 2) is ("kernel" in datapath)
        assert second.stop() == 0
    finally:
        second.close()
    # the sysctls the killed run changed are back too: their originals were kept in the table
    assert snapshot(testbed) == before


def test_stands_down_when_the_pod_has_native_ipv4(testbed: Testbed) -> None:
    before = snapshot(testbed)
    with NetNS(testbed.pod) as ns:
        # a veth pair inside the pod stands in for a native IPv4 interface (no dummy module here)
        ns.link("add", ifname="native4", kind="veth", peer={"ifname": "native4-peer"})
        index = ns.link_lookup(ifname="native4")[0]
        ns.link("set", index=index, state="up")
        ns.addr("add", index=index, address="198.18.0.2", prefixlen=24)
        ns.route("add", dst="0.0.0.0", dst_len=0, gateway="198.18.0.1")
    try:
        clat = ClatProcess(testbed, "--plat-prefix", PREFIX)
        try:
            clat.wait_ready()
            assert clat.http("/readyz") == (200, "standing down")
            assert "standing down: the pod already has native IPv4 (default via 198.18.0.1" in (
                clat.log
            )
            assert clat.metric("clat_standing_down") == 1
            assert "clat" not in testbed.run(testbed.pod, ["ip", "link"]).stdout
            assert clat.stop() == 0
        finally:
            clat.close()

        forced = ClatProcess(testbed, "--plat-prefix", PREFIX, "--force")
        try:
            forced.wait_ready()
            assert forced.http("/readyz") == (200, "translating")
            assert ping(testbed)  # the /1 routes through the TUN win over the native default
            assert forced.stop() == 0
        finally:
            forced.close()
    finally:
        with NetNS(testbed.pod) as ns:
            ns.link("del", index=ns.link_lookup(ifname="native4")[0])
    assert snapshot(testbed) == before


def test_prefix_change_to_a_64_is_applied_live_under_traffic(
    testbed: Testbed, datapath: tuple[str, str]
) -> None:
    clat = ClatProcess(testbed, *datapath)
    flow: subprocess.Popen[str] | None = None
    try:
        clat.wait_ready()
        assert f"PLAT prefix {PREFIX} from rfc7050" in clat.log
        assert ping(testbed)
        with NetNS(testbed.pod) as ns:
            tun_index = ns.link_lookup(ifname="clat")[0]
        # one echo flow across the switch: lost while the NAT64 moves, answered once it has
        flow = subprocess.Popen(
            ["ip", "netns", "exec", testbed.pod, "ping", "-n", "-i", "0.05", "-W", "1", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        testbed.set_nat64_prefix("2001:db8:6464::/64")
        clat.wait_log(r"PLAT prefix changed 2001:db8:64::/96 -> 2001:db8:6464::/64")
        in_kernel = kernel_packets(clat)
        assert ping(testbed, count=2)
        assert (kernel_packets(clat) >= in_kernel + 4) is ("kernel" in datapath)
        time.sleep(1.5)
        flow.send_signal(signal.SIGINT)
        output = flow.communicate(timeout=10)[0]
        sent = int(re.search(r"(\d+) packets transmitted", output).group(1))  # type: ignore[union-attr]
        answered = {int(n) for n in re.findall(r"icmp_seq=(\d+) ttl", output)}
        # the last second of the flow, after the switch: every echo answered
        assert set(range(sent - 20, sent - 2)) <= answered, output
        with NetNS(testbed.pod) as ns:
            assert ns.link_lookup(ifname="clat") == [tun_index]  # the TUN was not dropped
        discovered = testbed.run(testbed.pod, [CLAT_TRANSLATOR, "discover"])
        assert discovered.stdout == "2001:db8:6464::/64\n"
        assert clat.metric("clat_prefix_changes_total") == 1
        assert clat.metric("clat_prefix_info", 'prefix="2001:db8:6464::/64",source="rfc7050"') == 1
        assert clat.stop() == 0
    finally:
        if flow is not None and flow.poll() is None:
            flow.kill()
            flow.wait()
        clat.close()
        testbed.set_nat64_prefix(PREFIX)


def test_a_prefix_hint_is_used_at_once_and_then_corrected_by_discovery(testbed: Testbed) -> None:
    """The operator's discovered prefix (CLAT_PLAT_PREFIX_HINT) makes the pod ready without
    waiting for discovery; discovery re-checks it and moves to the DNS64's real prefix."""
    stale = "2001:db8:ffff::/96"  # no NAT64 there: as if the DNS64 had moved since
    clat = ClatProcess(testbed, "--plat-prefix-hint", stale)
    try:
        clat.wait_ready()
        assert f"PLAT prefix {stale} from hint" in clat.log
        assert clat.metric("clat_prefix_info", f'prefix="{stale}",source="hint"') == 1
        clat.wait_log(rf"PLAT prefix changed {stale} -> {PREFIX} \(from rfc7050")
        assert ping(testbed, count=2)
        assert clat.metric("clat_prefix_info", f'prefix="{PREFIX}",source="rfc7050"') == 1
        assert clat.stop() == 0
    finally:
        clat.close()


def test_routed_clat_address_without_nat66(testbed: Testbed, datapath: tuple[str, str]) -> None:
    dedicated = "2001:db8:1:c1a7::1"
    with NetNS(testbed.rtr) as rtr:  # the network routes the dedicated address to the pod
        rtr.route(
            "add", dst=dedicated, dst_len=128, gateway=testbed.addr.pod, family=socket.AF_INET6
        )
    try:
        clat = ClatProcess(testbed, "--plat-prefix", PREFIX, "--clat-v6", dedicated, *datapath)
        try:
            clat.wait_ready()
            assert "masquerade" not in testbed.run(testbed.pod, ["nft", "list", "ruleset"]).stdout
            assert ping(testbed)
            assert (kernel_packets(clat) >= 2) is ("kernel" in datapath)
            assert clat.stop() == 0
        finally:
            clat.close()
    finally:
        with NetNS(testbed.rtr) as rtr:
            rtr.route("del", dst=dedicated, dst_len=128, family=socket.AF_INET6)


def test_prefix_from_router_advertisements_rfc8781(testbed: Testbed) -> None:
    """A router advertises PREF64; no DNS64 answers: RFC 8781 alone gives the prefix."""
    ra = bytes(
        ICMPv6ND_RA(routerlifetime=0)  # not a default router: the pod's routes stay as they are
        / ICMPv6NDOptPREF64(scaledlifetime=75, plc=0, prefix="2001:db8:64::")
    )
    with NetNS(testbed.rtr) as rtr:
        index = rtr.link_lookup(ifname="to-pod")[0]
    with testbed.inside(testbed.rtr):
        sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861 §6.1.2
    stop = threading.Event()

    def advertise() -> None:
        while not stop.wait(0.3):
            sender.sendto(ra, ("ff02::1", 0, 0, index))

    thread = threading.Thread(target=advertise, daemon=True)
    thread.start()
    # the PLAT's own address runs no DNS server: RFC 7050 fails there at once
    clat = ClatProcess(testbed, "--dns64-server", testbed.addr.plat)
    try:
        clat.wait_ready()
        assert re.search(r"PLAT prefix 2001:db8:64::/96 from rfc8781 from fe80::\S+ ttl=", clat.log)
        assert clat.metric("clat_discovery_attempts_total", 'method="rfc8781",result="found"') == 1
        assert ping(testbed)
        assert clat.stop() == 0
    finally:
        stop.set()
        thread.join()
        sender.close()
        clat.close()


def test_refuses_a_foreign_device_with_the_tun_name(testbed: Testbed) -> None:
    with NetNS(testbed.pod) as ns:
        ns.link("add", ifname="clat", kind="veth", peer={"ifname": "clat-peer"})
    try:
        clat = ClatProcess(testbed, "--plat-prefix", PREFIX)
        try:
            assert clat.proc.wait(10) == 1
            assert "a device named 'clat' exists and is not a TUN (kind veth)" in clat.log
            assert "Traceback" not in clat.log
        finally:
            clat.close()
    finally:
        with NetNS(testbed.pod) as ns:
            ns.link("del", index=ns.link_lookup(ifname="clat")[0])


# ---- the kernel path refused or given up: no CAP_BPF ------------------------------------------


def test_datapath_kernel_without_cap_bpf_fails_cleanly(testbed: Testbed) -> None:
    before = snapshot(testbed)
    clat = ClatProcess(
        testbed, "--plat-prefix", PREFIX, "--datapath", "kernel", wrapper=WITHOUT_BPF
    )
    try:
        assert clat.proc.wait(20) == 1
        log = clat.log
    finally:
        clat.close()
    failed = [line for line in log.splitlines() if " ERROR " in line]
    assert len(failed) == 1, log
    assert failed[0].endswith(
        "failed: --datapath kernel: loading the BPF program: operation not permitted "
        "(needs CAP_BPF and CAP_NET_ADMIN, and a seccomp profile that allows bpf())"
    ), log
    assert "Traceback" not in log
    assert snapshot(testbed) == before


def test_datapath_auto_without_cap_bpf_falls_back_to_userspace(testbed: Testbed) -> None:
    before = snapshot(testbed)
    clat = ClatProcess(testbed, "--plat-prefix", PREFIX, wrapper=WITHOUT_BPF)  # auto: the default
    try:
        clat.wait_ready()
        reason = "loading the BPF program: operation not permitted"
        said = [line for line in clat.log.splitlines() if "kernel path" in line]
        assert len(said) == 1, clat.log
        assert f"data path: userspace (the kernel path cannot run here: {reason}" in said[0]
        assert not clat.kernel_path()
        _, text = clat.http("/metrics")
        assert re.search(
            rf'clat_datapath_info{{datapath="userspace",kernel_unavailable="{reason} [^"]*",'
            r'offloads="[^"]+",requested="auto",workers="1"} 1\.0',
            text,
        ), text
        assert ping(testbed)
        assert clat.metric("clat_packets_total", 'direction="6to4"') >= 1
        assert kernel_packets(clat) == 0
        assert clat.stop() == 0
    finally:
        clat.close()
    assert snapshot(testbed) == before
