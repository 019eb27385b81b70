"""The kernel data path against native IPv6 and the sidecar's userspace path, in one run.

    flock /tmp/clat-heavy.lock .venv/bin/python bench/kernel_path.py [--reps 3] [--seconds 4]
        [--tayga] [--variant NAME=path/to/clat.bpf.o ...] [--tests tcp1up,ping,...]

The testbed and the paths are bench/throughput.py's (imported): native IPv6 to the server's
pool6-mapped address, and clat-translator in the pod with `--datapath userspace`. The kernel
path is the same running sidecar with clat.bpf.o attached to its TUN by `KernelDatapath`, as
tests/bpf/test_bpf_netns.py does; `--variant` adds more objects (an A/B of a change to the C
program, in the same run). Every repetition measures every path once, in turn, so a change of
the machine's load hits them alike; the table shows the median of the repetitions. Ping is
given as the median RTT of each run (100/s), and the part added to native's median in the
same repetition. `--tayga` adds Debian's tayga (the ping baseline of issue 11's target); it
needs the TUN name, so it runs in each repetition while the sidecar is stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import NetNS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from clat_translator.bpf import KernelConfig, KernelDatapath  # noqa: E402
from clat_translator.bpf.loader import OBJECT_PATH  # noqa: E402
from throughput import (  # noqa: E402
    CLAT_V6,
    PREFIX,
    SERVER4,
    Native,
    Settings,
    Sidecar,
    Tayga,
    _interrupt,
    add_native_ipv6_server,
    iperf3_servers,
    load,
    tcp_gbits,
    udp_kpps,
)

from testbed import Testbed  # noqa: E402

NS_PREFIX = os.environ.get("CLAT_TEST_NS", "ckp") + "b"
TESTS: dict[str, str] = {
    "tcp1up": "TCP 1 stream up, Gbit/s",
    "tcp1down": "TCP 1 stream down, Gbit/s",
    "tcp4up": "TCP 4 streams up, Gbit/s",
    "udp1up": "UDP 1200 B up, kpps",
    "udp1down": "UDP 1200 B down, kpps",
    "ping": "ping at 100/s, median RTT, us",
}
NATIVE, USERSPACE, TAYGA = "native IPv6", "clat userspace", "tayga"
NATIVE_CLAT = "native, CLAT up"  # native IPv6 again while the sidecar's NAT66 table exists


def ping_median_us(tb: Testbed, target: str, count: int) -> float:
    """The median of `count` RTTs at 100/s: robust against a few late wake-ups on a busy host."""
    result = tb.run(tb.pod, ["ping", "-i", "0.01", "-c", str(count), "-W", "1", target])
    rtts = [
        float(word[5:]) * 1000
        for line in result.stdout.splitlines()
        for word in line.split()
        if word.startswith("time=")
    ]
    if len(rtts) < count // 2:
        raise RuntimeError(f"ping {target}: {result.stdout[-300:]}{result.stderr}")
    return statistics.median(rtts)


def run_test(tb: Testbed, key: str, target: str, s: Settings) -> float:
    tests: dict[str, Callable[[], float]] = {
        "tcp1up": lambda: tcp_gbits(tb, target, s, 1, False),
        "tcp1down": lambda: tcp_gbits(tb, target, s, 1, True),
        "tcp4up": lambda: tcp_gbits(tb, target, s, 4, False),
        "udp1up": lambda: udp_kpps(tb, target, s, 1, False),
        "udp1down": lambda: udp_kpps(tb, target, s, 1, True),
        "ping": lambda: ping_median_us(tb, target, s.pings),
    }
    for attempt in range(3):
        try:
            return tests[key]()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            # iperf3's control connection shares the saturated path and sometimes loses
            print(f"    {key} attempt {attempt + 1}: {exc}", file=sys.stderr)
    return float("nan")


def measure(
    tb: Testbed, name: str, target: str, s: Settings, into: dict[str, dict[str, list[float]]]
) -> None:
    for key in s.tests:
        value = run_test(tb, key, target, s)
        into.setdefault(name, {}).setdefault(key, []).append(value)
        print(f"  {name}: {key} {value:.3f}", file=sys.stderr, flush=True)


@contextmanager
def kernel_path(tb: Testbed, obj: Path, udp_userspace: bool = False) -> Iterator[KernelDatapath]:
    with NetNS(tb.pod) as ns:
        mtu = ns.get_links(ifname="eth0")[0].get_attr("IFLA_MTU")
    config = KernelConfig(
        pool6=PREFIX,
        clat_v4="192.0.0.1",
        clat_v6=CLAT_V6,
        ipv6_mtu=mtu,
        udp46_userspace=udp_userspace,
        udp64_userspace=udp_userspace,
    )
    path = KernelDatapath("clat", config, object_path=obj)
    with tb.inside(tb.pod):
        path.start()
    try:
        yield path
    finally:
        with tb.inside(tb.pod):
            path.stop()


def describe(counters: object) -> str:
    c = counters.__dict__
    passed = {k: v for k, v in c["passed"].items() if v}
    return (
        f"46 {c['packets46']} pkts, 64 {c['packets64']} pkts, passed {passed}, "
        f"dropped {c['dropped']['helper-error']}"
    )


def table(names: list[str], results: dict[str, dict[str, list[float]]], s: Settings) -> str:
    def med(name: str, key: str) -> float | None:
        values = [v for v in results.get(name, {}).get(key, []) if v == v]
        return statistics.median(values) if values else None

    def added(name: str) -> float | None:
        # per repetition against native's run of the same repetition, then the median
        mine, base = results.get(name, {}).get("ping", []), results[NATIVE].get("ping", [])
        diffs = [a - b for a, b in zip(mine, base, strict=False) if a == a and b == b]
        return statistics.median(diffs) if diffs else None

    ours = [n for n in names if n not in (NATIVE, NATIVE_CLAT, TAYGA, USERSPACE)]
    header = ["", *names, *(f"{n} / native" for n in ours)]
    rows = []
    for key in s.tests:
        fmt = "{:.2f}" if key.startswith("tcp") else "{:.1f}"
        cells = [fmt.format(v) if (v := med(n, key)) is not None else "" for n in names]
        base = med(NATIVE, key)
        ratios = [
            f"{v / base:.0%}" if (v := med(n, key)) is not None and base else "" for n in ours
        ]
        rows.append([TESTS[key], *cells, *ratios])
        if key == "ping":
            extra = [f"{v:+.1f}" if (v := added(n)) is not None else "" for n in names]
            t = added(TAYGA)
            vs = [
                f"{v / t:.0%} of tayga's" if (v := added(n)) is not None and t else "" for n in ours
            ]
            rows.append(["  added to native, us", "", *extra[1:], *vs])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians)")
    parser.add_argument("--seconds", type=int, default=4, help="iperf3 time per test")
    parser.add_argument("--pings", type=int, default=500, help="pings per ping test")
    parser.add_argument("--tests", default=",".join(TESTS), help=f"subset of {','.join(TESTS)}")
    parser.add_argument("--tayga", action="store_true", help="tayga too (ping baseline)")
    parser.add_argument("--no-userspace", action="store_true", help="leave out the userspace path")
    parser.add_argument(
        "--native-with-clat",
        action="store_true",
        help="native IPv6 also while the sidecar runs (its nftables NAT66 brings conntrack)",
    )
    parser.add_argument(
        "--udp-userspace",
        action="store_true",
        help="the built object also with UDP left to userspace (udp46_userspace, udp64_userspace)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OBJECT",
        help="another clat.bpf.o to compare (repeatable); the built one is 'clat kernel'",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/kernel_path.py needs root (network namespaces, BPF)", file=sys.stderr)
        return 1
    tests = tuple(t for t in args.tests.split(",") if t)
    if unknown := set(tests) - set(TESTS):
        parser.error(f"--tests: unknown {', '.join(sorted(unknown))}")
    kernels: dict[str, tuple[Path, bool]] = {}
    for item in args.variant:
        name, _, obj = item.partition("=")
        if not obj or not Path(obj).is_file():
            parser.error(f"--variant {item!r}: NAME=existing object file")
        kernels[f"kernel {name}"] = (Path(obj), False)
    kernels["clat kernel"] = (OBJECT_PATH, False)
    if args.udp_userspace:
        kernels["kernel, UDP userspace"] = (OBJECT_PATH, True)
    s = Settings(args.seconds, 1, 1, args.pings, tests)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    start_load = load()
    results: dict[str, dict[str, list[float]]] = {}
    counters: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="kernel-path-"))
    names = [NATIVE] + ([TAYGA] if args.tayga else []) + ([] if args.no_userspace else [USERSPACE])
    names += ([NATIVE_CLAT] if args.native_with_clat else []) + list(kernels)
    try:
        with Testbed(NS_PREFIX) as tb:
            server6 = add_native_ipv6_server(tb)
            with iperf3_servers(tb, server6, 1):
                for rep in range(args.reps):
                    print(f"repetition {rep + 1}/{args.reps}, load {load()}", file=sys.stderr)
                    measure(tb, NATIVE, Native(server6).target, s, results)
                    if args.tayga:
                        tayga = Tayga()
                        tayga.start(tb, tmp)
                        try:
                            measure(tb, TAYGA, SERVER4, s, results)
                        finally:
                            tayga.stop(tb)
                    sidecar = Sidecar(USERSPACE, "--datapath", "userspace")
                    sidecar.start(tb, tmp)
                    try:
                        if args.native_with_clat:
                            measure(tb, NATIVE_CLAT, server6, s, results)
                        if not args.no_userspace:
                            measure(tb, USERSPACE, SERVER4, s, results)
                        for name, (obj, udp) in kernels.items():
                            with kernel_path(tb, obj, udp) as path:
                                measure(tb, name, SERVER4, s, results)
                                try:
                                    counters[name] = describe(path.counters())
                                except OSError:  # a variant with another counter layout
                                    counters[name] = "counters in another layout"
                    finally:
                        sidecar.stop(tb)
    except KeyboardInterrupt:
        print("interrupted: torn down", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"kernel path bench: {len(os.sched_getaffinity(0))} cores, Linux {os.uname().release}, "
        f"{args.reps} repetitions (medians), iperf3 {s.seconds} s per test, "
        f"UDP 1200 B at full speed, {s.pings} pings at 100/s"
    )
    print(f"load average before: {start_load}; after: {load()}")
    print()
    print(table(names, results, s))
    print()
    for name, text in counters.items():
        print(f"{name} (last repetition): {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
