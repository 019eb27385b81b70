"""The sidecar AS A CONTAINER, the way a kubelet runs it in a pod: the operator in the image
says which container it injects (`clat-operator check`); podman runs exactly that (command,
env, user, privileges or capabilities, memory limit) in the pod network namespace of the netns
testbed (testbed/topology.py: real router, tayga NAT64, unbound DNS64, IPv4-only servers), and
the pod reaches the IPv4 servers by their literals: ping, HTTP, UDP, traceroute."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clat_operator import contract

from testbed import Testbed
from testbed.servers import PAGE_TEMPLATE
from tests.image.podman import podman, podman_popen, require_image

pytestmark = pytest.mark.root

NS_PREFIX = os.environ.get("CLAT_TEST_NS", "c") + "img"
SERVER = "203.0.113.10"
IPV4_ROUTER = "192.0.2.2"  # between the NAT64 and the server


def injected_container(image: str, security_mode: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The clat container the operator in `image` injects into an opted-in pod, and the
    pod-level sysctls it adds (`pod securityContext.sysctls ...: name=value ...`)."""
    proc = podman(
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        f"--env=CLAT_OPERATOR_SECURITY_MODE={security_mode}",
        f"--env=CLAT_OPERATOR_SIDECAR_IMAGE={image}",
        image,
        "clat-operator",
        "check",
    )
    sysctls: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.strip().startswith("pod securityContext.sysctls"):
            for item in line.split(": ", 1)[1].split():
                name, _, value = item.partition("=")
                sysctls[name] = value
    return dict(json.loads(proc.stdout[proc.stdout.index("{") :])), sysctls


# securityContext fields this translation to podman understands; a new one fails the test
# until it is translated too (the container must run as the kubelet would run it).
_KNOWN_SECURITY = {
    "runAsUser",
    "runAsNonRoot",
    "privileged",
    "allowPrivilegeEscalation",
    "capabilities",
    "readOnlyRootFilesystem",
}


def podman_run_args(container: dict[str, Any], netns: str, resolv_conf: Path) -> list[str]:
    """`podman run` arguments equivalent to the kubelet running `container` in the pod."""
    security = container.get("securityContext", {})
    assert set(security) <= _KNOWN_SECURITY, f"untranslated: {set(security) - _KNOWN_SECURITY}"
    args = [
        "run",
        "--rm",
        "--name",
        f"{NS_PREFIX}-{container['name']}-{os.getpid()}",
        "--network",
        f"ns:/run/netns/{netns}",
        # The kubelet bind-mounts the pod's resolv.conf (cluster DNS = the DNS64 here).
        "--volume",
        f"{resolv_conf}:/etc/resolv.conf:ro",
    ]
    if security.get("privileged"):
        args.append("--privileged")
    else:
        capabilities = security.get("capabilities", {})
        args += [f"--cap-drop={c}" for c in capabilities.get("drop", [])]
        args += [f"--cap-add={c}" for c in capabilities.get("add", [])]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        # No seccompProfile: the kubelet runs the container Unconfined (unless the node sets
        # --seccomp-default); podman would apply its own profile, which denies bpf() without
        # CAP_SYS_ADMIN.
        args += ["--security-opt", "seccomp=unconfined"]
        # capabilities mode: "the node must provide /dev/net/tun" (contract §3).
        args += ["--device", "/dev/net/tun"]
    if "runAsUser" in security:
        args += ["--user", str(security["runAsUser"])]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for var in container.get("env", []):
        args.append(f"--env={var['name']}={var['value']}")
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        assert memory.endswith("Mi"), memory
        args += ["--memory", f"{int(memory[:-2])}m"]
    return [*args, container["image"], *container["command"], *container.get("args", [])]


class SidecarContainer:
    def __init__(self, tb: Testbed, image: str, security_mode: str) -> None:
        self.tb = tb
        self.container, self.pod_sysctls = injected_container(image, security_mode)
        # The kubelet sets the pod's sysctls in the pod sandbox's netns before any container
        # starts; the sidecar (with /proc/sys read-only in capabilities mode) relies on them.
        self.sysctls_before = {k: tb.sysctl(tb.pod, k) for k in self.pod_sysctls}
        for key, value in self.pod_sysctls.items():
            tb.sysctl(tb.pod, key, value)
        self.port = self.container["ports"][0]["containerPort"]
        self.log = Path(tempfile.mkstemp(prefix=f"{NS_PREFIX}-sidecar-", suffix=".log")[1])
        self.args = podman_run_args(
            self.container, tb.pod, Path("/etc/netns") / tb.pod / "resolv.conf"
        )
        self.name = self.args[self.args.index("--name") + 1]
        self.proc = podman_popen(self.args, self.log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self, path: str) -> int:
        result = self.tb.run(
            self.tb.pod,
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "2",
                "-w",
                "%{http_code}",
                f"http://[::1]:{self.port}{path}",
            ],
        )
        return int(result.stdout or 0)

    def metrics(self) -> str:
        return self.tb.run(
            self.tb.pod, ["curl", "-s", "-m", "2", f"http://[::1]:{self.port}/metrics"]
        ).stdout

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the clat container exited {self.proc.returncode}:\n{self.output()}")
            if self.http("/readyz") == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"the clat container was not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, as the kubelet does (grace period 10 s), and the container's exit code."""
        if self.proc.poll() is None:
            podman("stop", "--time", "10", self.name, check=False, timeout=30)
            self.proc.wait(timeout=30)
        return int(self.proc.returncode)

    def close(self) -> None:
        if self.proc.poll() is None:
            podman("rm", "--force", self.name, check=False, timeout=30)
            self.proc.wait(timeout=30)
        self.log.unlink(missing_ok=True)
        for key, value in self.sysctls_before.items():
            self.tb.sysctl(self.tb.pod, key, value)


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    require_image()
    with Testbed(NS_PREFIX) as tb:
        yield tb


