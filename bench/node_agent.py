"""The node agent for the benches: the real `clat-node agent` as a process, its verifier asking
kmock's API emulator (tests/node/kube.py, a test dependency in the dev venv) over real HTTP, and
each pod handed over by the real `clat-node handoff`, unprivileged, inside the pod's namespace,
as tests/node do. No verifier is bypassed: the emulator holds each pod as the API would
(opted in, on this node, with the pod's IPv6 address as its podIP).

The agent runs in the bench's own network namespace (it reaches the emulator on 127.0.0.1
there) and changes nothing in it: everything it makes is inside the pods' namespaces.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.node.kube import NODE, Emulator  # noqa: E402

CLAT_NODE = str(Path(sys.executable).parent / "clat-node")
NOBODY = 65534
# An init container as the restricted Pod Security Standard has it (tests/node/conftest.py).
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

COUNTERS = (
    "clat_node_pod_kernel_packets",
    "clat_node_pod_kernel_passed",
    "clat_node_pod_drops",
    "clat_node_pod_info",
    "clat_node_pod_packets",
)


class NodeAgent:
    """An emulated API server and one `clat-node agent` using it; pods handed to it one by one."""

    def __init__(self, plat_prefix: str, port: int, *extra: str) -> None:
        self.plat_prefix = plat_prefix
        self.port = port
        self.extra = extra
        self.work = Path(tempfile.mkdtemp(prefix="cbench-node-"))
        os.chmod(self.work, 0o755)  # uid 65534 must reach the socket
        self.socket = str(self.work / "handoff.sock")
        self.log = self.work / "agent.log"
        self.api = Emulator()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.api.__enter__()
        self.api.namespace("bench")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KUBECONFIG": self.api.kubeconfig(str(self.work / "kubeconfig")),
            "CLAT_NODE_NAME": NODE,
        }
        argv = [CLAT_NODE, "agent", "--socket", self.socket]
        argv += ["--listen", f"127.0.0.1:{self.port}", "--plat-prefix", self.plat_prefix]
        argv += ["--state-dir", str(self.work / "state"), "--release-on-exit", *self.extra]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and self.http("/readyz")[0] != 200:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if self.proc.poll() is not None or self.http("/readyz")[0] != 200:
            self.stop_process()
            raise RuntimeError(f"clat-node agent not ready:\n{self.log.read_text()}")

    def serve(self, netns: str, name: str, ipv6: str, timeout: float = 60) -> None:
        """Register pod `name` (podIP `ipv6`) with the API and hand its namespace over."""
        uid = str(uuid.uuid4())
        self.api.pod("bench", name, [ipv6], uid=uid, annotations={"clat.io/enabled": "true"})
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CLAT_POD_NAMESPACE": "bench",
            "CLAT_POD_NAME": name,
            "CLAT_POD_UID": uid,
        }
        argv = ["ip", "netns", "exec", netns, *UNPRIVILEGED, CLAT_NODE, "handoff"]
        argv += ["--socket", self.socket, "--timeout", str(timeout)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout + 10)
        if done.returncode != 0:
            raise RuntimeError(f"handoff of {name}: {done.stderr}\n{self.log.read_text()}")

    def http(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except OSError:
            return 0, ""

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            children = ""
        return [self.proc.pid, *(int(p) for p in children.split())]

    def counters(self) -> str:
        """Non-zero node-wide and kernel-path series of /metrics, short."""
        found = []
        for line in self.http("/metrics")[1].splitlines():
            if line.startswith(COUNTERS) and not line.endswith(" 0.0"):
                series, _, count = line.rpartition(" ")
                name, _, labels = series.partition("{")
                keep = ",".join(re.findall(r'(?:direction|reason|datapath)="[^"]*"', labels))
                short = name.replace("clat_node_pod_", "").replace("_total", "")
                found.append(f"{short}{{{keep}}}={count}")
        return " ".join(found)

    def stop_process(self) -> None:
        """SIGTERM: with --release-on-exit every pod's CLAT is taken down."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        """The agent (releasing its pods), the emulator, the agent's files."""
        try:
            self.stop_process()
            if self.api._thread.is_alive():
                self.api.__exit__(None, None, None)
        finally:
            held = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(str(self.work) + "/")
            ]
            for target in held:  # an agent that did not finish its release
                subprocess.run(["umount", "-l", target], check=False)
            shutil.rmtree(self.work, ignore_errors=True)
