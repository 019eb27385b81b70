"""The sidecar's parts with their own state: the counters table, the undo list, the one loop,
the sysctl change log."""

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from clat_translator import counters, netconf
from clat_translator.datapath import Datapath, UserspaceDatapath
from clat_translator.metrics import Stats, make_registry
from clat_translator.packet_loop import PacketLoop
from clat_translator.plumbing import PodPlumbing, Undo
from clat_translator.tun import TunDevice
from clat_translator.workers import SharedCounters
from clat_translator.xlat import DROP_REASONS, Translator, XlatConfig
from clat_translator.xlat.offload import OFFLOAD_DROP_REASONS
from prometheus_client import generate_latest
from pyroute2 import IPRoute, netns

# ---- counters: one table -----------------------------------------------------------------------


def test_stats_has_exactly_the_counters_of_the_table() -> None:
    stats = Stats()
    by_direction = {name for name, value in vars(stats).items() if isinstance(value, Counter)} - {
        "drops",
        "discovery",
    }
    kernel = {c.attribute for c in counters.KERNEL_BY_DIRECTION} | {
        c.attribute for c in counters.KERNEL_BY_REASON
    }
    assert by_direction == {c.attribute for c in counters.BY_DIRECTION} | kernel
    for by_reason in counters.KERNEL_BY_REASON:
        assert tuple(getattr(stats, by_reason.attribute)) == by_reason.reasons
    # every drop reason of the core and the offload core, without retyping any of them
    assert set(stats.drops) == DROP_REASONS | OFFLOAD_DROP_REASONS | {
        counters.TUN_WRITE_FAILED,
        counters.TRANSLATOR_ERROR,
    }


def test_every_counter_of_the_table_reaches_metrics_and_the_shared_slots() -> None:
    reasons = counters.all_drop_reasons()
    worker = Stats(reasons)
    for number, counter in enumerate(counters.BY_DIRECTION, start=1):
        getattr(worker, counter.attribute)["6to4"] += number
    for number, reason in enumerate(reasons, start=100):
        worker.drops[reason] += number
    shared = SharedCounters(1, tuple(worker.drops))
    shared.publish(0, worker)
    main = Stats(reasons)
    shared.sum_into(main)
    shared.close()
    text = generate_latest(make_registry(main)).decode()
    for number, counter in enumerate(counters.BY_DIRECTION, start=1):
        assert getattr(main, counter.attribute)["6to4"] == number
        assert f'{counter.metric}_total{{direction="6to4"}} {number}.0' in text
    for number, reason in enumerate(reasons, start=100):
        assert f'clat_drops_total{{reason="{reason}"}} {number}.0' in text


@pytest.fixture
def own_namespace() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"{os.environ.get('CLAT_TEST_NS', 'clat')}-dp"
    if name in netns.listnetns():
        netns.remove(name)
    netns.create(name)
    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()
        netns.remove(name)


@pytest.mark.root
def test_the_userspace_data_path_translates_through_the_loop(own_namespace: None) -> None:
    tun = TunDevice.open("cdp0")
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="cdp0")[0]
        ipr.link("set", index=index, state="up")
        ipr.addr("add", index=index, address="192.0.0.1", prefixlen=32)
        ipr.route("add", dst="203.0.113.0", dst_len=24, oif=index)
    translator = Translator(
        XlatConfig(pool6="64:ff9b::/96", eamt=[("192.0.0.1/32", "fd64:c1a7:464::1/128")])
    )
    stats = Stats()
    datapath: Datapath = UserspaceDatapath(tun, translator, stats, workers=1)
    datapath.start()
    loop = PacketLoop()
    datapath.attach(loop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"hello", ("203.0.113.10", 7))
    deadline = time.monotonic() + 5
    loop.run(lambda: stats.packets["4to6"] > 0 or time.monotonic() > deadline)
    with pytest.raises(ValueError):
        datapath.update_pool6("192.0.2.0/24")  # refused: the translator keeps its prefix
    datapath.collect(stats)
    datapath.stop()
    tun.close()
    assert datapath.name == "userspace"
    assert stats.packets["4to6"] == 1 and stats.bytes["4to6"] == 20 + 8 + 5


# ---- the undo list -----------------------------------------------------------------------------


def test_teardown_undoes_newest_first_and_survives_a_failing_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    def step(name: str) -> Undo:
        def undo() -> str:
            done.append(name)
            return f"took back {name}"

        return Undo(name, undo)

    def broken() -> str:
        raise OSError(5, "Input/output error")

    plumbing = PodPlumbing(logging.getLogger("test"))
    plumbing.made += [step("table"), step("sysctls"), Undo("tun", broken), step("routes")]
    with caplog.at_level(logging.INFO, logger="test"):
        plumbing.teardown()
    assert done == ["routes", "sysctls", "table"]
    assert plumbing.made == []
    assert "cleanup of tun: [Errno 5] Input/output error" in caplog.text
    assert "took back table" in caplog.text


# ---- sysctls: what each was and what it is now -------------------------------------------------


@pytest.fixture
def proc_sys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in (
        ("net/ipv6/conf/all/forwarding", "0"),
        ("net/ipv6/conf/eth0/accept_ra", "1"),
    ):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(value + "\n")
    monkeypatch.setattr(netconf, "PROC_SYS", tmp_path)
    return tmp_path


def test_the_change_log_says_before_and_after(proc_sys: Path) -> None:
    changes = netconf.SysctlChanges()
    changes.plan("net/ipv6/conf/all/forwarding", "1")
    changes.plan("net/ipv6/conf/eth0/accept_ra", "2")
    assert changes.apply() == []
    assert changes.describe_changes() == (
        "net/ipv6/conf/all/forwarding 0->1 net/ipv6/conf/eth0/accept_ra 1->2"
    )
    assert changes.describe_restore() == (
        "net/ipv6/conf/all/forwarding 1->0 net/ipv6/conf/eth0/accept_ra 2->1"
    )
    assert changes.restore() == []
    assert (proc_sys / "net/ipv6/conf/all/forwarding").read_text() == "0"
    assert netconf.SysctlChanges().describe_changes() == "none"


# ---- the one loop ------------------------------------------------------------------------------


def test_the_loop_serves_descriptors_ticks_and_publishes_once_more_at_the_end() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    seen: list[bytes] = []
    published: list[int] = []
    ticks: list[int] = []
    stop = threading.Event()

    def on_readable(_events: int) -> None:
        seen.append(os.read(read_end, 100))
        if b"stop" in seen[-1]:
            stop.set()

    loop = PacketLoop()
    loop.watch(read_end, on_readable, counts=True)
    loop.every_wake(lambda: ticks.append(1))
    os.write(write_end, b"one")
    threading.Timer(0.1, lambda: os.write(write_end, b"stop")).start()
    loop.run(stop.is_set, publish=lambda: published.append(len(seen)))
    os.close(read_end)
    os.close(write_end)
    assert b"".join(seen) == b"onestop"
    assert len(ticks) >= 2
    assert published[-1] == len(seen) and len(published) >= 2  # idle publish, then the last
