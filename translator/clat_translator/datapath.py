"""Data paths: what translates the packets once the TUN is configured.

`Datapath` is the small interface the sidecar drives. `UserspaceDatapath` is the one that always
runs: the Python translation of every packet the TUN delivers (queue_pump.py), in this process
with one worker or in worker processes (workers.py). A kernel fast path (tc-eBPF on the TUN,
translator/clat_translator/bpf/) is a second implementation that runs *beside* it: the kernel
translates the common packets and hands everything else on through the TUN, where the userspace
path still takes it. The sidecar attaches data paths in order after the TUN is configured and
before it reports ready (runner.Sidecar._start_datapaths).
"""

from __future__ import annotations

from typing import Protocol

from clat_translator import logs
from clat_translator.metrics import Stats
from clat_translator.packet_loop import PacketLoop
from clat_translator.queue_pump import QueuePump
from clat_translator.tun import TunDevice
from clat_translator.workers import WorkerPool
from clat_translator.xlat import Translator


class Datapath(Protocol):
    """One way of translating the pod's packets, driven by the sidecar's main thread."""

    @property
    def name(self) -> str:
        """Its name in the log and in `clat_datapath_info` ("userspace", "kernel")."""
        ...

    def start(self) -> None:
        """Begin translating (the TUN is up, addressed and routed)."""

    def attach(self, loop: PacketLoop) -> None:
        """Register with the main thread's loop what it must serve (descriptors, checks)."""

    def update_pool6(self, prefix: str) -> None:
        """Switch to a new PLAT prefix, live; ValueError refuses it and changes nothing."""

    def collect(self, stats: Stats) -> None:
        """Bring the counters this path keeps outside `stats` (worker processes, kernel maps)
        up to date in it; called before every read of the counters."""

    def stop(self) -> None:
        """Stop translating and give back what `start` took; counters collected a last time."""


class UserspaceDatapath:
    """Every packet the TUN delivers, translated by `Translator` in Python: by the main
    thread's loop itself with one worker, else by `workers` processes, one per TUN queue."""

    name = "userspace"

    def __init__(self, tun: TunDevice, translator: Translator, stats: Stats, workers: int) -> None:
        self.tun = tun
        self.translator = translator
        self.stats = stats
        self.workers = workers
        self.pool: WorkerPool | None = None
        self.pump: QueuePump | None = None
        self.log = logs.get()

    def start(self) -> None:
        if self.workers <= 1:
            self.pump = QueuePump(self.tun, self.translator, self.stats)
            return
        pool = WorkerPool(
            self.tun.name, self.tun.vnet_hdr, self.workers, self.translator, tuple(self.stats.drops)
        )
        self.pool = pool
        pool.start()
        # The main process keeps its descriptor (the device lives while any is open) but takes
        # no packets: the kernel spreads them over the workers' queues only.
        self.tun.detach_queue()

    def attach(self, loop: PacketLoop) -> None:
        if self.pump is not None:
            loop.serve(self.pump)
        if self.pool is not None:
            loop.every_wake(self.pool.check)  # restart a worker that died

    def update_pool6(self, prefix: str) -> None:
        self.translator.update_pool6(prefix)  # validates first: ValueError leaves all as it was
        if self.pool is not None:
            self.pool.update_pool6(prefix)  # the workers' copies, between two of their batches

    def collect(self, stats: Stats) -> None:
        if self.pool is not None:
            self.pool.counters.sum_into(stats)

    def stop(self) -> None:
        pool, self.pool = self.pool, None
        self.pump = None
        if pool is not None:
            pool.stop()
            self.log.info("stopped %d workers", pool.count)
            pool.counters.sum_into(self.stats)
