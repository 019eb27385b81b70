"""The agent's /metrics: one series per served pod (labels `namespace`, `pod`).

Per pod: the slow path's packets, bytes and ICMP errors sent by direction and its drops by reason
(the sidecar's counters, clat_translator.counters, read from the pod's Stats), and the kernel
path's translated packets and bytes, the packets it left to the slow path by reason and the
ones it dropped (`KernelDatapath.counters()`). Reasons that never happened are left out: a node
with many pods would otherwise carry dozens of zero series per pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from clat_translator.counters import BY_DIRECTION, DIRECTIONS
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from clat_node.pod_clat import PodClat

POD_LABELS = ["namespace", "pod"]
# The slow path runs without offload (pod_clat.py): the offload counters would stay 0.
SLOW_PATH_COUNTERS = ("packets", "bytes", "errors_sent")
Family = CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily


class NodeCollector(Collector):
    def __init__(self, pods: Callable[[], list[PodClat]], prefix: str) -> None:
        self.pods = pods
        self.prefix = prefix

    def collect(self) -> Iterator[Family]:
        pods = self.pods()  # a copy: the loop thread adds and removes pods meanwhile
        served = GaugeMetricFamily("clat_node_pods", "Pods served by this agent")
        served.add_metric([], len(pods))
        prefix = InfoMetricFamily("clat_node_prefix", "The PLAT prefix the agent translates with")
        prefix.add_metric([], {"prefix": self.prefix})
        info = InfoMetricFamily(
            "clat_node_pod",
            "A served pod: its data path (kernel, userspace, none)",
            labels=POD_LABELS,
        )
        slow = {
            counter.attribute: CounterMetricFamily(
                f"clat_node_pod_{counter.metric.removeprefix('clat_')}",
                f"Slow path (userspace) of the pod: {counter.help}",
                labels=[*POD_LABELS, "direction"],
            )
            for counter in BY_DIRECTION
            if counter.attribute in SLOW_PATH_COUNTERS
        }
        drops = CounterMetricFamily(
            "clat_node_pod_drops",
            "Slow path (userspace) of the pod: packets dropped, by reason",
            labels=[*POD_LABELS, "reason"],
        )
        kernel_packets = CounterMetricFamily(
            "clat_node_pod_kernel_packets",
            "Kernel path of the pod: packets translated, by direction",
            labels=[*POD_LABELS, "direction"],
        )
        kernel_bytes = CounterMetricFamily(
            "clat_node_pod_kernel_bytes",
            "Kernel path of the pod: bytes translated, by direction",
            labels=[*POD_LABELS, "direction"],
        )
        kernel_passed = CounterMetricFamily(
            "clat_node_pod_kernel_passed",
            "Kernel path of the pod: packets left to the slow path, by reason",
            labels=[*POD_LABELS, "reason"],
        )
        kernel_dropped = CounterMetricFamily(
            "clat_node_pod_kernel_drops",
            "Kernel path of the pod: packets dropped, by reason",
            labels=[*POD_LABELS, "reason"],
        )
        for clat in pods:
            labels = [clat.pod.namespace, clat.pod.name]
            info.add_metric(labels, {"datapath": clat.datapath})
            stats = clat.stats
            for attribute, family in slow.items():
                values = getattr(stats, attribute)
                for direction in DIRECTIONS:
                    family.add_metric([*labels, direction], values[direction])
            for reason, count in sorted(stats.drops.items()):
                if count:
                    drops.add_metric([*labels, reason], count)
            kernel = clat.kernel
            if kernel is None:
                continue
            counters = kernel.counters()
            kernel_packets.add_metric([*labels, "4to6"], counters.packets46)
            kernel_packets.add_metric([*labels, "6to4"], counters.packets64)
            kernel_bytes.add_metric([*labels, "4to6"], counters.bytes46)
            kernel_bytes.add_metric([*labels, "6to4"], counters.bytes64)
            for reason, count in sorted(counters.passed.items()):
                if count:
                    kernel_passed.add_metric([*labels, reason], count)
            for reason, count in sorted(counters.dropped.items()):
                if count:
                    kernel_dropped.add_metric([*labels, reason], count)
        families: list[Family] = [served, prefix, info, *slow.values(), drops]
        families += [kernel_packets, kernel_bytes, kernel_passed, kernel_dropped]
        yield from families


def make_registry(pods: Callable[[], list[PodClat]], prefix: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(NodeCollector(pods, prefix))
    return registry
