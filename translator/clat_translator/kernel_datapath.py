"""The kernel data path as one of the sidecar's `Datapath`s (datapath.py).

`bpf.loader.KernelDatapath` attaches the tc-eBPF program to clsact egress of the TUN; this
adapter gives it the interface the sidecar drives and copies its per-CPU counters into `Stats`.
It runs beside the userspace path, which takes every packet the program leaves to the TUN.
"""

from __future__ import annotations

import contextlib
import threading

from clat_translator import logs
from clat_translator.bpf.loader import KernelCounters, KernelDatapath, KernelPathUnavailable
from clat_translator.metrics import Stats
from clat_translator.packet_loop import PacketLoop
from clat_translator.xlat import XlatConfig


class KernelPath:
    """The tc-eBPF program on `tun_name`, configured from the sidecar's XlatConfig.

    KernelPathUnavailable (from the constructor or `start`) says in one line why it cannot
    run here. The counters are the program's totals since `start`: `collect` copies them into
    `Stats` (it sets, never adds, so calling it twice counts nothing twice).
    """

    name = "kernel"

    def __init__(self, tun_name: str, config: XlatConfig) -> None:
        self.path = KernelDatapath(tun_name, config)  # KernelPathUnavailable: unsupported config
        self.log = logs.get()
        self._lock = threading.Lock()  # collect (HTTP thread) against stop (main thread)
        self._last = KernelCounters()

    def start(self) -> None:
        self.path.start()
        if self.path.replaced_leftovers:
            self.log.info(
                "replaced %d leftover BPF filter(s) on %s egress",
                self.path.replaced_leftovers,
                self.path.tun_name,
            )

    def attach(self, loop: PacketLoop) -> None:
        """Nothing to serve: the kernel translates in softirq, the TUN's descriptor is the
        userspace path's."""

    def update_pool6(self, prefix: str) -> None:
        """The loader writes the spare configuration slot and flips the active index: once this
        returns, no packet is translated with the old prefix."""
        try:
            self.path.update_pool6(prefix)
        except KernelPathUnavailable as exc:
            # The userspace path already took the new prefix: rather every packet to it than
            # one translated with the old prefix.
            with self._lock:
                program = self.path.program
                if program is not None:
                    program.disable()
            self.log.error(
                "kernel path disabled (every packet to userspace): prefix change: %s", exc.reason
            )

    def collect(self, stats: Stats) -> None:
        with self._lock:
            if self.path.attached:
                try:
                    self._last = self.path.counters()
                except OSError as exc:
                    self.log.warning("cannot read the kernel path's counters: %s", exc)
            counters = self._last
        stats.kernel_packets["4to6"] = counters.packets46
        stats.kernel_packets["6to4"] = counters.packets64
        stats.kernel_bytes["4to6"] = counters.bytes46
        stats.kernel_bytes["6to4"] = counters.bytes64
        # set, not Counter.update (which adds)
        for reason, count in counters.passed.items():
            stats.kernel_passed[reason] = count
        for reason, count in counters.dropped.items():
            stats.kernel_drops[reason] = count

    def stop(self) -> None:
        """Detach and unload (the clsact qdisc too, when this run made it); the last counters
        stay readable through `collect`."""
        with self._lock:
            if self.path.attached:
                with contextlib.suppress(OSError):
                    self._last = self.path.counters()
            self.path.stop()
