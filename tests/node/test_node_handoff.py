"""The namespace hand-off end to end: real namespaces, the real unprivileged `clat-node handoff`,
the agent with the Kubernetes verifier against kmock, a PodServer that changes the pod's namespace.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re

import pytest
from clat_node.agent import HandoffServer
from pyroute2 import NetNS, netns

from tests.node.conftest import (
    MARK,
    NOBODY,
    NS_PREFIX,
    Agent,
    PodNs,
    Pods,
    add_pod,
    handoff,
    marks,
    netns_fds,
)
from tests.node.kube import Emulator

pytestmark = pytest.mark.root


def status_field(status: str, key: str) -> str:
    match = re.search(rf"^{key}:\s*(.*)$", status, re.MULTILINE)
    assert match, f"{key} not in /proc/PID/status"
    return match.group(1).strip()


def log_messages(stderr: str) -> list[str]:
    """The messages of the log lines (timestamp and level cut off)."""
    return [line.split(" ", 2)[2] for line in stderr.splitlines()]


async def test_two_pods_hand_over_their_namespaces_and_get_served(
    pods: Pods, api: Emulator, agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clat-node")
    add_pod(api, pods.a)
    add_pod(api, pods.b)
    got_a, got_b = await asyncio.gather(
        handoff(pods.a.netns, agent.socket_path, pods.a),
        handoff(pods.b.netns, agent.socket_path, pods.b),
    )
    assert got_a.returncode == 0, got_a.stderr
    assert got_b.returncode == 0, got_b.stderr
    assert log_messages(got_a.stderr) == [
        f"connected to the agent at {agent.socket_path}",
        f"handed over the network namespace of pod shop/web-a (inode {pods.a.inode})",
        "IPv4 works: the agent serves pod shop/web-a",
    ]

    # The agent's change is in each pod's own namespace, and nowhere else.
    assert marks(pods.a.netns) == [MARK]
    assert marks(pods.b.netns) == [MARK]
    assert marks(pods.node) == []
    served = {p.uid: p for p in agent.pod_server.served}
    for pod in (pods.a, pods.b):
        accepted = served[pod.uid]
        assert accepted.identity.inode == pod.inode
        assert accepted.identity.ipv6 == (pod.ipv6,)
        assert accepted.pod.ipv6 == pod.ipv6
        # Close-on-exec: whatever the agent starts later does not inherit the pods' namespaces.
        assert fcntl.fcntl(accepted.netns_fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert (accepted.pod.namespace, accepted.pod.name) == (pod.namespace, pod.name)
        # SO_PEERCRED: the hand-off ran as nobody, and had no capability of any kind.
        assert (accepted.peer.uid, accepted.peer.gid) == (NOBODY, NOBODY)
        status = agent.pod_server.peer_status[pod.uid]
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status_field(status, caps), 16) == 0, caps
        assert status_field(status, "NoNewPrivs") == "1"
        assert status_field(status, "Uid").split() == [str(NOBODY)] * 4
        # ... and saw the socket's directory through a read-only mount.
        socket_dir = os.path.dirname(agent.socket_path)
        mount = next(
            line.split()
            for line in agent.pod_server.peer_mounts[pod.uid].splitlines()
            if line.split()[4] == socket_dir
        )
        assert "ro" in mount[5].split(",")
    assert agent.registry.uids() == {pods.a.uid, pods.b.uid}
    # The agent's log: the peer's credentials, then what it serves.
    logged = [r.getMessage() for r in caplog.records]
    peer = served[pods.a.uid].peer
    assert f"hand-off connection from pid={peer.pid} uid={NOBODY} gid={NOBODY}" in logged
    assert (
        f"serving pod shop/web-a (netns inode {pods.a.inode}, {pods.a.ipv6}, from pid={peer.pid} "
        f"uid={NOBODY} gid={NOBODY})"
    ) in logged
    assert f"net:[{pods.a.inode}]" in netns_fds()

    # Release one: its change is undone, its descriptor closed; the other pod is untouched.
    assert await agent.registry.release(pods.a.uid, "pod deleted")
    assert marks(pods.a.netns) == []
    assert marks(pods.b.netns) == [MARK]
    assert f"net:[{pods.a.inode}]" not in netns_fds()
    assert f"net:[{pods.b.inode}]" in netns_fds()
    assert agent.pod_server.torn_down == [pods.a.uid]
    assert not await agent.registry.release(pods.a.uid, "twice")


async def test_a_namespace_claiming_another_pod_is_refused_and_untouched(
    pods: Pods, api: Emulator, agent: Agent
) -> None:
    add_pod(api, pods.a)
    add_pod(api, pods.b)
    got = await handoff(pods.a.netns, agent.socket_path, pods.b)  # a's namespace, b's name
    assert got.returncode == 1
    assert log_messages(got.stderr)[-1] == (
        "clat-node handoff: the agent refused pod shop/web-b: this network namespace is not pod "
        f"shop/web-b's: none of its IPv6 addresses ({pods.a.ipv6}) is an IP of that pod"
    )
    assert marks(pods.a.netns) == []
    assert marks(pods.b.netns) == []
    assert len(agent.registry) == 0
    assert agent.pod_server.served == []
    assert agent.pod_server.peer_status == {}  # refused before the PodServer was asked


async def test_a_pod_that_has_not_opted_in_is_refused(
    pods: Pods, api: Emulator, agent: Agent
) -> None:
    add_pod(api, pods.a, opted_in=False)
    got = await handoff(pods.a.netns, agent.socket_path, pods.a)
    assert got.returncode == 1
    assert "the agent refused pod shop/web-a: pod shop/web-a has not opted in" in got.stderr
    assert marks(pods.a.netns) == []


async def test_a_failing_pod_server_is_the_pods_error(
    pods: Pods, api: Emulator, agent: Agent
) -> None:
    add_pod(api, pods.a)
    agent.pod_server.fail_with = "no TUN today"
    got = await handoff(pods.a.netns, agent.socket_path, pods.a)
    assert got.returncode == 1
    assert got.stderr.rstrip().endswith(
        "clat-node handoff: the agent refused pod shop/web-a: serving the pod failed: no TUN today"
    )
    assert len(agent.registry) == 0


async def test_timeout_then_the_restarted_init_container_is_answered_at_once(
    pods: Pods, api: Emulator, agent: Agent
) -> None:
    add_pod(api, pods.a)
    agent.pod_server.hold = asyncio.Event()
    got = await handoff(pods.a.netns, agent.socket_path, pods.a, timeout=1)
    assert got.returncode == 1
    assert log_messages(got.stderr)[-1] == (
        "clat-node handoff: no answer from the agent within 1 s"
    )
    # The agent finishes serving all the same; the kubelet restarts the init container, which
    # hands over the same namespace again: answered at once, served once.
    agent.pod_server.hold.set()
    for _ in range(100):
        if agent.pod_server.served:
            break
        await asyncio.sleep(0.05)
    again = await handoff(pods.a.netns, agent.socket_path, pods.a, timeout=5)
    assert again.returncode == 0, again.stderr
    assert len(agent.pod_server.served) == 1
    assert marks(pods.a.netns) == [MARK]


async def test_no_agent_is_a_clear_error_after_the_timeout(pods: Pods, socket_dir: str) -> None:
    path = f"{socket_dir}/handoff.sock"
    got = await handoff(pods.a.netns, path, pods.a, timeout=1)
    assert got.returncode == 1
    assert log_messages(got.stderr) == [
        f"waiting for the agent at {path} (No such file or directory)",
        f"clat-node handoff: no agent listening at {path} (No such file or directory): is "
        "clat-node running on this node, and is its socket directory mounted here?",
    ]


async def test_the_pod_waits_for_an_agent_that_starts_later(
    pods: Pods, api: Emulator, agent: Agent, socket_dir: str
) -> None:
    add_pod(api, pods.a)
    path = f"{socket_dir}/late.sock"
    pending = asyncio.create_task(handoff(pods.a.netns, path, pods.a, timeout=10))
    await asyncio.sleep(1.0)
    late = HandoffServer(path, agent.verifier, agent.pod_server, agent.registry)
    await late.start()
    try:
        got = await pending
    finally:
        await late.close()
    assert got.returncode == 0, got.stderr
    assert log_messages(got.stderr)[0].startswith(f"waiting for the agent at {path}")
    assert sum("waiting" in line for line in log_messages(got.stderr)) == 1
    assert marks(pods.a.netns) == [MARK]


async def test_a_new_sandbox_of_the_same_pod_replaces_the_old_one(
    pods: Pods, api: Emulator, agent: Agent
) -> None:
    add_pod(api, pods.a)
    assert (await handoff(pods.a.netns, agent.socket_path, pods.a)).returncode == 0
    # The pod's sandbox is re-created: a new namespace with the same pod IP (on lo here).
    second = PodNs(f"{NS_PREFIX}-a2", pods.a.namespace, pods.a.name, pods.a.ipv6, pods.a.uid)
    netns.create(second.netns)

    def pod_ip_on_lo() -> None:
        with NetNS(second.netns) as inside:
            inside.link("set", index=1, state="up")
            inside.addr("add", index=1, address=second.ipv6, prefixlen=128, family=10)

    try:
        await asyncio.to_thread(pod_ip_on_lo)
        got = await handoff(second.netns, agent.socket_path, second)
        assert got.returncode == 0, got.stderr
        assert marks(pods.a.netns) == []  # the old one undone and let go of
        assert marks(second.netns) == [MARK]
        assert agent.registry.get(pods.a.uid).identity.inode == second.inode  # type: ignore[union-attr]
        assert f"net:[{pods.a.inode}]" not in netns_fds()
        await agent.registry.release_all("test over")
    finally:
        netns.remove(second.netns)


async def test_pods_gone_from_the_api_are_released(pods: Pods, api: Emulator, agent: Agent) -> None:
    add_pod(api, pods.a)
    add_pod(api, pods.b)
    for pod in (pods.a, pods.b):
        assert (await handoff(pod.netns, agent.socket_path, pod)).returncode == 0
    await asyncio.to_thread(api.delete_pod, "shop", pods.a.name)
    live = await agent.verifier.live_pod_uids()
    assert await agent.registry.reconcile(live) == [pods.a.uid]
    assert marks(pods.a.netns) == []
    assert marks(pods.b.netns) == [MARK]
    assert agent.registry.uids() == {pods.b.uid}
    assert f"net:[{pods.a.inode}]" not in netns_fds()
