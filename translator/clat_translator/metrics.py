"""Counters of the run loop and their Prometheus view.

The loop bumps plain integers (no lock, no label lookup per packet); a collector turns them into
Prometheus metrics when /metrics is scraped. What is counted is declared in counters.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from clat_translator.counters import (
    BY_DIRECTION,
    DIRECTIONS,
    DROPS_METRIC,
    KERNEL_BY_DIRECTION,
    KERNEL_BY_REASON,
    SIDECAR_DROP_REASONS,
    all_drop_reasons,
)


class Stats:
    """What the sidecar counts. Written by the loop thread, read by the HTTP thread."""

    # one Counter by direction per counters.BY_DIRECTION entry, made in __init__
    packets: Counter[str]
    bytes: Counter[str]
    errors_sent: Counter[str]
    super_packets: Counter[str]  # the offloaded data path: translated whole,
    segmented: Counter[str]  # cut into segments for the reference path,
    coalesced: Counter[str]  # left in one USO frame with others of their flow
    # the kernel path's (counters.KERNEL_BY_DIRECTION and KERNEL_BY_REASON), made in __init__
    kernel_packets: Counter[str]
    kernel_bytes: Counter[str]
    kernel_passed: Counter[str]
    kernel_drops: Counter[str]

    def __init__(self, drop_reasons: Iterable[str] | None = None) -> None:
        """`drop_reasons` (plus the sidecar's own) are pre-created at 0; None: all of them."""
        for counter in (*BY_DIRECTION, *KERNEL_BY_DIRECTION):
            setattr(self, counter.attribute, Counter({d: 0 for d in DIRECTIONS}))
        for by_reason in KERNEL_BY_REASON:
            setattr(self, by_reason.attribute, Counter(dict.fromkeys(by_reason.reasons, 0)))
        reasons = all_drop_reasons() if drop_reasons is None else drop_reasons
        self.drops: Counter[str] = Counter(
            {r: 0 for r in (*reasons, *sorted(SIDECAR_DROP_REASONS))}
        )
        self.discovery: Counter[tuple[str, str]] = Counter()
        self.prefix: str = ""
        self.prefix_source: str = ""
        self.prefix_changes = 0
        self.ready = False
        self.standing_down = False
        # the data path in use (clat_datapath_info): its name, the one asked for (--datapath),
        # why auto fell back to userspace ("" = it did not), the offloads the TUN took,
        # worker processes
        self.datapath: str = ""
        self.datapath_requested: str = ""
        self.kernel_unavailable: str = ""
        self.offloads: str = ""
        self.workers = 1
        # called before the counters are read (counters kept elsewhere are summed into these)
        self.refresh: Callable[[], None] | None = None

    def snapshot(self) -> tuple[int, ...]:
        """A cheap fingerprint to log the counters only when they changed."""
        return (
            *self.packets.values(),
            *self.errors_sent.values(),
            sum(self.drops.values()),
            *self.kernel_packets.values(),
            sum(self.kernel_passed.values()),
            sum(self.kernel_drops.values()),
        )

    def summary(self) -> str:
        drops = " ".join(f"{r}={n}" for r, n in sorted(self.drops.items()) if n)
        return (
            f"packets 4to6={self.packets['4to6']} 6to4={self.packets['6to4']} "
            f"bytes 4to6={self.bytes['4to6']} 6to4={self.bytes['6to4']} "
            f"icmp-errors-sent 4to6={self.errors_sent['4to6']} 6to4={self.errors_sent['6to4']} "
            f"drops={sum(self.drops.values())}"
            + (f" ({drops})" if drops else "")
            + self._kernel_summary()
        )

    def _kernel_summary(self) -> str:
        if self.datapath != "kernel":
            return ""
        passed = " ".join(f"{r}={n}" for r, n in sorted(self.kernel_passed.items()) if n)
        return (
            f"; kernel packets 4to6={self.kernel_packets['4to6']} "
            f"6to4={self.kernel_packets['6to4']} "
            f"bytes 4to6={self.kernel_bytes['4to6']} 6to4={self.kernel_bytes['6to4']} "
            f"passed={sum(self.kernel_passed.values())}"
            + (f" ({passed})" if passed else "")
            + f" drops={sum(self.kernel_drops.values())}"
        )


class StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        s = self.stats
        if s.refresh is not None:
            s.refresh()
        for counter in BY_DIRECTION:
            family = CounterMetricFamily(counter.metric, counter.help, labels=["direction"])
            values: Counter[str] = getattr(s, counter.attribute)
            for d in DIRECTIONS:
                family.add_metric([d], values[d])
            yield family
        for counter in KERNEL_BY_DIRECTION:
            family = CounterMetricFamily(counter.metric, counter.help, labels=["direction"])
            values = getattr(s, counter.attribute)
            for d in DIRECTIONS:
                family.add_metric([d], values[d])
            yield family
        for by_reason in KERNEL_BY_REASON:
            family = CounterMetricFamily(by_reason.metric, by_reason.help, labels=["reason"])
            for reason, count in sorted(getattr(s, by_reason.attribute).items()):
                family.add_metric([reason], count)
            yield family
        drops = CounterMetricFamily(DROPS_METRIC, "Packets dropped, by reason", labels=["reason"])
        for reason, count in sorted(s.drops.items()):
            drops.add_metric([reason], count)
        discovery = CounterMetricFamily(
            "clat_discovery_attempts",
            "PLAT prefix discovery attempts, by method and result",
            labels=["method", "result"],
        )
        for (method, result), count in sorted(s.discovery.items()):
            discovery.add_metric([method, result], count)
        changes = CounterMetricFamily(
            "clat_prefix_changes", "PLAT prefix changes applied while running"
        )
        changes.add_metric([], s.prefix_changes)
        prefix = InfoMetricFamily("clat_prefix", "The PLAT prefix in use and where it came from")
        if s.prefix:
            prefix.add_metric([], {"prefix": s.prefix, "source": s.prefix_source})
        ready = GaugeMetricFamily("clat_ready", "1 once translating (or standing down)")
        ready.add_metric([], 1 if s.ready else 0)
        standing_down = GaugeMetricFamily(
            "clat_standing_down", "1 when the pod has native IPv4 and the CLAT stands down"
        )
        standing_down.add_metric([], 1 if s.standing_down else 0)
        datapath = InfoMetricFamily(
            "clat_datapath",
            "The data path in use (kernel: the tc-eBPF path with userspace for the rest), the one "
            "asked for, why the kernel path is not used (auto's fallback), the TUN offloads "
            "(off = offload off) and worker processes",
        )
        if s.offloads:
            datapath.add_metric(
                [],
                {
                    "datapath": s.datapath,
                    "requested": s.datapath_requested,
                    "kernel_unavailable": s.kernel_unavailable,
                    "offloads": s.offloads,
                    "workers": str(s.workers),
                },
            )
        yield from (drops, discovery, changes, prefix, ready, standing_down, datapath)


def make_registry(stats: Stats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))
    return registry
