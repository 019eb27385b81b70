"""The throughput benchmark's plumbing, in seconds rather than minutes: its own testbed with the
native IPv6 server, tayga as a clatd-style CLAT and the sidecar, each measured briefly, one table
out, everything torn down. Numbers are not checked here (speed is the benchmark's business,
not a test's); that each path carried traffic and the sidecar used its offloads is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import netns

pytestmark = pytest.mark.root

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"


def test_bench_smoke_runs_every_path_and_leaves_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--only", "native,tayga,offload,kernel"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    row = next(line for line in out.splitlines() if line.startswith("| TCP 1 stream up"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # native, tayga, clat offload, clat kernel, then the ratios to tayga and to native: all measured
    assert all(re.fullmatch(r"[\d,.]+x?%?", c) for c in cells[1:]), row
    assert re.search(r"clat offload: .*super_packets\{direction=\"4to6\"\}=\d", out), out
    assert re.search(r"clat offload: .*coalesced\{direction=\"4to6\"\}=\d", out), out
    # the kernel column: its traffic went through the program, not the TUN's descriptor
    assert re.search(r"clat kernel: .*kernel_packets\{direction=\"4to6\"\}=\d", out), out
    assert re.search(r'clat kernel: .*datapath_info\{datapath="kernel"', out), out
    assert "clat kernel / native" in out
    assert not [ns for ns in netns.listnetns() if ns.startswith("cbench-")]
