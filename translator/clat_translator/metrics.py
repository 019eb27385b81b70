"""Counters of the run loop and their Prometheus view.

The loop bumps plain integers (no lock, no label lookup per packet); a collector turns them into
Prometheus metrics when /metrics is scraped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

DIRECTIONS = ("4to6", "6to4")
SIDECAR_DROP_REASONS = ("tun-write-failed", "translator-error")


class Stats:
    """What the sidecar counts. Written by the loop thread, read by the HTTP thread."""

    def __init__(self, drop_reasons: Iterable[str] = ()) -> None:
        self.packets: Counter[str] = Counter({d: 0 for d in DIRECTIONS})
        self.bytes: Counter[str] = Counter({d: 0 for d in DIRECTIONS})
        self.errors_sent: Counter[str] = Counter({d: 0 for d in DIRECTIONS})
        self.drops: Counter[str] = Counter({r: 0 for r in (*drop_reasons, *SIDECAR_DROP_REASONS)})
        self.discovery: Counter[tuple[str, str]] = Counter()
        self.prefix: str = ""
        self.prefix_source: str = ""
        self.prefix_changes = 0
        self.ready = False
        self.standing_down = False
        # the data path (datapath.py): super-packets translated whole, and those cut into
        # segments for the reference path; the offloads the TUN took; worker processes
        self.super_packets: Counter[str] = Counter({d: 0 for d in DIRECTIONS})
        self.segmented: Counter[str] = Counter({d: 0 for d in DIRECTIONS})
        self.coalesced: Counter[str] = Counter({d: 0 for d in DIRECTIONS})
        self.offloads: str = ""
        self.workers = 1
        # called before the counters are read (workers' counters are summed into these)
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
        packets = CounterMetricFamily(
            "clat_packets", "Packets translated, by direction", labels=["direction"]
        )
        octets = CounterMetricFamily(
            "clat_bytes",
            "Bytes of packets translated (as read), by direction",
            labels=["direction"],
        )
        errors = CounterMetricFamily(
            "clat_icmp_errors_sent",
            "ICMP errors the translator sent back, by the direction of the offending packet",
            labels=["direction"],
        )
        for d in DIRECTIONS:
            packets.add_metric([d], s.packets[d])
            octets.add_metric([d], s.bytes[d])
            errors.add_metric([d], s.errors_sent[d])
        drops = CounterMetricFamily("clat_drops", "Packets dropped, by reason", labels=["reason"])
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
        yield from (packets, octets, errors, drops, discovery, changes, prefix, ready)
        yield standing_down
        super_packets = CounterMetricFamily(
            "clat_offload_super_packets",
            "TSO/USO super-packets translated whole (offload on), by direction",
            labels=["direction"],
        )
        segmented = CounterMetricFamily(
            "clat_offload_segmented",
            "Super-packets cut into segments for the reference path (offload on), by direction",
            labels=["direction"],
        )
        coalesced = CounterMetricFamily(
            "clat_offload_coalesced",
            "UDP datagrams that left in a USO frame with others of their flow, by direction",
            labels=["direction"],
        )
        for d in DIRECTIONS:
            super_packets.add_metric([d], s.super_packets[d])
            segmented.add_metric([d], s.segmented[d])
            coalesced.add_metric([d], s.coalesced[d])
        datapath = InfoMetricFamily(
            "clat_datapath", "The TUN offloads in use (none = offload off) and worker processes"
        )
        if s.offloads:
            datapath.add_metric([], {"offloads": s.offloads, "workers": str(s.workers)})
        yield from (super_packets, segmented, coalesced, datapath)


def make_registry(stats: Stats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
