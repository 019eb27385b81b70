"""Throughput of the CLAT in a netns testbed: native IPv6, Debian's tayga as the CLAT, and
clat-translator's userspace path with offload on and off and its kernel path (tc-eBPF), and node
mode (`clat-node agent` serving the pod after its unprivileged hand-off, bench/node_agent.py),
measured in one run and printed as one table.

    flock /tmp/clat-heavy.lock .venv/bin/python bench/throughput.py [--quick] [--seconds S]

The testbed is testbed/ (prefix `cbench`): pod (IPv6 only) - router - 1400-byte hop - PLAT - IPv4
router - server. Here the server namespace also holds the IPv4 server's pool6-mapped IPv6 address
(2001:db8:64::cb00:710a), reached natively over IPv6, and iperf3 listens on it: a packet to
203.0.113.10 is translated once, by the CLAT in the pod, and by nothing else (no NAT64 in the
path). Each CLAT gets the same arrangement: 192.0.0.1/32 on its TUN, an IPv4 default route
through it (mtu 1480, advmss 1440), the CLAT IPv6 address routed into it and masqueraded to the
pod's address (nftables NAT66).

Measured per path: iperf3 TCP with 1 and 4 streams, up (pod -> server) and down; UDP with
1200-byte datagrams at full speed, with 1 and several senders (one iperf3 process each, on
their own ports, so the flows spread over the TUN queues), received packets/s; ping RTT (many
pings, average); the translator's CPU (from /proc/<pid>/stat, all its processes) and memory
(largest RSS of one process, and the PSS of all its processes added up: shared pages counted
once, as a cgroup counts them). The load average is printed before and after: numbers taken on
a busy machine are not worth keeping.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pyroute2 import NetNS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.node_agent import NodeAgent  # noqa: E402
from testbed import Testbed  # noqa: E402

CLAT_TRANSLATOR = str(Path(sys.executable).parent / "clat-translator")
SERVER4 = "203.0.113.10"
PREFIX = "2001:db8:64::/96"
CLAT_V6 = "fd64:c1a7:464::1"  # the sidecar's default internal address; tayga gets the same
PLAT_R4 = ("2001:db8:3::1", "2001:db8:3::2")  # plat <-> r4, added for the native IPv6 path
R4_SRV = ("2001:db8:4::1", "2001:db8:4::2")  # r4 <-> srv
IFA_F_NODAD = 0x02
BASE_PORT = 5201
UDP_SIZE = 1200
MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # pyroute2 forks helpers that inherit handlers: only the bench itself tears down.
    if os.getpid() != MAIN_PID:
        os._exit(0)
    raise KeyboardInterrupt


# ---- the testbed: a native IPv6 path to the server ----------------------------------------------


def add_native_ipv6_server(tb: Testbed) -> str:
    """Give the server namespace the IPv6 form of the server address and route it natively."""
    server6 = tb.synthesized(SERVER4)
    tb.sysctl(tb.srv, "net.ipv6.conf.all.disable_ipv6", "0")
    tb.sysctl(tb.srv, "net.ipv6.conf.default.disable_ipv6", "0")
    tb.sysctl(tb.r4, "net.ipv6.conf.all.forwarding", "1")
    for ns, name in ((tb.srv, "eth0"), (tb.srv, "lo")):
        tb.sysctl(ns, f"net.ipv6.conf.{name}.disable_ipv6", "0")
    with NetNS(tb.plat) as ns:
        index = ns.link_lookup(ifname="to-r4")[0]
        ns.addr("add", index=index, address=PLAT_R4[0], prefixlen=64, flags=IFA_F_NODAD)
        # more specific than the NAT64 prefix's route into tayga
        ns.route("add", dst=server6, dst_len=128, gateway=PLAT_R4[1], family=10)
    with NetNS(tb.r4) as ns:
        near, far = ns.link_lookup(ifname="to-plat")[0], ns.link_lookup(ifname="to-srv")[0]
        ns.addr("add", index=near, address=PLAT_R4[1], prefixlen=64, flags=IFA_F_NODAD)
        ns.addr("add", index=far, address=R4_SRV[0], prefixlen=64, flags=IFA_F_NODAD)
        ns.route("add", dst="::", dst_len=0, gateway=PLAT_R4[0], family=10)
        ns.route("add", dst=server6, dst_len=128, gateway=R4_SRV[1], family=10)
    with NetNS(tb.srv) as ns:
        eth0, lo = ns.link_lookup(ifname="eth0")[0], ns.link_lookup(ifname="lo")[0]
        ns.addr("add", index=eth0, address=R4_SRV[1], prefixlen=64, flags=IFA_F_NODAD)
        ns.addr("add", index=lo, address=server6, prefixlen=128, flags=IFA_F_NODAD)
        ns.route("add", dst="::", dst_len=0, gateway=R4_SRV[0], family=10)
    for _ in range(50):
        if tb.run(tb.pod, ["ping", "-6", "-c1", "-W1", server6]).returncode == 0:
            return server6
        time.sleep(0.2)
    raise RuntimeError(f"no native IPv6 path from the pod to {server6}")


# ---- the translators under test -----------------------------------------------------------------


class Path_:
    """One way from the pod to the server: start, the processes to watch, stop."""

    name = ""
    target = SERVER4

    def start(self, tb: Testbed, tmp: Path) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def stop(self, tb: Testbed) -> None:
        pass


class Native(Path_):
    name = "native IPv6"

    def __init__(self, server6: str) -> None:
        self.target = server6


class Tayga(Path_):
    """Debian's tayga as a clatd-style CLAT in the pod."""

    name = "tayga"
    TUN = "clat"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf: Path | None = None
        self.forwarding = "0"

    def start(self, tb: Testbed, tmp: Path) -> None:
        self.conf = tmp / "tayga-clat.conf"
        data = tmp / "tayga-clat"
        data.mkdir(exist_ok=True)
        # clatd's configuration of tayga (clatd, "tayga.conf" it writes)
        self.conf.write_text(
            f"tun-device {self.TUN}\nipv4-addr 192.0.0.2\nprefix {PREFIX}\n"
            f"map 192.0.0.1 {CLAT_V6}\ndata-dir {data}\n"
        )
        tb.run(tb.pod, ["tayga", "--mktun", "-c", str(self.conf)], check=True)
        with NetNS(tb.pod) as ns:
            index = ns.link_lookup(ifname=self.TUN)[0]
            ns.link("set", index=index, state="up", mtu=1500)
            ns.addr("add", index=index, address="192.0.0.1", prefixlen=32)
            ns.route(
                "add",
                dst="0.0.0.0",
                dst_len=0,
                oif=index,
                prefsrc="192.0.0.1",
                metrics={"RTAX_MTU": 1480, "RTAX_ADVMSS": 1440},
            )
            ns.route("add", dst=CLAT_V6, dst_len=128, oif=index, family=10)
        self.forwarding = tb.sysctl(tb.pod, "net.ipv6.conf.all.forwarding")
        tb.sysctl(tb.pod, "net.ipv6.conf.all.forwarding", "1")
        nft = (
            "table ip6 cbench_tayga {\n  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip6 saddr {CLAT_V6} oifname != "{self.TUN}" masquerade\n  }}\n}}\n'
        )
        subprocess.run(
            ["ip", "netns", "exec", tb.pod, "nft", "-f", "-"], input=nft.encode(), check=True
        )
        self.proc = tb.popen(
            tb.pod,
            ["tayga", "--nodetach", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: ping_ok(tb, SERVER4), "tayga translating")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self, tb: Testbed) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self.conf is not None:
            tb.run(tb.pod, ["tayga", "--rmtun", "-c", str(self.conf)])
            self.conf = None
        tb.run(tb.pod, ["nft", "delete", "table", "ip6", "cbench_tayga"])
        tb.sysctl(tb.pod, "net.ipv6.conf.all.forwarding", self.forwarding)


