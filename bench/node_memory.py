"""Memory of the node agent per served pod: RSS and PSS of `clat-node agent` serving 1, 10 and
50 pods (by default), and the increment per additional pod, printed as one table.

    flock /tmp/clat-heavy.lock .venv/bin/python bench/node_memory.py [--pods 1,10,50]

A lighter network than testbed/ (which runs tayga, unbound and servers per bed): one "router"
namespace and N pod namespaces, each with a veth to the router, an IPv6 address of its own and
an IPv6 default route. The router holds on its loopback the PLAT-prefix form (RFC 6052) of
198.51.100.1, so an IPv4 ping from a pod is translated by its CLAT and answered over IPv6: each
pod is really served (TUN, nftables NAT66, kernel data path, checked by a ping each at the end).
Each pod is handed over by the real unprivileged `clat-node handoff` (bench/node_agent.py).
Namespaces are named CLAT_TEST_NS + "mem-..." (default "cmem-...") and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from pyroute2 import NetNS, netns

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.node_agent import NodeAgent  # noqa: E402
from bench.throughput import memory_kib  # noqa: E402
from testbed.topology import synthesize  # noqa: E402

PREFIX = "2001:db8:64::/96"
TARGET4 = "198.51.100.1"  # answered by the router, as its PLAT-prefix form
NS = os.environ.get("CLAT_TEST_NS", "c") + "mem"
ROUTER = f"{NS}-router"
PORT = 19183
IFA_F_NODAD = 0x02
MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != MAIN_PID:  # pyroute2's forked helpers inherit the handler
        os._exit(0)
    raise KeyboardInterrupt


def pod_name(n: int) -> str:
    return f"{NS}-p{n}"


def pod_address(n: int) -> str:
    return f"2001:db8:100:{n:x}::2"


def make_router() -> None:
    netns.create(ROUTER)
    with NetNS(ROUTER) as ns:
        lo = ns.link_lookup(ifname="lo")[0]
        ns.link("set", index=lo, state="up")
        ns.addr("add", index=lo, address=synthesize(PREFIX, TARGET4), prefixlen=128, family=10)


def make_pod(n: int) -> None:
    name = pod_name(n)
    netns.create(name)
    with NetNS(ROUTER) as router:
        router.link("add", ifname=f"p{n}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
        index = router.link_lookup(ifname=f"p{n}")[0]
        router.addr("add", index=index, address=f"2001:db8:100:{n:x}::1", prefixlen=64,
                    flags=IFA_F_NODAD)  # fmt: skip
        router.link("set", index=index, state="up")
    with NetNS(name) as pod:
        for ifname in ("lo", "eth0"):
            pod.link("set", index=pod.link_lookup(ifname=ifname)[0], state="up")
        eth0 = pod.link_lookup(ifname="eth0")[0]
        pod.addr("add", index=eth0, address=pod_address(n), prefixlen=64, flags=IFA_F_NODAD)
        pod.route("add", dst="::", dst_len=0, gateway=f"2001:db8:100:{n:x}::1", family=10)


def ping(n: int) -> bool:
    argv = ["ip", "netns", "exec", pod_name(n), "ping", "-n", "-c", "1", "-W", "2", TARGET4]
    return subprocess.run(argv, capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", default="1,10,50", help="comma-separated pod counts to measure")
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.pods.split(",")})
    if os.geteuid() != 0:
        print("bench/node_memory.py needs root (network namespaces)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    made: list[str] = []
    agent = NodeAgent(PREFIX, PORT, "--datapath", "kernel")
    rows: list[tuple[int, int, int]] = []
    try:
        for leftover in [n for n in netns.listnetns() if n.startswith(f"{NS}-")]:
            netns.remove(leftover)  # a crashed earlier run of this prefix: ours by name
        make_router()
        made.append(ROUTER)
        agent.start()
        assert agent.proc is not None
        served = 0
        for count in counts:
            while served < count:
                served += 1
                make_pod(served)
                made.append(pod_name(served))
                agent.serve(pod_name(served), f"pod-{served}", pod_address(served))
            time.sleep(1)  # let the last hand-off's garbage go
            rss, pss = memory_kib(agent.proc.pid)
            rows.append((count, rss, pss))
            print(f"  {count} pods: RSS {rss} KiB, PSS {pss} KiB", file=sys.stderr, flush=True)
        failed = [n for n in range(1, served + 1) if not ping(n)]
        metrics = agent.http("/metrics")[1]
        kernel = metrics.count('clat_node_pod_info{datapath="kernel"')
    except KeyboardInterrupt:
        print("interrupted: torn down", file=sys.stderr)
        return 1
    finally:
        agent.stop()
        for name in made:
            netns.remove(name)
    print(f"clat-node agent memory per served pod ({len(os.sched_getaffinity(0))} cores, ", end="")
    print(f"Linux {os.uname().release}, --datapath kernel)")
    print()
    print("| pods served | agent RSS, MiB | agent PSS, MiB | RSS per pod above 1, KiB "
          "| PSS per pod above 1, KiB |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    base = rows[0]
    for count, rss, pss in rows:
        extra = count - base[0]
        per_rss = f"{(rss - base[1]) / extra:,.0f}" if extra else ""
        per_pss = f"{(pss - base[2]) / extra:,.0f}" if extra else ""
        print(f"| {count} | {rss / 1024:,.1f} | {pss / 1024:,.1f} | {per_rss} | {per_pss} |")
    print()
    print(f"pods answering an IPv4 ping through their CLAT: {served - len(failed)} of {served}; "
          f"on the kernel path: {kernel}")  # fmt: skip
    return 1 if failed or kernel != served else 0


if __name__ == "__main__":
    sys.exit(main())
