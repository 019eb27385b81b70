"""The kernel data path: a tc-eBPF program on the `clat` TUN (clat.bpf.c) and its loader."""

from .loader import (
    COUNTERS,
    PASS_REASONS,
    BpfProgram,
    KernelConfig,
    KernelCounters,
    KernelDatapath,
    KernelPathUnavailable,
)

__all__ = [
    "COUNTERS",
    "PASS_REASONS",
    "BpfProgram",
    "KernelConfig",
    "KernelCounters",
    "KernelDatapath",
    "KernelPathUnavailable",
]
