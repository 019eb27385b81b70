"""The data path's settings and plumbing: --offload/--no-offload and --workers (with their CLAT_*
variables), the worker count, counters shared between processes, and the TUN's offload
negotiation with the real kernel (root, in a namespace of our own)."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
from collections.abc import Iterator

import pytest
from clat_translator import tun as tun_module
from clat_translator.cli import build_parser, main
from clat_translator.metrics import Stats
from clat_translator.tun import (
    ALL_OFFLOADS,
    TUN_F_USO4,
    TUN_F_USO6,
    TunDevice,
    offload_names,
)
from clat_translator.workers import SharedCounters, auto_workers, usable_cpus
from clat_translator.xlat.offload import GSO_UDP_L4, VNET_HDR
from pyroute2 import IPRoute, netns

NS = "cofl-tun"


# ---- flags ----------------------------------------------------------------------------------


def test_offload_is_on_by_default_with_one_worker() -> None:
    args = build_parser().parse_args(["run"])
    assert (args.offload, args.workers) == (True, 1)


@pytest.mark.parametrize(
    ("argv", "env", "offload", "workers"),
    [
        (["--no-offload"], {}, False, 1),
        ([], {"CLAT_OFFLOAD": "false"}, False, 1),
        ([], {"CLAT_OFFLOAD": "off"}, False, 1),
        (["--offload"], {"CLAT_OFFLOAD": "false"}, True, 1),  # the flag wins
        (["--workers", "3"], {}, True, 3),
        ([], {"CLAT_WORKERS": "2"}, True, 2),
        ([], {"CLAT_WORKERS": "auto"}, True, None),
        (["--workers", "auto"], {"CLAT_WORKERS": "2"}, True, None),
    ],
)
def test_offload_and_workers_from_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    offload: bool,
    workers: int | None,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = build_parser().parse_args(["run", *argv])
    assert (args.offload, args.workers) == (offload, workers)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers: '0': auto, or a number from 1 to 64"),
        (["--workers", "many"], {}, "--workers: 'many': auto, or a number from 1 to 64"),
        ([], {"CLAT_WORKERS": "-1"}, "CLAT_WORKERS: '-1': auto, or a number from 1 to 64"),
        ([], {"CLAT_OFFLOAD": "maybe"}, "CLAT_OFFLOAD: 'maybe' is not true or false"),
    ],
)
def test_bad_values_exit_2_with_a_message(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_:
        main(["run", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_auto_workers_follow_the_cpus_and_the_cgroup_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr("clat_translator.workers._cgroup_cpu_quota", lambda: None)
    assert usable_cpus() == 16 and auto_workers() == 8  # at most MAX_AUTO_WORKERS
    monkeypatch.setattr("clat_translator.workers._cgroup_cpu_quota", lambda: 1.5)
    assert usable_cpus() == 2
    monkeypatch.setattr("clat_translator.workers._cgroup_cpu_quota", lambda: 0.1)
    assert usable_cpus() == 1


# ---- counters shared between processes --------------------------------------------------------


def test_worker_counters_add_up_across_processes() -> None:
    reasons = ("truncated", "bad-vnet-header")
    shared = SharedCounters(2, reasons)
    pid = os.fork()
    if pid == 0:  # a worker: counts, publishes, exits
        stats = Stats(reasons)
        stats.packets["4to6"] += 7
        stats.bytes["6to4"] += 1000
        stats.drops["bad-vnet-header"] += 2
        stats.coalesced["4to6"] += 5
        shared.publish(1, stats)
        os._exit(0)
    os.waitpid(pid, 0)
    mine = Stats(reasons)
    mine.packets["4to6"] += 3
    shared.publish(0, mine)
    total = Stats(reasons)
    shared.sum_into(total)
    assert total.packets["4to6"] == 10
    assert total.bytes["6to4"] == 1000
    assert total.drops["bad-vnet-header"] == 2 and total.drops["truncated"] == 0
    assert total.coalesced["4to6"] == 5
    restarted = Stats(reasons)
    shared.load(1, restarted)  # a restarted worker carries on from its predecessor
    assert restarted.packets["4to6"] == 7
    shared.close()


# ---- the TUN device and the kernel ---------------------------------------------------------


@pytest.fixture
def own_namespace() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if NS in netns.listnetns():
        netns.remove(NS)
    netns.create(NS)
    netns.pushns(NS)
    try:
        yield
    finally:
        netns.popns()
        netns.remove(NS)


@pytest.mark.root
def test_kernel_takes_every_offload_and_hands_over_a_uso_super_packet(own_namespace: None) -> None:
    tun = TunDevice.open("cofl0", vnet_hdr=True)
    try:
        assert offload_names(tun.set_offload()) == "csum,tso4,tso6,tso-ecn,uso4,uso6"
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname="cofl0")[0]
            ipr.link("set", index=index, state="up")
            ipr.addr("add", index=index, address="192.0.0.1", prefixlen=32)
            ipr.route("add", dst="203.0.113.0", dst_len=24, oif=index)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT: the app asks for USO
        sender.sendto(bytes(3500), ("203.0.113.10", 7))
        sender.close()
        buffer = bytearray(70000)
        select.select([tun.fileno()], [], [], 2)
        frames = []
        while n := tun.readinto(buffer):
            if buffer[10] >> 4 == 4:
                frames.append((VNET_HDR.unpack_from(buffer), n - 10))
        # one read: 3500 bytes in 1000-byte segments, checksum left to the device
        assert frames == [((1, GSO_UDP_L4, 28, 1000, 20, 6), 3528)]
    finally:
        tun.close()


@pytest.mark.root
def test_refused_offloads_are_given_up_in_order(
    own_namespace: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older kernel (before 6.2) refuses USO: the TUN keeps checksum and TCP offloads."""
    real_ioctl = fcntl.ioctl

    def older_kernel(fd: int, request: int, arg: object = 0) -> object:
        if request == tun_module.TUNSETOFFLOAD and int(arg) & (TUN_F_USO4 | TUN_F_USO6):  # type: ignore[call-overload]
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_ioctl(fd, request, arg)  # type: ignore[arg-type]

    tun = TunDevice.open("cofl0", vnet_hdr=True)
    try:
        monkeypatch.setattr(fcntl, "ioctl", older_kernel)
        assert offload_names(tun.set_offload(ALL_OFFLOADS)) == "csum,tso4,tso6,tso-ecn"
    finally:
        tun.close()


@pytest.mark.root
def test_queues_of_one_device_and_a_detached_one_keeps_it(own_namespace: None) -> None:
    first = TunDevice.open("cofl0", vnet_hdr=True, multi_queue=True)
    second = TunDevice.open("cofl0", vnet_hdr=True, multi_queue=True)
    try:
        first.detach_queue()
        second.close()
        with IPRoute() as ipr:  # the detached queue's descriptor still holds the device
            assert ipr.link_lookup(ifname="cofl0")
    finally:
        first.close()
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname="cofl0")


def test_vnet_header_layout_matches_the_kernel() -> None:
    # include/uapi/linux/virtio_net.h: u8 flags, u8 gso_type, then four 16-bit fields
    assert VNET_HDR.size == tun_module.VNET_HDR_SIZE == 10
