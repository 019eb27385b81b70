"""The kernel data path as the sidecar drives it (kernel_datapath.KernelPath): its counters in
`Stats` and /metrics, and the program on a real TUN in a namespace of its own: translated
packets never reach the descriptor, what it passes does, a prefix change is live, stop leaves
nothing on the device."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Iterator

import pytest
from clat_translator import counters
from clat_translator.bpf.loader import (
    OBJECT_PATH,
    PASS_REASONS,
    PROGRAM_NAME,
    TC_H_CLSACT_EGRESS,
    KernelPathUnavailable,
)
from clat_translator.datapath import Datapath
from clat_translator.kernel_datapath import KernelPath
from clat_translator.metrics import Stats, make_registry
from clat_translator.tun import TunDevice
from clat_translator.xlat import XlatConfig
from prometheus_client import generate_latest
from pyroute2 import IPRoute, netns

CONFIG = XlatConfig(
    pool6="64:ff9b::/96",
    eamt=[("192.0.0.1/32", "fd64:c1a7:464::1/128")],
    local_ipv4="192.0.0.2",
    rfc6791v4="192.0.0.8",
    amend_udp_checksum_zero=True,
    clat_mode=True,
)
IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 10, 0  # linux/in.h


def test_the_kernel_counters_reach_metrics_by_direction_and_reason() -> None:
    stats = Stats()
    stats.kernel_packets["4to6"], stats.kernel_packets["6to4"] = 11, 12
    stats.kernel_bytes["4to6"], stats.kernel_bytes["6to4"] = 1100, 1200
    for number, reason in enumerate(PASS_REASONS, start=100):
        stats.kernel_passed[reason] = number
    stats.kernel_drops["helper-error"] = 7
    stats.datapath, stats.datapath_requested, stats.offloads = "kernel", "auto", "off"
    text = generate_latest(make_registry(stats)).decode()
    assert 'clat_kernel_packets_total{direction="4to6"} 11.0' in text
    assert 'clat_kernel_packets_total{direction="6to4"} 12.0' in text
    assert 'clat_kernel_bytes_total{direction="6to4"} 1200.0' in text
    for number, reason in enumerate(PASS_REASONS, start=100):
        assert f'clat_kernel_passed_total{{reason="{reason}"}} {number}.0' in text
    assert 'clat_kernel_drops_total{reason="helper-error"} 7.0' in text
    assert (
        'clat_datapath_info{datapath="kernel",kernel_unavailable="",offloads="off",'
        'requested="auto",workers="1"} 1.0'
    ) in text
    assert "kernel packets 4to6=11 6to4=12" in stats.summary()
    assert "passed=" in stats.summary() and "drops=7" in stats.summary()
    # every family of the table, declared once
    for family in (*counters.KERNEL_BY_DIRECTION, *counters.KERNEL_BY_REASON):
        assert f"# TYPE {family.metric}_total counter" in text or f"{family.metric}_total" in text


def test_the_fallback_reason_is_a_label_and_the_summary_stays_userspace() -> None:
    stats = Stats()
    stats.datapath, stats.datapath_requested, stats.offloads = "userspace", "auto", "off"
    stats.kernel_unavailable = "loading the BPF program: operation not permitted"
    text = generate_latest(make_registry(stats)).decode()
    assert (
        'clat_datapath_info{datapath="userspace",'
        'kernel_unavailable="loading the BPF program: operation not permitted",'
    ) in text
    assert "kernel" not in stats.summary()


def test_a_configuration_the_program_lacks_is_refused_with_a_reason() -> None:
    with pytest.raises(KernelPathUnavailable, match="denylist4"):
        KernelPath(
            "clat", XlatConfig(pool6="64:ff9b::/96", eamt=CONFIG.eamt, denylist4=["10.0.0.0/8"])
        )


# ---- on a real TUN --------------------------------------------------------------------------


@pytest.fixture
def tun() -> Iterator[TunDevice]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not OBJECT_PATH.is_file():
        pytest.fail(f"{OBJECT_PATH} missing: `make bpf`")
    name = f"{os.environ.get('CLAT_TEST_NS', 'clat')}-kp"
    if name in netns.listnetns():
        netns.remove(name)
    netns.create(name)
    netns.pushns(name)
    try:
        device = TunDevice.open("ckp0")
        os.set_blocking(device.fileno(), False)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname="ckp0")[0]
            ipr.link("set", index=index, state="up")
            ipr.addr("add", index=index, address="192.0.0.1", prefixlen=32)
            ipr.route("add", dst="203.0.113.0", dst_len=24, oif=index)
        yield device
        device.close()
    finally:
        netns.popns()
        netns.remove(name)


def send_udp(payload: bytes, df: bool = True) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        if not df:
            sender.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        sender.sendto(payload, ("203.0.113.10", 7))


def read_tun(device: TunDevice, timeout: float = 0.5) -> list[bytes]:
    packets = []
    while select.select([device.fileno()], [], [], timeout)[0]:
        buffer = bytearray(65536)
        packets.append(bytes(buffer[: device.readinto(buffer)]))
        timeout = 0.05
    return packets


def our_filter_and_qdisc() -> tuple[int, bool]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="ckp0")[0]
        clsact = any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=index))
        try:
            filters = ipr.get_filters(index=index, parent=TC_H_CLSACT_EGRESS)
        except Exception:  # noqa: BLE001 - no clsact: no filter either
            filters = []
    names = [
        str(options.get_attr("TCA_BPF_NAME"))
        for f in filters
        if (options := f.get_attr("TCA_OPTIONS")) is not None and options.get_attr("TCA_BPF_NAME")
    ]
    return sum(1 for name in names if name.startswith(PROGRAM_NAME)), clsact


@pytest.mark.root
def test_the_kernel_path_translates_passes_switches_and_leaves_nothing(tun: TunDevice) -> None:
    stats = Stats()
    datapath: Datapath = KernelPath("ckp0", CONFIG)
    assert datapath.name == "kernel"
    datapath.start()
    try:
        assert our_filter_and_qdisc() == (1, True)
        read_tun(tun, timeout=0.2)  # what the kernel sent on its own (none expected, but IPv6)
        send_udp(b"hello")
        # translated in the kernel and handed back to the stack as IPv6: not on the descriptor
        assert [p for p in read_tun(tun) if p[0] >> 4 == 4] == []
        datapath.collect(stats)
        assert stats.kernel_packets["4to6"] == 1
        assert stats.kernel_bytes["4to6"] > 0
        datapath.collect(stats)  # sets, never adds
        assert stats.kernel_packets["4to6"] == 1

        # DF clear and over 1280 bytes as IPv6: RFC 7915 §4.1 fragments, userspace's job
        send_udp(bytes(1400), df=False)
        passed = [p for p in read_tun(tun) if p[0] >> 4 == 4]
        assert len(passed) == 1 and len(passed[0]) == 1428
        datapath.collect(stats)
        assert stats.kernel_passed["size"] == 1

        with pytest.raises(ValueError):
            datapath.update_pool6("64:ff9b::/95")  # not an RFC 6052 length: the old one stays
        datapath.update_pool6("2001:db8:6464::/64")
        send_udp(b"after the switch")
        datapath.collect(stats)
        assert stats.kernel_packets["4to6"] == 2
    finally:
        datapath.stop()
    datapath.stop()  # twice is harmless
    assert our_filter_and_qdisc() == (0, False)
    datapath.collect(stats)  # the last values stay after stop
    assert stats.kernel_packets["4to6"] == 2
    send_udp(b"to userspace now")
    assert [p for p in read_tun(tun) if p[0] >> 4 == 4]
