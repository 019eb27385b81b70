"""Benchmark of the packet core: packets/s per direction on one core, printed as a table.

    .venv/bin/python bench/xlat.py [--seconds S]

Each case translates a ring of 256 scapy-built packets (one address pair, varying ports)
in a tight loop, best of several rounds, pinned to one CPU. The baseline column is the
same Translator with its fast path switched off (the general RFC 7915 path), measured in
the same run, so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

from clat_translator.xlat import Translator, XlatConfig
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

CLAT_V4, CLAT_V6 = "192.0.0.1", "fd00:c1a7::1"
SERVER_V4, SERVER_V6 = "203.0.113.10", "64:ff9b::cb00:710a"
RING = 256


def _translator(fast: bool) -> Translator:
    t = Translator(
        XlatConfig(
            pool6="64:ff9b::/96",
            eamt=[(f"{CLAT_V4}/32", f"{CLAT_V6}/128")],
            local_ipv6="fd00:c1a7::2",
            amend_udp_checksum_zero=True,
            rfc6791v4="192.0.0.8",
        )
    )
    t._fast_path = fast
    return t


def _ring(make: Callable[[int], bytes]) -> list[bytes]:
    return [make(i) for i in range(RING)]


def cases() -> list[tuple[str, str, list[bytes]]]:
    def v4(l4_and_data: object) -> bytes:
        return bytes(IP(src=CLAT_V4, dst=SERVER_V4, flags="DF", ttl=64) / l4_and_data)

    def v6(l4_and_data: object) -> bytes:
        return bytes(IPv6(src=SERVER_V6, dst=CLAT_V6, hlim=64) / l4_and_data)

    return [
        (
            "4->6",
            "TCP 1400 B",
            _ring(lambda i: v4(TCP(sport=10000 + i, dport=443, flags="A") / (b"t" * 1360))),
        ),
        ("4->6", "UDP 64 B", _ring(lambda i: v4(UDP(sport=10000 + i, dport=53) / (b"u" * 36)))),
        ("4->6", "ICMP echo 64 B", _ring(lambda i: v4(ICMP(type=8, id=i, seq=i) / (b"e" * 36)))),
        (
            "6->4",
            "TCP 1400 B",
            _ring(lambda i: v6(TCP(sport=443, dport=10000 + i, flags="A") / (b"t" * 1340))),
        ),
        ("6->4", "UDP 64 B", _ring(lambda i: v6(UDP(sport=53, dport=10000 + i) / (b"u" * 16)))),
        (
            "6->4",
            "ICMP echo 64 B",
            _ring(lambda i: v6(ICMPv6EchoRequest(id=i, seq=i, data=b"e" * 16))),
        ),
    ]


def rate(t: Translator, packets: list[bytes], seconds: float) -> float:
    """Best packets/s over several rounds of `seconds` / 5 each."""
    translate = t.translate
    for p in packets:  # warm the caches, and make sure nothing drops
        r = translate(p)
        if r.drop is not None or len(r.out) != 1:
            raise SystemExit(f"benchmark packet not translated: {r}")
    best = 0.0
    rounds = 5
    for _ in range(rounds):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            for p in packets:
                translate(p)
            n += len(packets)
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case and path")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # one core
    print(
        "clat_translator.xlat benchmark:",
        f"CPython {platform.python_version()}, {platform.machine()}, one core",
    )
    print()
    header = (
        "direction",
        "packet",
        "bytes",
        "packets/s",
        "us/packet",
        "general path packets/s",
        "ratio",
    )
    rows = []
    for direction, name, packets in cases():
        fast = rate(_translator(True), packets, args.seconds)
        general = rate(_translator(False), packets, args.seconds)
        rows.append(
            (
                direction,
                name,
                str(len(packets[0])),
                f"{fast:,.0f}",
                f"{1e6 / fast:.2f}",
                f"{general:,.0f}",
                f"{fast / general:.2f}x",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(
            "| "
            + " | ".join(
                c.rjust(w) if i >= 2 else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
