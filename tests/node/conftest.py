"""Fixtures of the node-mode tests: "pod" network namespaces, the agent, the unprivileged hand-off.

Two pods are namespaces with a veth each to a "node" namespace (never to the host), each with
its own global IPv6 address. The agent runs in the test's event loop; its verifier asks kmock's
API emulator over HTTP. The hand-off is the real `clat-node handoff` command, run inside a pod
namespace as uid 65534 with no capabilities at all (setpriv), as a pod's init container runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clat_node.agent import AcceptedPod, HandoffServer, PodRegistry, Teardown
from clat_node.netns import run_in_netns
from clat_node.verify import KubernetesPodVerifier
from clat_translator.rtnl import IPRoute
from pyroute2 import NetNS, netns

from tests.node.kube import NODE, Emulator

# CLAT_TEST_NS lets two checkouts run their netns tests side by side without sharing names.
NS_PREFIX = os.environ.get("CLAT_TEST_NS", "clt") + "-node"
CLAT_NODE = str(Path(sys.executable).parent / "clat-node")
NOBODY = 65534
# An init container as the restricted Pod Security Standard has it: non-root, no capabilities
# (none permitted, effective, inheritable, ambient, nor in the bounding set), no new privileges.
UNPRIVILEGED = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
]
# What the test PodServer makes inside a served pod: an IPv4 address, as the CLAT will.
MARK = "192.0.0.1"


@dataclass(frozen=True)
class PodNs:
    netns: str
    namespace: str
    name: str
    ipv6: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.netns}").st_ino


@dataclass(frozen=True)
class Pods:
    node: str
    a: PodNs
    b: PodNs


def netns_fds() -> list[str]:
    """The network namespaces this process holds descriptors of (`net:[inode]`)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            held.append(target)
    return sorted(held)


def _lo_ipv4() -> list[str]:
    with IPRoute() as ipr:
        found = {str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(family=2, index=1)}
    return sorted(found - {"127.0.0.1"})


