"""Worker processes on a multi-queue TUN: /metrics adds them up, a dead one is replaced, SIGTERM
stops them all and leaves the namespace as it was, SIGKILL of the main process takes them along."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from testbed import Testbed

from .conftest import ClatProcess, snapshot

pytestmark = pytest.mark.root

SERVER = "203.0.113.10"
PREFIX = "2001:db8:64::/96"
TWO_WORKERS = ("--plat-prefix", PREFIX, "--workers", "2", "--datapath", "userspace")


def workers(clat: ClatProcess) -> list[int]:
    text = Path(f"/proc/{clat.proc.pid}/task/{clat.proc.pid}/children").read_text()
    return [int(pid) for pid in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)


def ping(tb: Testbed) -> bool:
    return tb.run(tb.pod, ["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER]).returncode == 0


def echo_flows(tb: Testbed, flows: int, rounds: int) -> None:
    """`flows` UDP flows (one source port each) to the echo server, `rounds` datagrams each."""
    with tb.inside(tb.pod):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    for sock in socks:
        sock.settimeout(3)
        sock.connect((SERVER, 7))
    try:
        for r in range(rounds):
            for i, sock in enumerate(socks):
                sock.send(b"flow %d round %d" % (i, r))
                assert sock.recv(100) == b"flow %d round %d" % (i, r)
    finally:
        for sock in socks:
            sock.close()


def test_metrics_add_up_the_workers(testbed: Testbed) -> None:
    clat = ClatProcess(testbed, *TWO_WORKERS)
    try:
        clat.wait_ready()
        assert len(workers(clat)) == 2
        assert re.search(
            r'^clat_datapath_info\{datapath="userspace",kernel_unavailable="",'
            r'offloads="[^"]*tso4[^"]*",requested="userspace",workers="2"\} 1',
            clat.http("/metrics")[1],
            re.MULTILINE,
        )
        before = {
            d: clat.metric("clat_packets_total", f'direction="{d}"') for d in ("4to6", "6to4")
        }
        # 24 flows: the kernel spreads them over both queues by hash (all on one: 2 in 2**24)
        echo_flows(testbed, flows=24, rounds=4)
        time.sleep(0.1)
        for direction in ("4to6", "6to4"):
            count = clat.metric("clat_packets_total", f'direction="{direction}"')
            assert count - before[direction] == 24 * 4, direction
        assert clat.stop() == 0
    finally:
        clat.close()


def test_a_dead_worker_is_replaced(testbed: Testbed) -> None:
    clat = ClatProcess(testbed, *TWO_WORKERS)
    try:
        clat.wait_ready()
        echo_flows(testbed, flows=8, rounds=2)
        time.sleep(0.1)
        counted = clat.metric("clat_packets_total", 'direction="4to6"')
        victim = workers(clat)[0]
        os.kill(victim, signal.SIGKILL)
        match = clat.wait_log(
            rf"worker (\d) \(pid {victim}\) exited \(signal SIGKILL\); starting it again"
        )
        clat.wait_log(rf"worker {match.group(1)} \(pid (?!{victim}\b)\d+\) translating")
        assert len(workers(clat)) == 2 and victim not in workers(clat)
        assert ping(testbed)
        echo_flows(testbed, flows=8, rounds=2)
        time.sleep(0.1)
        # the new worker carries on from its predecessor's counts
        assert clat.metric("clat_packets_total", 'direction="4to6"') >= counted + 16
        assert clat.stop() == 0
    finally:
        clat.close()


def test_sigterm_stops_every_worker_and_leaves_nothing(testbed: Testbed) -> None:
    before = snapshot(testbed)
    clat = ClatProcess(testbed, *TWO_WORKERS)
    try:
        clat.wait_ready()
        pids = workers(clat)
        assert len(pids) == 2 and all(alive(p) for p in pids)
        assert ping(testbed)
        assert clat.stop(signal.SIGTERM) == 0
        assert "stopped 2 workers" in clat.log
        wait_gone(pids, timeout=0.1)  # reaped before the main process exited
    finally:
        clat.close()
    assert snapshot(testbed) == before


def test_sigkill_of_the_main_process_takes_the_workers_along(testbed: Testbed) -> None:
    before = snapshot(testbed)
    first = ClatProcess(testbed, *TWO_WORKERS)
    try:
        first.wait_ready()
        pids = workers(first)
        first.stop(signal.SIGKILL)
        wait_gone(pids)
    finally:
        first.close()
    # with the last queue gone, the kernel deleted the TUN
    assert "clat" not in testbed.run(testbed.pod, ["ip", "-o", "link"]).stdout
    second = ClatProcess(testbed, *TWO_WORKERS)
    try:
        second.wait_ready()
        assert re.search(r"removed leftovers of an earlier run", second.log)
        assert ping(testbed)
        assert second.stop() == 0
    finally:
        second.close()
    assert snapshot(testbed) == before