@pytest.fixture(scope="module", params=["privileged", "capabilities"])
def sidecar(request: pytest.FixtureRequest, testbed: Testbed) -> Iterator[SidecarContainer]:
    sidecar = SidecarContainer(testbed, require_image(), request.param)
    try:
        sidecar.wait_ready()
        yield sidecar
    finally:
        sidecar.close()


def test_capabilities_mode_asks_the_kubelet_for_forwarding(sidecar: SidecarContainer) -> None:
    """Unprivileged, /proc/sys is read-only: IPv6 forwarding must come from the pod's sysctls."""
    privileged = sidecar.container["securityContext"].get("privileged", False)
    expected = {} if privileged else {"net.ipv6.conf.all.forwarding": "1"}
    assert sidecar.pod_sysctls == expected


def test_runs_as_injected(sidecar: SidecarContainer) -> None:
    assert sidecar.container["command"] == ["clat-translator", "run"]
    assert sidecar.container["securityContext"]["runAsUser"] == 0
    assert sidecar.http("/healthz") == 200
    # The prefix came from the testbed's DNS64 (RFC 7050), as no setting gave one.
    assert "2001:db8:64::/96" in sidecar.output()


def test_ping(sidecar: SidecarContainer) -> None:
    tb = sidecar.tb
    result = tb.run(tb.pod, ["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER])
    assert "3 received" in result.stdout, result.stdout + result.stderr + sidecar.output()


def test_http(sidecar: SidecarContainer) -> None:
    tb = sidecar.tb
    result = tb.run(tb.pod, ["curl", "-sS", "-m", "5", f"http://{SERVER}/"])
    assert result.stdout == PAGE_TEMPLATE.format(address=SERVER), result.stderr + sidecar.output()


def test_udp(sidecar: SidecarContainer) -> None:
    tb = sidecar.tb
    with tb.inside(tb.pod):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        sock.connect((SERVER, 7))
        sock.send(b"udp through the clat container")
        assert sock.recv(100) == b"udp through the clat container"


def test_traceroute(sidecar: SidecarContainer) -> None:
    tb = sidecar.tb
    result = tb.run(
        tb.pod, ["traceroute", "-n", "-q", "1", "-w", "2", "-m", "10", SERVER], timeout=90
    )
    hops = [line.split()[1] for line in result.stdout.splitlines()[1:] if len(line.split()) > 1]
    assert IPV4_ROUTER in hops and hops[-1] == SERVER, result.stdout


def test_the_kernel_data_path_runs_in_the_container(sidecar: SidecarContainer) -> None:
    """Privileged, and with only the capabilities the operator adds (BPF among them): the
    default `--datapath auto` attaches the kernel path, which then carries the traffic."""
    security = sidecar.container["securityContext"]
    if not security.get("privileged"):
        assert "BPF" in security["capabilities"]["add"]
    assert "data path: kernel (tc-eBPF on the TUN" in sidecar.output(), sidecar.output()
    assert 'clat_datapath_info{datapath="kernel",kernel_unavailable="",' in sidecar.metrics()

    def kernel_packets() -> float:
        lines = sidecar.metrics().splitlines()
        return sum(
            float(line.split()[-1]) for line in lines if line.startswith("clat_kernel_packets")
        )

    before = kernel_packets()
    tb = sidecar.tb
    result = tb.run(tb.pod, ["ping", "-c", "5", "-i", "0.05", "-W", "2", SERVER])
    assert result.returncode == 0, result.stdout
    assert kernel_packets() >= before + 10  # requests and replies, in the kernel


def test_sigterm_exits_0_and_leaves_nothing(sidecar: SidecarContainer) -> None:
    tb = sidecar.tb
    assert sidecar.stop() == 0, sidecar.output()
    assert "clat" not in tb.run(tb.pod, ["ip", "-o", "link", "show"]).stdout
    assert "clat_translator" not in tb.run(tb.pod, ["nft", "list", "tables"]).stdout
    assert tb.run(tb.pod, ["ip", "-4", "route", "show"]).stdout.strip() == ""
    assert sidecar.container["name"] == contract.SIDECAR_CONTAINER_NAME


def test_the_image_holds_the_bpf_object_and_libbpf1_but_no_compiler() -> None:
    image = require_image()
    script = (
        "import ctypes, shutil\n"
        "from clat_translator.bpf.loader import OBJECT_PATH\n"
        "assert OBJECT_PATH.read_bytes()[:4] == b'\\x7fELF', OBJECT_PATH\n"
        "ctypes.CDLL('libbpf.so.1')\n"
        "assert shutil.which('clang') is None\n"
        "print('ok', OBJECT_PATH)\n"
    )
    proc = podman("run", "--rm", "--network", "none", image, "python3", "-c", script)
    assert proc.stdout.startswith("ok /opt/clat/"), proc.stdout + proc.stderr
