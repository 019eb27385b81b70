"""Worker processes, one per TUN queue (IFF_MULTI_QUEUE): the lever for many small packets.

Python translates one packet at a time on one core; the kernel spreads flows over the queues of
a multi-queue TUN by hash, so N workers can translate N flows at once. After setup the main
process forks the workers; each attaches its own queue, translates, and publishes its counters
into a shared anonymous mapping that the main process sums for /metrics and the log. The main
process keeps one detached queue (it keeps the device alive, takes no packets), serves HTTP,
re-checks the prefix (and tells the workers through a pipe), restarts a worker that dies, and on
SIGTERM stops them all before it cleans up. A worker also stops when the main process is gone,
even by SIGKILL: the main process holds the only write end of the worker's control pipe, and the
kernel closes it then (the worker sees the hang-up). With the last queue the kernel deletes the
device. A worker runs the same loop (packet_loop.py) and pump (queue_pump.py) as the main process
does with one worker.
"""

from __future__ import annotations

import contextlib
import gc
import math
import mmap
import os
import select
import signal
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from clat_translator import logs
from clat_translator.counters import packet_counter_keys
from clat_translator.metrics import Stats
from clat_translator.packet_loop import PacketLoop
from clat_translator.queue_pump import QueuePump
from clat_translator.tun import TunDevice, TunError
from clat_translator.xlat import Translator