def marks(ns: str) -> list[str]:
    """The IPv4 addresses on lo besides 127.0.0.1 in namespace `ns`.

    Read from a thread of its own: callable from a coroutine, where pyroute2's synchronous API
    cannot run."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, _lo_ipv4)
    finally:
        os.close(fd)


@pytest.fixture
def pods() -> Iterator[Pods]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    names = [f"{NS_PREFIX}-host", f"{NS_PREFIX}-a", f"{NS_PREFIX}-b"]
    for name in names:
        if name in netns.listnetns():  # a crashed earlier run of this prefix: ours by name
            netns.remove(name)
        netns.create(name)
    node, ns_a, ns_b = names
    try:
        built = Pods(
            node=node,
            a=PodNs(ns_a, "shop", "web-a", "2001:db8:5::a"),
            b=PodNs(ns_b, "shop", "web-b", "2001:db8:5::b"),
        )
        with NetNS(node) as host:
            host.link("set", index=host.link_lookup(ifname="lo")[0], state="up")
            for n, pod in enumerate((built.a, built.b)):
                host.link("add", ifname=f"to-pod{n}", kind="veth",
                          peer={"ifname": "eth0", "net_ns_fd": pod.netns})  # fmt: skip
                index = host.link_lookup(ifname=f"to-pod{n}")[0]
                host.link("set", index=index, state="up")
                with NetNS(pod.netns) as inside:
                    for ifname in ("lo", "eth0"):
                        inside.link("set", index=inside.link_lookup(ifname=ifname)[0], state="up")
                    eth0 = inside.link_lookup(ifname="eth0")[0]
                    inside.addr("add", index=eth0, address=pod.ipv6, prefixlen=64, family=10)
        yield built
    finally:
        for name in names:
            netns.remove(name)
        assert not set(names) & set(netns.listnetns())


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.namespace("shop")
        emulator.namespace("quiet")
        yield emulator


def add_pod(api: Emulator, pod: PodNs, opted_in: bool = True) -> None:
    annotations = {"clat.io/enabled": "true"} if opted_in else {}
    api.pod(pod.namespace, pod.name, [pod.ipv6], uid=pod.uid, annotations=annotations)


class MarkingServer:
    """A PodServer doing one checkable thing through the descriptor: MARK on the pod's lo.

    It also records, while the hand-off still waits for its answer, what the peer process was:
    /proc/PID/status and /proc/PID/mountinfo of the pid SO_PEERCRED names.
    """

    def __init__(self) -> None:
        self.served: list[AcceptedPod] = []
        self.torn_down: list[str] = []
        self.peer_status: dict[str, str] = {}
        self.peer_mounts: dict[str, str] = {}
        self.fail_with: str | None = None
        self.hold: asyncio.Event | None = None  # set: answer; unset: keep the pod waiting

    async def serve(self, pod: AcceptedPod) -> Teardown:
        self.peer_status[pod.uid] = Path(f"/proc/{pod.peer.pid}/status").read_text()
        self.peer_mounts[pod.uid] = Path(f"/proc/{pod.peer.pid}/mountinfo").read_text()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        await asyncio.to_thread(run_in_netns, pod.netns_fd, self._mark)
        self.served.append(pod)

        async def teardown() -> None:
            await asyncio.to_thread(run_in_netns, pod.netns_fd, self._unmark)
            self.torn_down.append(pod.uid)

        return teardown

    @staticmethod
    def _mark() -> None:
        with IPRoute() as ipr:
            ipr.addr("add", index=1, address=MARK, prefixlen=32)

    @staticmethod
    def _unmark() -> None:
        with IPRoute() as ipr:
            ipr.addr("del", index=1, address=MARK, prefixlen=32)


@dataclass
class Agent:
    server: HandoffServer
    registry: PodRegistry
    pod_server: MarkingServer
    verifier: KubernetesPodVerifier
    socket_path: str


@pytest.fixture
def socket_dir() -> Iterator[str]:
    # The hostPath directory of the real thing; here one that uid 65534 may enter.
    path = tempfile.mkdtemp(prefix=f"{NS_PREFIX}-sock-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def agent(api: Emulator, socket_dir: str) -> AsyncIterator[Agent]:
    held_before = netns_fds()
    open_before = len(os.listdir("/proc/self/fd"))
    registry = PodRegistry()
    pod_server = MarkingServer()
    verifier = KubernetesPodVerifier(api.core_v1(), NODE, wait_for_ips=2.0, poll_interval=0.1)
    socket_path = f"{socket_dir}/handoff.sock"
    server = HandoffServer(socket_path, verifier, pod_server, registry)
    await server.start()
    try:
        yield Agent(server, registry, pod_server, verifier, socket_path)
    finally:
        await server.close()
        await registry.release_all("test over")
        await verifier.close()
    assert not os.path.exists(socket_path)
    assert netns_fds() == held_before, "the agent kept a namespace descriptor open"
    # All descriptors back to the count before, once the emulator has seen the client's HTTP
    # connections close (its side of them lives in this process too).
    for _ in range(40):
        if len(os.listdir("/proc/self/fd")) <= open_before:
            break
        await asyncio.sleep(0.05)
    leaked = len(os.listdir("/proc/self/fd")) - open_before
    assert leaked <= 0, f"{leaked} descriptors more than before the agent"


@dataclass(frozen=True)
class HandoffResult:
    returncode: int
    stderr: str


async def handoff(
    netns_name: str,
    socket_path: str,
    claim: PodNs,
    timeout: float = 20,
) -> HandoffResult:
    """`clat-node handoff` inside `netns_name`, unprivileged, saying it is pod `claim`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLAT_POD_NAMESPACE": claim.namespace,
        "CLAT_POD_NAME": claim.name,
        "CLAT_POD_UID": claim.uid,
    }
    # The init container mounts the socket directory read-only: connect(2) needs no write
    # access to the filesystem. A private mount namespace makes that mount for this process only.
    socket_dir = os.path.dirname(socket_path)
    read_only = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    argv = ["ip", "netns", "exec", netns_name, "unshare", "--mount", "--", "sh", "-c", read_only]
    argv += ["sh", socket_dir, *UNPRIVILEGED, CLAT_NODE, "handoff"]
    argv += ["--socket", socket_path, "--timeout", str(timeout)]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout + 20)
    assert proc.returncode is not None
    return HandoffResult(proc.returncode, stderr.decode(errors="replace"))
