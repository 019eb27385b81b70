"""What the sidecar counts, declared once.

`Stats` (metrics.py), the workers' shared-memory slots (workers.py) and the Prometheus collector
all iterate these tables, so a counter or a drop reason added here (or to the core's
`xlat.DROP_REASONS`, or to the offload core's) appears in all three without more code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from clat_translator.bpf.loader import DROP_REASONS as KERNEL_DROP_REASONS
from clat_translator.bpf.loader import PASS_REASONS as KERNEL_PASS_REASONS
from clat_translator.xlat import DROP_REASONS as CORE_DROP_REASONS
from clat_translator.xlat.offload import OFFLOAD_DROP_REASONS

DIRECTIONS = ("4to6", "6to4")

# Drops the sidecar's own data path counts, beside the core's reasons (xlat/drops.py).
TUN_WRITE_FAILED = "tun-write-failed"  # the kernel refused a packet we wrote to the TUN
TRANSLATOR_ERROR = "translator-error"  # the core raised, which it promises never to do
SIDECAR_DROP_REASONS: frozenset[str] = frozenset({TUN_WRITE_FAILED, TRANSLATOR_ERROR})


def all_drop_reasons() -> tuple[str, ...]:
    """Every drop reason, sorted: the core's, the offload core's and the sidecar's."""
    return tuple(sorted(CORE_DROP_REASONS | OFFLOAD_DROP_REASONS | SIDECAR_DROP_REASONS))


class DirectionCounter(NamedTuple):
    """A counter kept per direction: `Stats.<attribute>[direction]`, exported as `metric`."""

    attribute: str
    metric: str  # Prometheus family name; the exposition adds `_total`
    help: str


BY_DIRECTION: tuple[DirectionCounter, ...] = (
    DirectionCounter(
        "packets", "clat_packets", "Packets translated by the userspace path, by direction"
    ),
    DirectionCounter(
        "bytes",
        "clat_bytes",
        "Bytes of packets translated by the userspace path (as read), by direction",
    ),
    DirectionCounter(
        "errors_sent",
        "clat_icmp_errors_sent",
        "ICMP errors the translator sent back, by the direction of the offending packet",
    ),
    DirectionCounter(
        "super_packets",
        "clat_offload_super_packets",
        "TSO/USO super-packets translated whole (offload on), by direction",
    ),
    DirectionCounter(
        "segmented",
        "clat_offload_segmented",
        "Super-packets cut into segments for the reference path (offload on), by direction",
    ),
    DirectionCounter(
        "coalesced",
        "clat_offload_coalesced",
        "UDP datagrams that left in a USO frame with others of their flow, by direction",
    ),
)
DROPS_METRIC = "clat_drops"  # Stats.drops[reason]

# The kernel path's per-CPU counters (bpf/clat.bpf.c `enum clat_counter`), summed over the CPUs.
# Kept apart from the tables above: the workers never count them (packet_counter_keys).
KERNEL_BY_DIRECTION: tuple[DirectionCounter, ...] = (
    DirectionCounter(
        "kernel_packets",
        "clat_kernel_packets",
        "Packets translated by the kernel path, by direction",
    ),
    DirectionCounter(
        "kernel_bytes",
        "clat_kernel_bytes",
        "Bytes of packets translated by the kernel path (as they arrived), by direction",
    ),
)


class ReasonCounter(NamedTuple):
    """A counter kept per reason: `Stats.<attribute>[reason]`, exported as `metric`."""

    attribute: str
    metric: str  # Prometheus family name; the exposition adds `_total`
    help: str
    reasons: tuple[str, ...]


KERNEL_BY_REASON: tuple[ReasonCounter, ...] = (
    ReasonCounter(
        "kernel_passed",
        "clat_kernel_passed",
        "Packets the kernel path left to the userspace path, by reason",
        KERNEL_PASS_REASONS,
    ),
    ReasonCounter(
        "kernel_drops",
        "clat_kernel_drops",
        "Packets the kernel path dropped (a helper failed mid-translation), by reason",
        KERNEL_DROP_REASONS,
    ),
)


def packet_counter_keys(drop_reasons: Iterable[str]) -> list[tuple[str, str]]:
    """Every packet counter as (Stats attribute, key): the layout of a worker's shared slot."""
    return [(c.attribute, d) for c in BY_DIRECTION for d in DIRECTIONS] + [
        ("drops", reason) for reason in drop_reasons
    ]
