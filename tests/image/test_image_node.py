"""Node mode's containers AS CONTAINERS: the chart's DaemonSet agent (`clat-node agent`) under
podman with the rendered settings (privileged, the state directory as a hostPath with
Bidirectional propagation, the socket directory), in a network namespace the test makes to
stand for the node (never the host's network); and in each of two pods of the netns testbed the
operator's injected `clat-handoff` init container (uid 65534, no capabilities, read-only root,
the socket directory read-only). The pods then reach the IPv4-only server through the CLAT the
agent made in them, and the agent's /metrics carries each pod's series.

The API server is kmock's emulator, listening inside the node namespace (its thread entered it
before it bound its socket), so the agent container reaches it on 127.0.0.1 as a node-local
API proxy would be reached.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clat_node.netns import run_in_netns
from clat_operator.config import Config
from clat_operator.injection import handoff_container
from pyroute2 import NetNS, netns

from testbed import Testbed
from testbed.servers import PAGE_TEMPLATE
from tests.chart.chart import container_env, node_container, node_daemonset, render
from tests.image.podman import podman, podman_popen, require_image
from tests.node.kube import NODE, Emulator

pytestmark = pytest.mark.root

NS_PREFIX = os.environ.get("CLAT_TEST_NS", "c") + "nimg"
NODE_NS = f"{NS_PREFIX}-node"
SERVER = "203.0.113.10"
PLAT_PREFIX = "2001:db8:64::/96"
# What the DaemonSet's hostPaths are on a node; here temporary directories of the test.
KUBECONFIG_IN_CONTAINER = "/etc/clat-node/kubeconfig"
LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


class NodeEmulator(Emulator):
    """kmock's API emulator whose listening socket lives in the node namespace."""

    def __init__(self, netns_path: str) -> None:
        super().__init__()
        self._netns_path = netns_path

    def _main(self) -> None:
        fd = os.open(self._netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # setns(2) acts on this thread only: the test's own threads stay where they are.
            if LIBC.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the node namespace")
        finally:
            os.close(fd)
        super()._main()


@dataclass(frozen=True)
class Pod:
    netns: str
    name: str
    ipv6: str
    uid: str


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    require_image()
    with Testbed(NS_PREFIX, extra_pods=1) as tb:
        yield tb


@pytest.fixture(scope="module")
def node_ns() -> Iterator[str]:
    if NODE_NS in netns.listnetns():  # a crashed earlier run of this prefix: ours by name
        netns.remove(NODE_NS)
    netns.create(NODE_NS)
    try:
        with NetNS(NODE_NS) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        yield NODE_NS
    finally:
        netns.remove(NODE_NS)


@pytest.fixture(scope="module")
def api(node_ns: str) -> Iterator[Emulator]:
    with NodeEmulator(f"/run/netns/{node_ns}") as emulator:
        emulator.namespace("shop")
        yield emulator


def agent_run_args(agent: dict[str, Any], volumes: dict[str, str], node_ns: str) -> list[str]:
    """`podman run` arguments equivalent to the kubelet running the DaemonSet's agent."""
    security = agent["securityContext"]
    assert security == {"privileged": True, "runAsUser": 0, "runAsNonRoot": False}
    args = ["run", "--rm", "--name", f"{NS_PREFIX}-agent-{os.getpid()}"]
    args += ["--network", f"ns:/run/netns/{node_ns}", "--privileged", "--user", "0"]
    # The kubelet runs it Unconfined (no seccompProfile); podman's --privileged does the same.
    args += ["--security-opt", "seccomp=unconfined"]
    for mount in agent["volumeMounts"]:
        propagation = {"Bidirectional": ",bind-propagation=rshared"}.get(
            mount.get("mountPropagation", ""), ""
        )
        assert mount.get("mountPropagation", "Bidirectional") == "Bidirectional", mount
        source = volumes[mount["name"]]
        args += ["--mount", f"type=bind,src={source},dst={mount['mountPath']}{propagation}"]
    return args


def handoff_run_args(container: dict[str, Any], pod: Pod, socket_dir: str) -> list[str]:
    """`podman run` arguments equivalent to the kubelet running the injected init container."""
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]} and not security["privileged"]
    args = ["run", "--rm", "--name", f"{NS_PREFIX}-handoff-{pod.name}-{os.getpid()}"]
    args += ["--network", f"ns:/run/netns/{pod.netns}"]
    args += ["--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--cap-drop", "ALL"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"]
    args += ["--security-opt", "no-new-privileges", "--read-only"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's own profile
    (mount,) = container["volumeMounts"]
    assert mount["readOnly"] is True
    args += ["--mount", f"type=bind,src={socket_dir},dst={mount['mountPath']},ro"]
    downward = {
        "metadata.namespace": "shop",
        "metadata.name": pod.name,
        "metadata.uid": pod.uid,
    }
    for var in container["env"]:
        value = var.get("value") or downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
        args.append(f"--env={var['name']}={value}")
    return [*args, container["image"], *container["command"]]


def agent_http(node_ns: str, port: int, path: str) -> tuple[int, str]:
    """GET on the agent's port, from a thread inside the node namespace."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except OSError:
            return 0, ""

    fd = os.open(f"/run/netns/{node_ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, get)
    finally:
        os.close(fd)


def mounts_under(path: str) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(path + "/")
    ]


def test_the_agent_container_serves_two_pods_handed_over_by_init_containers(
    testbed: Testbed, node_ns: str, api: Emulator
) -> None:
    image = require_image()
    tb = testbed
    objects = render(
        {
            "clat": {"platPrefix": PLAT_PREFIX},
            "node": {"enabled": True, "reconcileInterval": 1, "releaseOnExit": True},
        }
    )
    agent = node_container(objects)
    assert agent["command"] == ["clat-node", "agent"]
    host_paths = {
        v["name"]: v["hostPath"]["path"]
        for v in node_daemonset(objects)["spec"]["template"]["spec"]["volumes"]
    }
    assert set(host_paths) == {"state", "socket"}
    env = container_env(agent)
    assert env.pop("CLAT_NODE_NAME") == "<fieldRef:spec.nodeName>"
    port = int(env["CLAT_LISTEN"].rsplit(":", 1)[1])

    work = tempfile.mkdtemp(prefix=f"{NS_PREFIX}-")
    os.chmod(work, 0o755)
    # Bidirectional propagation needs the hostPath on a shared mount, as / is on a systemd node;
    # this machine's / is private, so the test's directory becomes a shared mount of its own.
    subprocess.run(["mount", "--bind", work, work], check=True)
    subprocess.run(["mount", "--make-shared", work], check=True)
    volumes = {"state": f"{work}/state", "socket": f"{work}/socket"}
    for directory in volumes.values():
        os.mkdir(directory, 0o755)  # hostPath type DirectoryOrCreate: root's, mode 0755
    api.kubeconfig(f"{work}/kubeconfig")
    args = agent_run_args(agent, volumes, node_ns)
    args += ["--mount", f"type=bind,src={work}/kubeconfig,dst={KUBECONFIG_IN_CONTAINER},ro"]
    args += [f"--env=KUBECONFIG={KUBECONFIG_IN_CONTAINER}", f"--env=CLAT_NODE_NAME={NODE}"]
    args += [f"--env={name}={value}" for name, value in env.items()]
    args += [image, *agent["command"]]
    name = args[args.index("--name") + 1]
    log = Path(f"{work}/agent.log")
    proc = podman_popen(args, log)
    pods = [
        Pod(tb.pod, "web-0", tb.addr.pod, str(uuid.uuid4())),
        Pod(tb.extra[0], "web-1", tb.extra_pod_address(1), str(uuid.uuid4())),
    ]
    try:
        deadline = time.monotonic() + 60
        while agent_http(node_ns, port, "/readyz")[0] != 200:
            assert proc.poll() is None, f"agent exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"agent not ready:\n{log.read_text()}"
            time.sleep(0.2)

        init = handoff_container(Config(sidecar_image=image))
        for pod in pods:
            api.pod("shop", pod.name, [pod.ipv6], uid=pod.uid,
                    annotations={"clat.io/enabled": "true"})  # fmt: skip
            got = podman(*handoff_run_args(init, pod, volumes["socket"]), check=False, timeout=90)
            assert got.returncode == 0, got.stdout + got.stderr + log.read_text()
            assert f"IPv4 works: the agent serves pod shop/{pod.name}" in got.stderr, got.stderr

        # The pods' namespaces, bind-mounted by the agent in its state directory, are seen on
        # the node: the Bidirectional (rshared) mount makes them outlive the agent's container.
        held = mounts_under(volumes["state"])
        assert sorted(held) == sorted(f"{volumes['state']}/netns/{p.uid}" for p in pods), held

        for pod in pods:
            ping = tb.run(pod.netns, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", SERVER])
            assert "3 received" in ping.stdout, ping.stdout + ping.stderr + log.read_text()
            page = tb.run(pod.netns, ["curl", "-sS", "-m", "5", f"http://{SERVER}/"])
            assert page.stdout == PAGE_TEMPLATE.format(address=SERVER), page.stderr
        assert not Path("/sys/class/net/clat").exists()  # nothing in the test's own namespace

        code, text = agent_http(node_ns, port, "/metrics")
        assert code == 200
        for pod in pods:
            labels = f'namespace="shop",pod="{pod.name}"'
            assert f'clat_node_pod_info{{datapath="kernel",{labels}}} 1.0' in text, text
            kernel = re.findall(
                rf'clat_node_pod_kernel_packets_total{{direction="4to6",{labels}}} (\S+)', text
            )
            assert kernel and float(kernel[0]) >= 3, text
        assert "clat_node_pods 2.0" in text

        # SIGTERM as the kubelet sends it; releaseOnExit: each pod's CLAT taken down.
        podman("stop", "--time", "15", name, timeout=40)
        assert proc.wait(30) == 0, log.read_text()
        for pod in pods:
            links = tb.run(pod.netns, ["ip", "-o", "link", "show"]).stdout
            assert " clat:" not in links, links
        assert mounts_under(volumes["state"]) == []
    finally:
        if proc.poll() is None:
            podman("rm", "--force", name, check=False, timeout=30)
            proc.wait(30)
        for target in mounts_under(volumes["state"]):  # a failed run's held namespaces
            subprocess.run(["umount", "-l", target], check=False)
        subprocess.run(["umount", "-l", work], check=False)
        shutil.rmtree(work, ignore_errors=True)
