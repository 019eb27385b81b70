"""`make demo`: an IPv6-only pod reaches an IPv4-only server by its IPv4 literal, through the real
clat-translator, a real router with a 1400-byte hop, tayga (NAT64) and unbound (DNS64).

Builds the netns testbed (prefix `cdemo`), runs `clat-translator run` in the pod namespace as a
container would, shows ping and curl, the translator's log and metrics, and tears everything
down, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from testbed.topology import Testbed

CLAT_TRANSLATOR = str(Path(sys.executable).parent / "clat-translator")
SERVER = "203.0.113.10"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(tb: Testbed, ns: str, argv: list[str]) -> bool:
    print(f"[{ns}]$ {' '.join(argv)}", flush=True)
    result = tb.run(ns, argv, timeout=60)
    sys.stdout.write(result.stdout + result.stderr)
    sys.stdout.flush()
    return result.returncode == 0


MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # pyroute2 forks helper children that inherit this handler and get SIGTERM when done:
    # only the demo itself may turn a signal into a teardown.
    if os.getpid() != MAIN_PID:
        os._exit(0)
    raise KeyboardInterrupt


def _wait_ready(tb: Testbed, clat: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while tb.run(tb.pod, ["curl", "-sf", "-m1", "http://[::1]:9180/readyz"]).returncode:
        if clat.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("clat-translator did not become ready (its log follows)")
        time.sleep(0.2)


def _data_path_line(log: str) -> str:
    """The sidecar's own word on its data path (and, on a fallback, why)."""
    for line in log.splitlines():
        if "data path: " in line:
            return line[line.index("data path: ") :]
    return "data path: (not in the log)"


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (it builds network namespaces)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    ok = False
    log = tempfile.NamedTemporaryFile(prefix="cdemo-clat-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        say("building the testbed: pod (IPv6 only) - router (1400 hop) - NAT64/DNS64 - IPv4 server")
        with Testbed("cdemo") as tb:
            clat: subprocess.Popen[bytes] | None = None
            try:
                say(f"the pod namespace {tb.pod} has no IPv4 route and cannot reach {SERVER}")
                show(tb, tb.pod, ["ip", "-4", "route"])
                show(tb, tb.pod, ["ip", "-6", "route"])
                show(tb, tb.pod, ["ping", "-c", "1", "-W", "1", SERVER])

                say("starting clat-translator run in the pod namespace (prefix from the DNS64)")
                clat = tb.popen(
                    tb.pod,
                    [CLAT_TRANSLATOR, "run", "--listen", "[::1]:9180"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the demo, which sends SIGTERM
                )
                _wait_ready(tb, clat)
                show(tb, tb.pod, ["ip", "-4", "route"])
                say("the data path (--datapath auto: the kernel's tc-eBPF program where it loads)")
                print(_data_path_line(Path(log.name).read_text()), flush=True)

                say("IPv4 literals work from the IPv6-only pod")
                pinged = show(tb, tb.pod, ["ping", "-c", "3", "-i", "0.3", SERVER])
                fetched = show(tb, tb.pod, ["curl", "-sS", "-m", "5", f"http://{SERVER}/"])
                show(tb, tb.pod, ["traceroute", "-n", "-q", "1", "-w", "1", "-m", "8", SERVER])
                ok = pinged and fetched

                show(
                    tb,
                    tb.pod,
                    [
                        "sh",
                        "-c",
                        f"curl -sS -m 10 -o /dev/null http://{SERVER}/bytes/1048576"
                        " && echo 1 MiB fetched",
                    ],
                )

                say("the translator's metrics (curl http://[::1]:9180/metrics, non-zero ones)")
                metrics = tb.run(tb.pod, ["curl", "-s", "http://[::1]:9180/metrics"]).stdout
                for line in metrics.splitlines():
                    if line.startswith("clat_") and not line.rstrip().endswith(" 0.0"):
                        print(line)
                say("which path translated: the data path, and the kernel path's counters")
                for line in metrics.splitlines():
                    if line.startswith(
                        ("clat_datapath_info", "clat_kernel_packets", "clat_kernel_bytes")
                    ) or (
                        line.startswith(("clat_kernel_passed", "clat_kernel_drops"))
                        and not line.rstrip().endswith(" 0.0")
                    ):
                        print(line)

                say("stopping the translator (SIGTERM): it removes everything it made")
            finally:
                signal.signal(
                    signal.SIGINT, signal.SIG_IGN
                )  # a second Ctrl-C must not stop cleanup
                if clat is not None and clat.poll() is None:
                    clat.send_signal(signal.SIGTERM)
                    try:
                        print(f"clat-translator exited with {clat.wait(10)}")
                    except subprocess.TimeoutExpired:
                        clat.kill()
                        clat.wait()
                say("the translator's log")
                sys.stdout.write(Path(log.name).read_text())
                say("tearing down the testbed")
    except KeyboardInterrupt:
        print("\ninterrupted: torn down", flush=True)
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
    finally:
        log.close()
        os.unlink(log.name)
    print("done: no namespace, process or file of the demo is left", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
