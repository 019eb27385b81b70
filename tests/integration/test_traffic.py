"""IPv4 from an IPv6-only pod, through the real clat-translator, a real router with a 1400-byte
hop, Debian's tayga (NAT64) and unbound (DNS64), to IPv4-only servers."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from testbed import Testbed
from testbed.servers import PAGE_TEMPLATE, pattern_bytes

from .conftest import ClatProcess
from .native_server import NATIVE_SERVER4, SO_RCVBUFFORCE, TCP_PORT, UDP_PORT, NativeServer

pytestmark = pytest.mark.root

SERVER = "203.0.113.10"
DIRECTIONS = ("4to6", "6to4")
FIVE_MB = 5 * 1024 * 1024


# Every test here runs over three data paths: the kernel one (tc-eBPF on the TUN, the userspace
# path with offload for what it passes), and the userspace one alone, with offload (virtio-net
# headers, TSO/USO super-packets, one process) and with one plain packet per read, in two worker
# processes on a multi-queue TUN (test_workers.py has offload with workers).
DATA_PATHS = {
    "kernel": ("--datapath", "kernel"),
    "offload": ("--datapath", "userspace"),
    "no-offload": ("--datapath", "userspace", "--no-offload", "--workers", "2"),
}


@pytest.fixture(scope="module", params=sorted(DATA_PATHS))
def clat(testbed: Testbed, request: pytest.FixtureRequest) -> Iterator[ClatProcess]:
    # No --plat-prefix: the prefix comes from the DNS64 (RFC 7050), as in most clusters.
    process = ClatProcess(testbed, *DATA_PATHS[request.param])
    try:
        process.wait_ready()
        yield process
        assert process.stop() == 0
    finally:
        process.close()


def packets(clat: ClatProcess, direction: str) -> float:
    """Packets translated by the data path in use: the kernel's, or the userspace path's."""
    name = "clat_kernel_packets_total" if clat.kernel_path() else "clat_packets_total"
    return clat.metric(name, f'direction="{direction}"')


def passed(clat: ClatProcess, reason: str) -> float:
    """Packets the kernel path left to userspace for `reason`."""
    return clat.metric("clat_kernel_passed_total", f'reason="{reason}"')


def test_the_data_path_is_the_one_asked_for(clat: ClatProcess, testbed: Testbed) -> None:
    kernel = "kernel" in clat.args
    assert clat.kernel_path() is kernel
    name = "kernel" if kernel else "userspace"
    _, text = clat.http("/metrics")
    assert f'clat_datapath_info{{datapath="{name}",kernel_unavailable=""' in text, text
    before = {d: clat.metric("clat_kernel_packets_total", f'direction="{d}"') for d in DIRECTIONS}
    result = testbed.run(testbed.pod, ["ping", "-c", "5", "-i", "0.05", "-W", "2", SERVER])
    assert result.returncode == 0, result.stdout
    for d in DIRECTIONS:
        grown = clat.metric("clat_kernel_packets_total", f'direction="{d}"') - before[d]
        assert (grown >= 5) if kernel else (grown == 0), d


def udp_exchange(tb: Testbed, payload: bytes, port: int = 7, timeout: float = 3) -> bytes:
    with tb.inside(tb.pod):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((SERVER, port))
        sock.send(payload)
        return sock.recv(65535)


def test_run_discovers_the_prefix_of_the_dns64(clat: ClatProcess) -> None:
    assert "PLAT prefix 2001:db8:64::/96 from rfc7050 via 2001:db8:2::53" in clat.log
    assert clat.metric("clat_discovery_attempts_total", 'method="rfc7050",result="found"') >= 1


def test_ping(clat: ClatProcess, testbed: Testbed) -> None:
    result = testbed.run(testbed.pod, ["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 received" in result.stdout


def test_http_page(clat: ClatProcess, testbed: Testbed) -> None:
    result = testbed.run(testbed.pod, ["curl", "-sS", "-m", "5", f"http://{SERVER}/"])
    assert result.stdout == PAGE_TEMPLATE.format(address=SERVER), result.stderr


def test_udp_echo(clat: ClatProcess, testbed: Testbed) -> None:
    assert udp_exchange(testbed, b"hello over a translated IPv4 literal") == (
        b"hello over a translated IPv4 literal"
    )


def test_dns_over_an_ipv4_literal(clat: ClatProcess, testbed: Testbed) -> None:
    result = testbed.run(
        testbed.pod, ["dig", "+short", "+time=2", "+tries=2", "@203.0.113.53", "server.clat.test"]
    )
    assert result.stdout.strip() == SERVER, result.stdout + result.stderr


def test_traceroute_shows_the_hops_behind_the_nat64(clat: ClatProcess, testbed: Testbed) -> None:
    errors_before = passed(clat, "icmp")
    result = testbed.run(
        testbed.pod, ["traceroute", "-n", "-q", "1", "-w", "2", "-m", "10", SERVER], timeout=90
    )
    hops = [line.split()[1] for line in result.stdout.splitlines()[1:] if len(line.split()) > 1]
    # 192.0.2.2 is the IPv4 router between the NAT64 and the server: its Time Exceeded came
    # back through tayga and the CLAT. The last hop's Port Unreachable ends the trace.
    assert "192.0.2.2" in hops, result.stdout
    assert hops[-1] == SERVER, result.stdout
    assert "*" not in hops[hops.index("192.0.2.2") :], result.stdout
    if clat.kernel_path():  # the Time Exceeded / Port Unreachable errors: userspace's (§5.2)
        assert passed(clat, "icmp") >= errors_before + 2


def test_closed_udp_port_is_refused(clat: ClatProcess, testbed: Testbed) -> None:
    with pytest.raises(ConnectionRefusedError):
        udp_exchange(testbed, b"anyone?", port=9)


def test_tcp_download_5mb_across_the_1400_hop(clat: ClatProcess, testbed: Testbed) -> None:
    before = packets(clat, "6to4")
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            testbed.pod,
            "curl",
            "-sS",
            "-m",
            "60",
            f"http://{SERVER}/bytes/{FIVE_MB}",
        ],
        capture_output=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == FIVE_MB
    assert result.stdout == pattern_bytes(FIVE_MB)
    assert packets(clat, "6to4") >= before + FIVE_MB // 65536  # super-packets at most 64 KB


IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14  # linux/in.h


def test_packet_too_big_becomes_fragmentation_needed(clat: ClatProcess, testbed: Testbed) -> None:
    """The router's Packet Too Big (1400) reaches the app as Fragmentation Needed (1380)."""
    # (or the pod's own forwarding, with the hop's MTU cached: from the pod's address, then)
    passed_before = clat.metrics_sum("clat_kernel_passed_total")
    testbed.run(testbed.pod, ["ip", "-4", "route", "flush", "cache"], check=True)
    with testbed.inside(testbed.pod):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)  # DF set
        sock.connect((SERVER, 7))
        assert sock.getsockopt(socket.IPPROTO_IP, IP_MTU) == 1480  # the route's: 1500 - 20
        learnt = 0
        for _ in range(30):
            try:
                sock.send(bytes(1480 - 28))  # 1500 bytes once translated: too big for the hop
            except OSError as exc:
                assert exc.errno == errno.EMSGSIZE
                learnt = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
                break
            time.sleep(0.1)
        assert learnt == 1380
    if clat.kernel_path():  # the datagram went in the kernel, the Packet Too Big to userspace
        assert clat.metrics_sum("clat_kernel_passed_total") > passed_before


