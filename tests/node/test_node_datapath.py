"""The node agent serving real pods: the testbed's network (router, tayga NAT64, IPv4 server)
with pods beside it, the real `clat-node agent` as a process, its verifier asking kmock, and each
pod's unprivileged `clat-node handoff`.

The agent runs in the test's own network namespace (it reaches kmock on 127.0.0.1 there) and
changes nothing in it: everything it makes is inside the pods' namespaces, entered by threads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import Testbed
from testbed.servers import PAGE_TEMPLATE
from tests.node.conftest import CLAT_NODE, PodNs, add_pod, handoff
from tests.node.kube import NODE, Emulator

pytestmark = pytest.mark.root

NS_PREFIX = os.environ.get("CLAT_TEST_NS", "clt") + "n"
SERVER = "203.0.113.10"
PLAT_PREFIX = "2001:db8:64::/96"
EXTRA_PODS = 9  # the testbed's pod and nine more: ten for the memory measurement
METRICS_PORT = 19181
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with Testbed(NS_PREFIX, extra_pods=EXTRA_PODS) as tb:
        yield tb


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.namespace("shop")
        yield emulator


def pod_list(tb: Testbed) -> list[PodNs]:
    pods = [PodNs(tb.pod, "shop", "web-0", tb.addr.pod)]
    for n, netns_name in enumerate(tb.extra, start=1):
        pods.append(PodNs(netns_name, "shop", f"web-{n}", tb.extra_pod_address(n)))
    return pods


def mounts_under(path: str) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(path + "/")
    ]


@dataclass
class AgentProcess:
    argv: list[str]
    env: dict[str, str]
    log_path: str
    state_dir: str
    socket_path: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.argv, *extra], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"agent exited {self.proc.returncode}:\n{self.log}"
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"agent not ready:\n{self.log}")

    @property
    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def http(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{METRICS_PORT}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> Metrics:
        """/metrics as {(name, frozenset of label pairs): value}."""
        code, text = self.http("/metrics")
        assert code == 200
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                name, _, labels = series.partition("{")
                pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels))
                values[(name, pairs)] = float(value)
        return values

    def rss_kib(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert match
        return int(match.group(1))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent ignored signal {sig}:\n{self.log}") from None


@pytest.fixture
def agent(api: Emulator) -> Iterator[AgentProcess]:
    work = tempfile.mkdtemp(prefix=f"{NS_PREFIX}-agent-")
    os.chmod(work, 0o755)
    state_dir = f"{work}/state"
    socket_path = f"{work}/handoff.sock"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KUBECONFIG": api.kubeconfig(f"{work}/kubeconfig"),
        "CLAT_NODE_NAME": NODE,
    }
    argv = [CLAT_NODE, "agent", "--socket", socket_path, "--listen", f"127.0.0.1:{METRICS_PORT}"]
    argv += ["--plat-prefix", PLAT_PREFIX, "--state-dir", state_dir, "--reconcile-interval", "1"]
    agent = AgentProcess(argv, env, f"{work}/agent.log", state_dir, socket_path)
    try:
        yield agent
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
        for target in mounts_under(state_dir):  # a failed test's held namespaces
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(work, ignore_errors=True)


def in_pod(tb: Testbed, pod: PodNs, *argv: str, timeout: float = 30) -> str:
    result = tb.run(pod.netns, list(argv), timeout=timeout)
    assert result.returncode == 0, f"{argv} in {pod.netns}: {result.stdout}{result.stderr}"
    return result.stdout


def udp_echo(tb: Testbed, pod: PodNs, payload: bytes) -> bytes:
    with tb.inside(pod.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        sock.connect((SERVER, 7))
        sock.send(payload)
        return sock.recv(65535)


def ttl_exceeded_from_the_clat(tb: Testbed, pod: PodNs) -> bool:
    """An IPv4 ping with TTL 1: the translator is a hop (RFC 7915 §4), so its own Time Exceeded
    from 192.0.0.2 answers. The kernel path leaves that packet to userspace: the slow path."""
    result = tb.run(pod.netns, ["ping", "-n", "-c", "1", "-t", "1", "-W", "1", SERVER])
    return "From 192.0.0.2" in result.stdout and "Time to live exceeded" in result.stdout


def clat_state(tb: Testbed, pod: PodNs) -> tuple[bool, bool]:
    """(the clat TUN exists, our nftables table exists) in the pod's namespace."""
    link = tb.run(pod.netns, ["ip", "link", "show", "clat"]).returncode == 0
    table = tb.run(pod.netns, ["nft", "list", "table", "ip6", "clat_translator"]).returncode == 0
    return link, table