MAX_AUTO_WORKERS = 8
RESTART_BACKOFF_SECONDS = 1.0
_HANG_UP = select.POLLHUP | select.POLLERR


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    count = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of quota from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`; None = none."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        v1 = Path("/sys/fs/cgroup/cpu")
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def auto_workers() -> int:
    """The default worker count: one per usable CPU, at most MAX_AUTO_WORKERS."""
    return min(usable_cpus(), MAX_AUTO_WORKERS)


class SharedCounters:
    """Each worker's counters in one slot of a shared anonymous mapping, made before fork.

    A slot is a sequence number and one signed 64-bit value per counter. The writer makes the
    sequence odd while it writes (a seqlock), so the reader never sums a half-written slot.
    The counters are counters.py's packet counters, in its order.
    """

    def __init__(self, slots: int, drop_reasons: Sequence[str]) -> None:
        self.keys = packet_counter_keys(drop_reasons)
        self._values = struct.Struct(f"={len(self.keys)}q")
        self._seq = struct.Struct("=q")
        self._slot_size = self._seq.size + self._values.size
        self.slots = slots
        self._map = mmap.mmap(-1, max(1, slots * self._slot_size))  # MAP_SHARED | MAP_ANONYMOUS

    def publish(self, slot: int, stats: Stats) -> None:
        at = slot * self._slot_size
        seq = self._seq.unpack_from(self._map, at)[0]
        self._seq.pack_into(self._map, at, seq + 1)
        self._values.pack_into(
            self._map, at + self._seq.size, *(getattr(stats, n)[k] for n, k in self.keys)
        )
        self._seq.pack_into(self._map, at, seq + 2)

    def read(self, slot: int) -> tuple[int, ...]:
        at = slot * self._slot_size
        for _ in range(1000):
            before = self._seq.unpack_from(self._map, at)[0]
            values: tuple[int, ...] = self._values.unpack_from(self._map, at + self._seq.size)
            if not before & 1 and self._seq.unpack_from(self._map, at)[0] == before:
                return values
        return values  # a writer that died mid-write: its last values, as good as any

    def load(self, slot: int, stats: Stats) -> None:
        """Start `stats` from a slot (a restarted worker continues its predecessor's counts)."""
        for (name, key), value in zip(self.keys, self.read(slot), strict=True):
            getattr(stats, name)[key] = value

    def sum_into(self, stats: Stats) -> None:
        totals = [0] * len(self.keys)
        for slot in range(self.slots):
            for i, value in enumerate(self.read(slot)):
                totals[i] += value
        for (name, key), value in zip(self.keys, totals, strict=True):
            getattr(stats, name)[key] = value

    def close(self) -> None:
        self._map.close()


@dataclass
class _Worker:
    index: int
    pid: int
    control: int  # write end of the worker's control pipe (prefix changes)
    started: float


class WorkerError(RuntimeError):
    """A worker could not start; the message says why."""


class WorkerPool:
    """`count` worker processes, each translating on its own queue of the TUN `tun_name`."""

    def __init__(
        self,
        tun_name: str,
        vnet_hdr: bool,
        count: int,
        translator: Translator,
        drop_reasons: Sequence[str],
    ) -> None:
        self.tun_name = tun_name
        self.vnet_hdr = vnet_hdr
        self.count = count
        self.translator = translator
        self.drop_reasons = tuple(drop_reasons)
        self.counters = SharedCounters(count, self.drop_reasons)
        self.workers: dict[int, _Worker] = {}
        self.log = logs.get()
        self._restart_at: dict[int, float] = {}

    # ---- the main process's side -------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Fork every worker and wait until each has attached its queue."""
        ready = {index: self._spawn(index) for index in range(self.count)}
        self._wait_attached(ready, timeout)

    def _spawn(self, index: int) -> int:
        """Fork worker `index`; return the read end of its "attached" pipe."""
        control_r, control_w = os.pipe()
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        gc.collect()
        gc.freeze()  # the child's collector then leaves the shared pages alone (no copy-on-write)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(control_w)
                os.close(ready_r)
                code = _worker_main(self, index, parent, control_r, ready_w)
            except BaseException as exc:  # noqa: BLE001 - a worker must never return into the parent's code
                with contextlib.suppress(Exception):
                    self.log.error("worker %d failed: %s", index, exc)
            finally:
                os._exit(code)
        gc.unfreeze()
        os.close(control_r)
        os.close(ready_w)
        os.set_blocking(control_w, False)  # a stuck worker must not stall the main process
        self.workers[index] = _Worker(index, pid, control_w, time.monotonic())
        return ready_r

    def _wait_attached(self, ready: dict[int, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(ready)
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerError(
                        f"workers {sorted(pending)} did not attach within {timeout} s"
                    )
                readable, _, _ = select.select(list(pending.values()), [], [], left)
                for index, fd in list(pending.items()):
                    if fd in readable:
                        answer = os.read(fd, 512)
                        if not answer.startswith(b"r"):
                            raise WorkerError(
                                f"worker {index} could not start: "
                                f"{answer.decode(errors='replace') or 'it exited'}"
                            )
                        del pending[index]
        finally:
            for fd in ready.values():
                os.close(fd)

    def update_pool6(self, prefix: str) -> None:
        """Tell every worker the new PLAT prefix (applied between two batches)."""
        line = f"pool6 {prefix}\n".encode()
        for worker in self.workers.values():
            with contextlib.suppress(OSError):
                os.write(worker.control, line)

    def check(self) -> None:
        """Reap workers that died and start them again (at most once a second each)."""
        for index, worker in list(self.workers.items()):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 0
            if pid == 0:
                continue
            os.close(worker.control)
            del self.workers[index]
            self.log.error(
                "worker %d (pid %d) exited (%s); starting it again",
                index,
                worker.pid,
                _describe(status),
            )
            self._restart_at[index] = worker.started + RESTART_BACKOFF_SECONDS
        now = time.monotonic()
        for index, when in list(self._restart_at.items()):
            if now >= when:
                del self._restart_at[index]
                try:
                    self._wait_attached({index: self._spawn(index)}, 10.0)
                except WorkerError as exc:
                    self.log.error("%s", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every worker, wait for them, SIGKILL the ones that do not go."""
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in list(self.workers.values()):
            while True:
                try:
                    pid, _ = os.waitpid(worker.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                if time.monotonic() > deadline:
                    self.log.error("worker %d did not stop: killing it", worker.index)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(worker.pid, 0)
                    break
                time.sleep(0.01)
            with contextlib.suppress(OSError):
                os.close(worker.control)
        self.workers.clear()
        self._restart_at.clear()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"code {os.waitstatus_to_exitcode(status)}"


# ---- the worker's side -------------------------------------------------------------------------


def _worker_main(pool: WorkerPool, index: int, parent: int, control: int, ready: int) -> int:
    if os.getppid() != parent:
        return 0  # the main process is gone already
    # Our own signal handling first (the inherited one wakes the main process's loop), then
    # close what the main process had open: the HTTP socket, netlink sockets, its pipes.
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w, control):
        os.set_blocking(fd, False)
    stopping: list[bool] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    _close_inherited({0, 1, 2, control, ready, wake_r, wake_w})

    try:
        tun = TunDevice.open(pool.tun_name, vnet_hdr=pool.vnet_hdr, multi_queue=True)
    except TunError as exc:
        os.write(ready, f"cannot attach a queue: {exc}".encode()[:500])
        return 1
    stats = Stats(pool.drop_reasons)
    pool.counters.load(index, stats)
    pump = QueuePump(tun, pool.translator, stats)
    os.write(ready, b"r")
    os.close(ready)
    pool.log.info(
        "worker %d (pid %d) translating on its own queue of %s", index, os.getpid(), tun.name
    )
    pending = bytearray()

    def on_control(events: int) -> None:
        data = None if events & _HANG_UP and not events & select.POLLIN else _read_all(control)
        if data is None:
            stopping.append(True)  # the main process is gone: so are we
            return
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            _apply(pool, line.decode(errors="replace"))

    loop = PacketLoop()
    loop.serve(pump)
    loop.watch(control, on_control)
    loop.watch(wake_r, lambda _events: _read_all(wake_r))  # a signal: `stopping` says it
    loop.run(lambda: bool(stopping), publish=lambda: pool.counters.publish(index, stats))
    tun.close()
    return 0


def _apply(pool: WorkerPool, line: str) -> None:
    command, _, argument = line.partition(" ")
    if command == "pool6":
        try:
            pool.translator.update_pool6(argument)
        except ValueError as exc:
            pool.log.error("worker could not apply PLAT prefix %s: %s", argument, exc)


def _read_all(fd: int) -> bytes | None:
    """What is waiting on a non-blocking pipe; None at end of file (the writer is gone)."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return data
        except InterruptedError:
            continue
        if not chunk:
            return data or None
        data += chunk


def _close_inherited(keep: set[int]) -> None:
    """Close what the worker inherited and does not use (the HTTP socket, netlink, ...)."""
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
