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

    def __init__(self, drop_reasons: Iterable[str] | None = None) -> None:
        """`drop_reasons` (plus the sidecar's own) are pre-created at 0; None: all of them."""
        for counter in BY_DIRECTION:
            setattr(self, counter.attribute, Counter({d: 0 for d in DIRECTIONS}))
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
        # the data path in use (clat_datapath_info): its name, the offloads the TUN took,
        # worker processes
        self.datapath: str = ""
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
        )

    def summary(self) -> str:
        drops = " ".join(f"{r}={n}" for r, n in sorted(self.drops.items()) if n)
        return (
            f"packets 4to6={self.packets['4to6']} 6to4={self.packets['6to4']} "
            f"bytes 4to6={self.bytes['4to6']} 6to4={self.bytes['6to4']} "
            f"icmp-errors-sent 4to6={self.errors_sent['4to6']} 6to4={self.errors_sent['6to4']} "
            f"drops={sum(self.drops.values())}" + (f" ({drops})" if drops else "")
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
            "The data path in use, the TUN offloads it took (off = offload off) and worker "
            "processes",
        )
        if s.offloads:
            datapath.add_metric(
                [], {"datapath": s.datapath, "offloads": s.offloads, "workers": str(s.workers)}
            )
        yield from (drops, discovery, changes, prefix, ready, standing_down, datapath)


def make_registry(stats: Stats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))
    return registry