def series(metrics: Metrics, name: str, pod: PodNs | None = None, **labels: str) -> float:
    if pod is not None:
        labels.update(namespace=pod.namespace, pod=pod.name)
    return metrics.get((name, frozenset(labels.items())), 0.0)


def wait_for(check: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


async def test_two_pods_served_released_and_kept_across_an_agent_kill(
    testbed: Testbed, api: Emulator, agent: AgentProcess
) -> None:
    tb = testbed
    a, b = (
        PodNs(p.netns, p.namespace, p.name, p.ipv6, str(uuid.uuid4())) for p in pod_list(tb)[:2]
    )
    for pod in (a, b):
        add_pod(api, pod)
    agent.start()
    for pod in (a, b):
        got = await handoff(pod.netns, agent.socket_path, pod)
        assert got.returncode == 0, got.stderr + agent.log

    # Made inside each pod, by threads of the agent that entered it: the TUN (netlink and
    # /dev/net/tun), the nftables table (the `nft` child), IPv6 forwarding (/proc/sys).
    for pod in (a, b):
        assert clat_state(tb, pod) == (True, True)
        assert in_pod(tb, pod, "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "1"
        assert "192.0.0.1/32" in in_pod(tb, pod, "ip", "-4", "addr", "show", "clat")
        assert "default dev clat" in in_pod(tb, pod, "ip", "-4", "route")
    # ... and nothing in the agent's own namespace.
    assert not Path("/sys/class/net/clat").exists()

    # Both pods reach the IPv4-only server: ping, HTTP, UDP; the slow path answers TTL 1.
    for pod in (a, b):
        assert "3 received" in in_pod(tb, pod, "ping", "-n", "-c", "3", "-i", "0.2", SERVER)
        page = in_pod(tb, pod, "curl", "-sS", "-m", "5", f"http://{SERVER}/")
        assert page == PAGE_TEMPLATE.format(address=SERVER)
        assert (
            udp_echo(tb, pod, f"hello from {pod.name}".encode())
            == f"hello from {pod.name}".encode()
        )
        assert ttl_exceeded_from_the_clat(tb, pod), agent.log
    trace = in_pod(tb, b, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "10", SERVER, timeout=90)
    hops = [line.split()[1] for line in trace.splitlines()[1:] if len(line.split()) > 1]
    assert "192.0.2.2" in hops and hops[-1] == SERVER, trace

    # Per-pod metrics: the kernel path translated the common packets, the slow path sent the
    # Time Exceeded; traffic of one pod moves only its own series.
    before = agent.metrics()
    for pod in (a, b):
        assert series(before, "clat_node_pod_kernel_packets_total", pod, direction="4to6") > 0
        assert series(before, "clat_node_pod_kernel_packets_total", pod, direction="6to4") > 0
        assert series(before, "clat_node_pod_icmp_errors_sent_total", pod, direction="4to6") >= 1
        assert series(before, "clat_node_pod_kernel_passed_total", pod, reason="hop-limit") >= 1
        assert series(before, "clat_node_pod_info", pod, datapath="kernel") == 1
    assert series(before, "clat_node_pods") == 2
    in_pod(tb, b, "ping", "-n", "-c", "5", "-i", "0.2", SERVER)
    after = agent.metrics()
    for direction in ("4to6", "6to4"):
        name = "clat_node_pod_kernel_packets_total"
        assert series(after, name, a, direction=direction) == series(
            before, name, a, direction=direction
        )
        moved = series(after, name, b, direction=direction) - series(
            before, name, b, direction=direction
        )
        assert moved == 5, (direction, moved)

    # Pod a is deleted: the reconcile (every 1 s) takes its CLAT down inside its namespace and
    # lets the namespace go; pod b keeps working.
    api.delete_pod("shop", a.name)
    wait_for(lambda: clat_state(tb, a) == (False, False), 10, "pod a's TUN and table gone")
    assert in_pod(tb, a, "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "0"
    assert f"released pod shop/{a.name}" in agent.log
    assert not os.path.exists(f"{agent.state_dir}/netns/{a.uid}")
    assert not os.path.exists(f"{agent.state_dir}/pods/{a.uid}.json")
    assert "2 received" in in_pod(tb, b, "ping", "-n", "-c", "2", "-i", "0.2", SERVER)
    assert series(agent.metrics(), "clat_node_pods") == 1

    # SIGKILL: the kernel path keeps pod b's IPv4 (persistent TUN, attached program); only the
    # slow path is gone until the next agent.
    agent.stop(signal.SIGKILL)
    assert "3 received" in in_pod(tb, b, "ping", "-n", "-c", "3", "-i", "0.2", SERVER)
    assert udp_echo(tb, b, b"agent dead") == b"agent dead"
    assert not ttl_exceeded_from_the_clat(tb, b)
    started = time.monotonic()
    agent.start()
    wait_for(lambda: ttl_exceeded_from_the_clat(tb, b), 5, "the slow path back")
    assert time.monotonic() - started < 5 + 20  # start-up is counted in start()'s own wait
    assert f"re-adopted pod shop/{b.name}" in agent.log
    assert "3 received" in in_pod(tb, b, "ping", "-n", "-c", "3", "-i", "0.2", SERVER)

    # SIGTERM leaves the pods working for the next agent, as SIGKILL does.
    assert agent.stop() == 0
    assert "leaving 1 pods working" in agent.log
    assert "2 received" in in_pod(tb, b, "ping", "-n", "-c", "2", "-i", "0.2", SERVER)
    # --release-on-exit (uninstall): every pod's CLAT taken down, no namespace held any more.
    agent.start("--release-on-exit")
    assert agent.stop() == 0
    assert clat_state(tb, b) == (False, False)
    assert mounts_under(agent.state_dir) == []
    assert os.listdir(f"{agent.state_dir}/pods") == []


async def test_memory_per_served_pod(
    testbed: Testbed, api: Emulator, agent: AgentProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = [
        PodNs(p.netns, p.namespace, p.name, p.ipv6, str(uuid.uuid4())) for p in pod_list(testbed)
    ]
    for pod in pods:
        add_pod(api, pod)
    agent.start("--release-on-exit")
    got = await handoff(pods[0].netns, agent.socket_path, pods[0])
    assert got.returncode == 0, got.stderr
    time.sleep(0.5)
    one = agent.rss_kib()
    for pod in pods[1:]:
        got = await handoff(pod.netns, agent.socket_path, pod)
        assert got.returncode == 0, got.stderr
    time.sleep(0.5)
    many = agent.rss_kib()
    for pod in pods:
        assert "1 received" in in_pod(testbed, pod, "ping", "-n", "-c", "1", "-W", "2", SERVER)
    per_pod = (many - one) / (len(pods) - 1)
    with capsys.disabled():
        print(f"\nagent RSS: 1 pod {one} KiB, {len(pods)} pods {many} KiB, {per_pod:.0f} KiB/pod")
    assert per_pod <= 2048, f"{per_pod:.0f} KiB per additional pod"
    assert agent.stop() == 0
    for pod in pods:
        assert clat_state(testbed, pod) == (False, False)
