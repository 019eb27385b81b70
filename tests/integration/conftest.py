"""Fixtures of the sidecar's netns integration tests: one testbed for the whole session, and the
real `clat-translator run` as a process in the pod namespace."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from testbed import Testbed

# CLAT_TEST_NS lets two checkouts run their netns tests side by side without sharing names.
NS_PREFIX = os.environ.get("CLAT_TEST_NS", "clt")
CLAT_TRANSLATOR = str(Path(sys.executable).parent / "clat-translator")
METRICS_PORT = 9180


class ClatProcess:
    """`clat-translator run ARGS` in the pod namespace, its log kept in a file."""

    def __init__(self, tb: Testbed, *args: str, wrapper: Sequence[str] = ()) -> None:
        """`wrapper`: a command the sidecar runs under (setpriv to drop a capability)."""
        self.tb = tb
        self.args = args
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            prefix="clt-log-", suffix=".txt", delete=False
        )
        self.proc = tb.popen(
            tb.pod,
            [*wrapper, CLAT_TRANSLATOR, "run", "--listen", f"[::1]:{METRICS_PORT}", *args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def http(self, path: str) -> tuple[int, str]:
        result = self.tb.run(
            self.tb.pod,
            ["curl", "-s", "-m", "2", "-w", "\n%{http_code}", f"http://[::1]:{METRICS_PORT}{path}"],
        )
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body.rstrip("\n")

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"clat-translator exited {self.proc.returncode}:\n{self.log}")
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"clat-translator not ready after {timeout} s:\n{self.log}")

    def wait_log(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log)
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"no log line matching {pattern!r} within {timeout} s:\n{self.log}")

    def metric(self, name: str, labels: str = "") -> float:
        code, text = self.http("/metrics")
        assert code == 200
        selector = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(selector + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{selector} not in /metrics:\n{text}")

    def metrics_sum(self, name: str) -> float:
        _, text = self.http("/metrics")
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )

    def kernel_path(self) -> bool:
        """Whether the kernel data path runs (its own log line says which one)."""
        return self.wait_log(r"data path: (\w+)").group(1) == "kernel"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"clat-translator ignored signal {sig}:\n{self.log}") from None
        return int(self.proc.returncode)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        os.unlink(self.log_file.name)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    with Testbed(NS_PREFIX) as tb:
        yield tb


def snapshot(tb: Testbed) -> dict[str, str]:
    """What the pod namespace looks like: devices, addresses, routes, nftables, sysctls, tc."""
    commands = {
        "links": ["ip", "-d", "link", "show"],
        "addresses": ["ip", "address", "show"],
        "routes4": ["ip", "-4", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "rules": ["ip", "rule", "show"],
        "nftables": ["nft", "list", "ruleset"],
        "sysctls": ["sysctl", "-a", "-r", r"^net\.(ipv4|ipv6)\."],
        # the kernel path's clsact qdisc and filter (on the TUN, gone with it): on no device
        "qdiscs": ["tc", "qdisc", "show"],
    }
    return {name: tb.run(tb.pod, argv).stdout for name, argv in commands.items()}