class Sidecar(Path_):
    """clat-translator run, as the injected container runs it (defaults, and `extra`)."""

    def __init__(self, name: str, *extra: str) -> None:
        self.name = name
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def start(self, tb: Testbed, tmp: Path) -> None:
        self.log = tmp / f"clat-{len(self.extra)}-{'-'.join(self.extra)}.log"
        with open(self.log, "wb") as log:
            self.proc = tb.popen(
                tb.pod,
                [
                    CLAT_TRANSLATOR,
                    "run",
                    "--plat-prefix",
                    PREFIX,
                    "--listen",
                    "[::1]:9180",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: (
                tb.run(tb.pod, ["curl", "-sf", "-m1", "http://[::1]:9180/readyz"]).returncode == 0
            ),
            f"clat-translator ready (log: {self.log})",
            process=self.proc,
        )
        wait_for(lambda: ping_ok(tb, SERVER4), "clat-translator translating")

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self, tb: Testbed) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class Node(Path_):
    """Node mode: the agent, outside the pod, serves it after the pod handed its namespace over
    (`clat-node handoff`, unprivileged); the kernel path for the common packets, the agent's
    one slow path for the rest."""

    name = "clat node"
    PORT = 19182

    def __init__(self) -> None:
        self.agent: NodeAgent | None = None

    def start(self, tb: Testbed, tmp: Path) -> None:
        self.agent = NodeAgent(PREFIX, self.PORT, "--datapath", "kernel")
        try:
            self.agent.start()
            self.agent.serve(tb.pod, "bench-0", tb.addr.pod)
            wait_for(lambda: ping_ok(tb, SERVER4), "clat-node translating")
        except BaseException:
            self.stop(tb)
            raise

    def pids(self) -> list[int]:
        return self.agent.pids() if self.agent is not None else []

    def counters(self) -> str:
        return self.agent.counters() if self.agent is not None else ""

    def stop(self, tb: Testbed) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None