def test_tcp_upload_5mb_across_the_1400_hop(
    clat: ClatProcess, testbed: Testbed, tmp_path: object
) -> None:
    body = hashlib.sha256(b"seed").digest() * (FIVE_MB // 32)
    before = packets(clat, "4to6")
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            testbed.pod,
            "curl",
            "-sS",
            "-m",
            "60",
            "--data-binary",
            "@-",
            "-H",
            "Content-Type: application/octet-stream",
            f"http://{SERVER}/sha256",
        ],
        input=body,
        capture_output=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == hashlib.sha256(body).hexdigest()
    assert packets(clat, "4to6") >= before + FIVE_MB // 65536


def test_udp_4000_bytes_across_the_1400_hop(clat: ClatProcess, testbed: Testbed) -> None:
    payload = bytes(range(256)) * 15 + bytes(160)  # 4000 bytes: fragmented on every hop
    fragments_before = passed(clat, "fragment")
    assert udp_exchange(testbed, payload) == payload
    if clat.kernel_path():  # fragments are userspace's (RFC 7915 §4.1): 3 of 1480 bytes out
        assert passed(clat, "fragment") >= fragments_before + 3


def test_native_ipv6_and_translated_ipv4_concurrently(clat: ClatProcess, testbed: Testbed) -> None:
    """Same destination, same local port, both families at once: the NAT66 must not clash."""
    server6 = testbed.synthesized(SERVER)
    with testbed.inside(testbed.pod):
        native = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        translated = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with native, translated:
        native.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        native.bind(("::", 0))
        port = native.getsockname()[1]
        translated.bind(("0.0.0.0", port))  # masquerade would map it onto the native tuple
        for sock, peer in ((native, (server6, 7)), (translated, (SERVER, 7))):
            sock.settimeout(3)
            sock.connect(peer)
        for round_ in range(5):
            native.send(b"native %d" % round_)
            translated.send(b"translated %d" % round_)
            assert native.recv(100) == b"native %d" % round_
            assert translated.recv(100) == b"translated %d" % round_

    # and bulk TCP over both families at the same time
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    def fetch(name: str, url: str) -> None:
        results[name] = subprocess.run(
            ["ip", "netns", "exec", testbed.pod, "curl", "-sS", "-m", "60", url],
            capture_output=True,
            timeout=90,
        )

    size = 2 * 1024 * 1024
    threads = [
        threading.Thread(target=fetch, args=("v6", f"http://[{server6}]/bytes/{size}")),
        threading.Thread(target=fetch, args=("v4", f"http://{SERVER}/bytes/{size}")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("v6", "v4"):
        assert results[name].returncode == 0, (name, results[name].stderr)
        assert results[name].stdout == pattern_bytes(size), name


def test_metrics_count_packets_and_drops(clat: ClatProcess, testbed: Testbed) -> None:
    testbed.run(testbed.pod, ["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER])
    kernel = "kernel_" if clat.kernel_path() else ""
    assert clat.metric(f"clat_{kernel}packets_total", 'direction="4to6"') > 0
    assert clat.metric(f"clat_{kernel}packets_total", 'direction="6to4"') > 0
    assert clat.metric(f"clat_{kernel}bytes_total", 'direction="4to6"') > 0
    assert clat.metric("clat_ready") == 1
    assert clat.metric("clat_prefix_info", 'prefix="2001:db8:64::/96",source="rfc7050"') == 1

    before = clat.metric("clat_drops_total", 'reason="truncated"')
    # Straight into the TUN (a packet socket on the device is the kernel's transmit path):
    # an "IPv4 packet" shorter than its own header.
    with testbed.inside(testbed.pod):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    with raw:
        raw.sendto(b"\x45\x00\x00\x54\x00\x00", ("clat", 0x0800))
    for _ in range(20):
        if clat.metric("clat_drops_total", 'reason="truncated"') > before:
            break
        threading.Event().wait(0.1)
    assert clat.metric("clat_drops_total", 'reason="truncated"') == before + 1
    if kernel:  # the kernel path left it to userspace, which counts the drop
        assert clat.metric("clat_kernel_passed_total", 'reason="length"') >= 1


# ---- super-packets both ways: a server beyond the CLAT over native IPv6 (no NAT64) -------------


@pytest.fixture(scope="module")
def native_server(testbed: Testbed) -> Iterator[NativeServer]:
    with NativeServer(testbed) as server:
        yield server


def offloading(clat: ClatProcess) -> bool:
    """Whether the userspace path takes super-packets: offload on and no kernel path before it."""
    return "--no-offload" not in clat.args and not clat.kernel_path()


def tcp_to_native(tb: Testbed, request: bytes, body: bytes = b"") -> bytes:
    with tb.inside(tb.pod):
        sock = socket.create_connection((NATIVE_SERVER4, TCP_PORT), timeout=30)
    with sock:
        sock.sendall(request + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_both_ways_as_super_packets(
    clat: ClatProcess, testbed: Testbed, native_server: NativeServer
) -> None:
    """5 MB each way: TSO super-packets translated whole, across the 1400-byte hop."""
    before = {
        d: clat.metric("clat_offload_super_packets_total", f'direction="{d}"')
        for d in ("4to6", "6to4")
    }
    kernel_before = {d: packets(clat, d) for d in DIRECTIONS}
    gso_before = passed(clat, "gso")
    assert tcp_to_native(testbed, b"get %d\n" % FIVE_MB) == pattern_bytes(FIVE_MB)
    body = hashlib.sha256(b"up").digest() * (FIVE_MB // 32)
    answer = tcp_to_native(testbed, b"put %d\n" % len(body), body)
    assert answer.decode().strip() == hashlib.sha256(body).hexdigest()
    for direction in ("4to6", "6to4"):
        grown = clat.metric("clat_offload_super_packets_total", f'direction="{direction}"')
        if clat.kernel_path():
            # The kernel path carried them, as super-packets of 64 KB at most; the userspace
            # path took whole only the super-packets it left for their GSO type.
            in_kernel = packets(clat, direction) - kernel_before[direction]
            assert in_kernel >= FIVE_MB // 65536, direction
            assert grown - before[direction] <= passed(clat, "gso") - gso_before, direction
        else:
            assert (grown > before[direction]) is offloading(clat), direction


def test_udp_burst_both_ways_intact_and_in_order(
    clat: ClatProcess, testbed: Testbed, native_server: NativeServer
) -> None:
    """Bursts of equal datagrams: with offload they leave as USO frames, and arrive unaltered."""
    before = {
        d: clat.metric("clat_offload_coalesced_total", f'direction="{d}"') for d in ("4to6", "6to4")
    }
    kernel_before = {d: packets(clat, d) for d in DIRECTIONS}
    with testbed.inside(testbed.pod):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        sock.connect((NATIVE_SERVER4, UDP_PORT))
        sock.settimeout(3)
        sent = [
            i.to_bytes(4, "big") + bytes((i + k) % 256 for k in range(1196)) for i in range(400)
        ]
        for burst in range(0, len(sent), 50):
            for datagram in sent[burst : burst + 50]:
                sock.send(datagram)
            time.sleep(0.02)
        received = []
        with contextlib.suppress(TimeoutError):
            while len(received) < len(sent):
                received.append(sock.recv(2048))
    assert received == sent
    for direction in ("4to6", "6to4"):
        grown = clat.metric("clat_offload_coalesced_total", f'direction="{direction}"')
        assert (grown > before[direction]) is offloading(clat), direction
        if clat.kernel_path():  # every datagram of the burst, in the kernel
            assert packets(clat, direction) - kernel_before[direction] >= len(sent), direction