# ---- helpers ------------------------------------------------------------------------------------


def wait_for(
    check: Callable[[], bool],
    what: str,
    timeout: float = 20,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def ping_ok(tb: Testbed, target: str) -> bool:
    return tb.run(tb.pod, ["ping", "-c1", "-W1", target]).returncode == 0


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


@dataclass
class MemoryWatch:
    """Samples the memory of a path's processes while the tests run."""

    pids: Callable[[], list[int]]
    max_rss: int = 0
    max_pss_sum: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemoryWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            sizes = [memory_kib(p) for p in self.pids()]
            if sizes:
                self.max_rss = max(self.max_rss, *(r for r, _ in sizes))
                self.max_pss_sum = max(self.max_pss_sum, sum(p for _, p in sizes))


# ---- the measurements ---------------------------------------------------------------------------


@dataclass
class Settings:
    seconds: int
    omit: int
    udp_senders: int
    pings: int
    tests: tuple[str, ...]


def iperf3(tb: Testbed, target: str, s: Settings, port: int, *args: str) -> subprocess.Popen[bytes]:
    argv = ["iperf3", "-c", target, "-p", str(port), "-t", str(s.seconds), "-O", str(s.omit)]
    return tb.popen(tb.pod, [*argv, "-J", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"iperf3: {err.decode(errors='replace')[-500:]}") from None
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return dict(data)


def tcp_gbits(tb: Testbed, target: str, s: Settings, streams: int, down: bool) -> float:
    args = ["-P", str(streams)] + (["-R"] if down else [])
    data = finish(iperf3(tb, target, s, BASE_PORT, *args), s.seconds + s.omit + 30)
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def udp_kpps(tb: Testbed, target: str, s: Settings, senders: int, down: bool) -> float:
    """Datagrams/s received, summed over `senders` iperf3 processes sending at full speed."""
    args = ["-u", "-b", "0", "-l", str(UDP_SIZE)] + (["-R"] if down else [])
    procs = [iperf3(tb, target, s, BASE_PORT + i, *args) for i in range(senders)]
    total = 0.0
    failed: Exception | None = None
    for proc in procs:
        try:
            received = finish(proc, s.seconds + s.omit + 30)["end"]["sum_received"]
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            failed = exc  # collect every process before giving up
            continue
        total += float(received["bytes"]) / UDP_SIZE / float(received["seconds"])
    if failed is not None:
        raise RuntimeError(str(failed))
    return total / 1e3


def ping_us(tb: Testbed, target: str, count: int, flood: bool) -> float:
    """Average RTT: 100 pings a second, or flood (the next as soon as the reply is back)."""
    pace = ["-f"] if flood else ["-i", "0.01"]
    result = tb.run(tb.pod, ["ping", "-q", *pace, "-c", str(count), "-W", "1", target])
    for line in result.stdout.splitlines():
        if line.startswith(("rtt", "round-trip")):
            return float(line.split("=")[1].split("/")[1]) * 1000
    raise RuntimeError(f"ping {target}: {result.stdout}{result.stderr}")


TESTS: dict[str, str] = {
    "tcp1up": "TCP 1 stream up, Gbit/s",
    "tcp1down": "TCP 1 stream down, Gbit/s",
    "tcp4up": "TCP 4 streams up, Gbit/s",
    "tcp4down": "TCP 4 streams down, Gbit/s",
    "udp1up": "UDP 1200 B, 1 sender up, kpps",
    "udpNup": "UDP 1200 B, {n} senders up, kpps",
    "udp1down": "UDP 1200 B, 1 sender down, kpps",
    "udpNdown": "UDP 1200 B, {n} senders down, kpps",
    "ping": "ping RTT avg at 100/s, us",
    "pingflood": "ping RTT avg, flood (-f), us",
}
SMOKE_TESTS = ("tcp1up", "udp1up", "ping")
ATTEMPTS = 3


def measure(tb: Testbed, path: Path_, s: Settings) -> dict[str, float]:
    t = path.target
    n = s.udp_senders
    runs: dict[str, Callable[[], float]] = {
        "tcp1up": lambda: tcp_gbits(tb, t, s, 1, False),
        "tcp1down": lambda: tcp_gbits(tb, t, s, 1, True),
        "tcp4up": lambda: tcp_gbits(tb, t, s, 4, False),
        "tcp4down": lambda: tcp_gbits(tb, t, s, 4, True),
        "udp1up": lambda: udp_kpps(tb, t, s, 1, False),
        "udpNup": lambda: udp_kpps(tb, t, s, n, False),
        "udp1down": lambda: udp_kpps(tb, t, s, 1, True),
        "udpNdown": lambda: udp_kpps(tb, t, s, n, True),
        "ping": lambda: ping_us(tb, t, s.pings, flood=False),
        "pingflood": lambda: ping_us(tb, t, s.pings * 4, flood=True),
    }
    results: dict[str, float] = {}
    hz = os.sysconf("SC_CLK_TCK")
    busy = 0.0
    ticks = 0
    with MemoryWatch(path.pids) as memory:
        for key in s.tests:
            for attempt in range(1, ATTEMPTS + 1):
                before, started = cpu_ticks(path.pids()), time.monotonic()
                try:
                    results[key] = runs[key]()
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    # iperf3's control connection shares the saturated path and sometimes
                    # loses: measure again (a row stays empty if it never works)
                    print(f"  {path.name}: {key} attempt {attempt}: {exc}", file=sys.stderr)
                    time.sleep(1)
                    continue
                ticks += cpu_ticks(path.pids()) - before
                busy += time.monotonic() - started
                print(f"  {path.name}: {key} {results[key]:.3f}", file=sys.stderr, flush=True)
                break
    if path.pids():
        results["cpu"] = ticks / hz / busy * 100
        results["rss"] = memory.max_rss / 1024
        results["pss"] = memory.max_pss_sum / 1024
    return results


# ---- the table --------------------------------------------------------------------------------

NATIVE, TAYGA = "native IPv6", "tayga"
CLAT = "clat offload"  # the userspace path's default: the one its targets are about
KERNEL = "clat kernel"  # --datapath kernel: the tc-eBPF path (userspace for the rest)
NODE = "clat node"  # the node agent: the same kernel path, the slow path in the agent


def table(names: list[str], results: dict[str, dict[str, float]], s: Settings) -> str:
    ours = [n for n in names if n.startswith("clat")]
    header = ["", *names, f"{CLAT} / tayga", f"{CLAT} / native"]
    header += [f"{o} / tayga" for o in ours if o != CLAT]
    others = [o for o in ours if o != CLAT]
    kernel = [k for k in (KERNEL, NODE) if k in names]  # their own share of native, last
    header += [f"{k} / native" for k in kernel]

    def value(name: str, key: str) -> float | None:
        return results.get(name, {}).get(key)

    def ratio(a: float | None, b: float | None, percent: bool = False) -> str:
        if a is None or not b:
            return ""
        return f"{a / b:.0%}" if percent else f"{a / b:.2f}x"

    rows: list[list[str]] = []
    for key in s.tests:
        label = TESTS[key].format(n=s.udp_senders)
        fmt = "{:,.2f}" if key.startswith("tcp") else "{:,.0f}"
        cells = [fmt.format(v) if (v := value(n, key)) is not None else "" for n in names]
        if key.startswith("ping"):
            base = value(NATIVE, key)
            added = {
                n: v - base for n in names if (v := value(n, key)) is not None and base is not None
            }
            rows.append([label, *cells, "", ""] + ["" for _ in others] + ["" for _ in kernel])
            rows.append(
                ["  added to native, us (lower is better)"]
                + [f"{added[n]:,.0f}" if n in added and n != NATIVE else "" for n in names]
                + [ratio(added.get(CLAT), added.get(TAYGA)), ""]
                + [ratio(added.get(o), added.get(TAYGA)) for o in others]
                + ["" for _ in kernel]
            )
            continue
        rows.append(
            [label, *cells]
            + [ratio(value(CLAT, key), value(TAYGA, key))]
            + [ratio(value(CLAT, key), value(NATIVE, key), percent=True)]
            + [ratio(value(o, key), value(TAYGA, key)) for o in others]
            + [ratio(value(k, key), value(NATIVE, key), percent=True) for k in kernel]
        )
    for key, label in (
        ("cpu", "translator CPU, % of one core, over the tests"),
        ("rss", "translator RSS, MiB (largest process, peak)"),
        ("pss", "translator PSS, MiB (its processes added, peak)"),
    ):
        rows.append(
            [label]
            + [f"{v:,.1f}" if (v := value(n, key)) is not None else "" for n in names]
            + ["", ""]
            + ["" for _ in others]
            + ["" for _ in kernel]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def iperf3_servers(tb: Testbed, server6: str, count: int) -> Iterator[None]:
    procs = [
        tb.popen(
            tb.srv,
            ["iperf3", "-s", "-B", server6, "-p", str(BASE_PORT + i)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(count)
    ]
    try:
        time.sleep(0.5)
        yield
    finally:
        for proc in procs:
            stop_process(proc)


def sidecar_counters(tb: Testbed) -> str:
    """The offload and kernel path counters of a running sidecar: proof of how its packets
    went."""
    text = tb.run(tb.pod, ["curl", "-s", "-m", "2", "http://[::1]:9180/metrics"]).stdout
    wanted = (
        "clat_offload_",
        "clat_datapath_info",
        "clat_drops_total",
        "clat_kernel_packets",
        "clat_kernel_passed",
        "clat_kernel_drops",
    )
    found = []
    for line in text.splitlines():
        if line.startswith(wanted) and not line.endswith(" 0.0"):
            name, _, count = line.rpartition(" ")
            short = name.replace("clat_offload_", "").replace("clat_", "").replace("_total", "")
            found.append(f"{short}={count}")
    return " ".join(found)


PATHS = ("native", "tayga", "offload", "no-offload", "workers", "kernel", "node")
USERSPACE = ("--datapath", "userspace")  # auto would take the kernel path where it loads


def make_paths(server6: str, workers: int) -> dict[str, Path_]:
    return {
        "native": Native(server6),
        "tayga": Tayga(),
        "offload": Sidecar(CLAT, *USERSPACE),
        "no-offload": Sidecar("clat no-offload", *USERSPACE, "--no-offload"),
        "workers": Sidecar(
            f"clat offload, {workers} workers", *USERSPACE, "--workers", str(workers)
        ),
        "kernel": Sidecar(KERNEL, "--datapath", "kernel"),
        "node": Node(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every test, 1 s each")
    parser.add_argument(
        "--smoke", action="store_true", help="the plumbing only: a few 1 s tests per path"
    )
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 time per test")
    parser.add_argument("--senders", type=int, default=4, help="UDP senders, multi-flow rows")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="workers column"
    )
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(PATHS)}")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/throughput.py needs root (network namespaces)", file=sys.stderr)
        return 1
    for tool in ("iperf3", "tayga", "nft", "ping", "curl"):
        if shutil.which(tool) is None:
            print(f"bench/throughput.py needs {tool} (make deps)", file=sys.stderr)
            return 1
    only = [p for p in args.only.split(",") if p] or list(PATHS)
    if unknown := set(only) - set(PATHS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {PATHS}")
    if args.smoke:
        s = Settings(1, 0, 2, 20, SMOKE_TESTS)
    elif args.quick:
        s = Settings(1, 0, 2, 50, tuple(TESTS))
    else:
        s = Settings(args.seconds, 1, args.senders, 500, tuple(TESTS))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    start_load = load()
    results: dict[str, dict[str, float]] = {}
    counters: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="cbench-"))
    try:
        with Testbed("cbench") as tb:
            server6 = add_native_ipv6_server(tb)
            paths = [path for key, path in make_paths(server6, args.workers).items() if key in only]
            with iperf3_servers(tb, server6, max(s.udp_senders, 1)):
                for path in paths:
                    path.start(tb, tmp)
                    try:
                        results[path.name] = measure(tb, path, s)
                        if isinstance(path, Sidecar):
                            counters[path.name] = sidecar_counters(tb)
                        elif isinstance(path, Node):
                            counters[path.name] = path.counters()
                    finally:
                        path.stop(tb)
    except KeyboardInterrupt:
        print("interrupted: torn down", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"clat-translator throughput, one run: {len(os.sched_getaffinity(0))} cores, "
        f"Linux {os.uname().release}, iperf3 {s.seconds} s per test (+{s.omit} s omitted), "
        f"UDP {UDP_SIZE} B datagrams at full speed, {s.pings} pings at 100/s"
    )
    print(f"load average before: {start_load}; after: {load()}")
    print()
    print(table([p.name for p in paths], results, s))
    print()
    for name, text in counters.items():
        print(f"{name}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
