"""The host CLAT (node.hostClat): `clat-translator run --tun clat-host --nft-table clat_host` in a
namespace that plays an IPv6-only node, with state of its own that must come through untouched:
an `inet filter` table, IPv6 forwarding already on (a node routing for its pods) or off with a
default route learned from router advertisements, and another CLAT (its own `clat` TUN and
`clat_translator` table) translating beside it. Real parts: the testbed's router, tayga, unbound,
the IPv4 server; the comparison is of whole snapshots (links, addresses, routes of both families,
rules, the nft ruleset, every net.ipv4/net.ipv6 sysctl), not of a chosen few."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from pyroute2 import NetNS
from scapy.layers.inet6 import ICMPv6ND_RA

from testbed import Testbed

from .conftest import NS_PREFIX, ClatProcess
from .conftest import snapshot as full_snapshot

pytestmark = pytest.mark.root

SERVER = "203.0.113.10"
PREFIX = "2001:db8:64::/96"
HOST_ARGS = ("--tun", "clat-host", "--nft-table", "clat_host", "--plat-prefix", PREFIX)
# The other CLAT has addresses of its own: two CLATs in one namespace must not share them, and
# only one of them can have the internal NAT66 address (its /128 route is on its own TUN): the
# other one's is an address the network routes to the node (--clat-v6, no NAT66).
OTHER_V6 = "2001:db8:1:c1a7::4"
OTHER_ARGS = ("--clat-v4", "192.0.0.4", "--clat-v6", OTHER_V6, "--plat-prefix", PREFIX)
HOST_PORT, OTHER_PORT = 9182, 9181
FILTER_TABLE = """table inet filter {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 2222 drop
  }
}
"""


class Clat(ClatProcess):
    """`clat-translator run` in the host namespace, serving HTTP on a port of its own."""

    def __init__(self, tb: Testbed, port: int, *args: str) -> None:
        super().__init__(tb, *args, "--listen", f"[::1]:{port}")  # the last --listen wins
        self.port = port

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://[::1]:{self.port}{path}"
        result = self.tb.run(self.tb.pod, ["curl", "-s", "-m", "2", "-w", "\n%{http_code}", url])
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body.rstrip("\n")


@pytest.fixture(scope="module")
def node() -> Iterator[Testbed]:
    """A testbed of its own: its `pod` namespace plays the node, and these tests change it."""
    with Testbed(f"{NS_PREFIX}h") as tb:
        yield tb


def snapshot(tb: Testbed) -> dict[str, str]:
    """The whole namespace; only the countdown of RA-learned routes' lifetimes is blanked."""
    state = full_snapshot(tb)
    state["routes6"] = re.sub(r"expires \d+sec", "expires -", state["routes6"])
    return state


def ping(tb: Testbed) -> bool:
    result = tb.run(tb.pod, ["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER])
    return result.returncode == 0


def route_device(tb: Testbed) -> str:
    with NetNS(tb.pod) as ns:
        route = ns.route("get", dst=SERVER)[0]
        return str(ns.get_links(route.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME"))


def nft(tb: Testbed, *args: str, stdin: str | None = None) -> str:
    argv = ["ip", "netns", "exec", tb.pod, "nft", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def routing_node(node: Testbed) -> Iterator[Testbed]:
    """The node routes for its pods already (forwarding 1) and has a firewall table of its own."""
    node.sysctl(node.pod, "net.ipv6.conf.all.forwarding", "1")
    nft(node, "-f", "-", stdin=FILTER_TABLE)
    try:
        yield node
    finally:
        nft(node, "delete", "table", "inet", "filter")
        node.sysctl(node.pod, "net.ipv6.conf.all.forwarding", "0")


@pytest.fixture
def other_clat(routing_node: Testbed) -> Iterator[Clat]:
    """A pod-style CLAT (`clat`, table clat_translator) translating in the same namespace."""
    tb = routing_node
    with NetNS(tb.rtr) as rtr:
        rtr.route("add", dst=OTHER_V6, dst_len=128, gateway=tb.addr.pod, family=socket.AF_INET6)
    clat = Clat(tb, OTHER_PORT, *OTHER_ARGS)
    try:
        clat.wait_ready()
        assert route_device(tb) == "clat"
        assert ping(tb)
        yield clat
        assert clat.stop() == 0
    finally:
        clat.close()
        with NetNS(tb.rtr) as rtr:
            rtr.route("del", dst=OTHER_V6, dst_len=128, family=socket.AF_INET6)


def assert_ipv4_works_through(tb: Testbed, device: str) -> None:
    assert route_device(tb) == device
    assert ping(tb)
    page = tb.run(tb.pod, ["curl", "-s", "-m", "5", f"http://{SERVER}/"])
    assert page.returncode == 0 and SERVER in page.stdout, page
    trace = tb.run(
        tb.pod, ["traceroute", "-n", "-q", "1", "-w", "2", "-m", "10", SERVER], timeout=90
    )
    hops = [line.split()[1] for line in trace.stdout.splitlines()[1:] if len(line.split()) > 1]
    # 192.0.2.2 is the IPv4 router behind the NAT64: its Time Exceeded came back translated
    assert "192.0.2.2" in hops and hops[-1] == SERVER, trace.stdout


def test_host_clat_beside_another_clat_touches_nothing_of_the_node(
    routing_node: Testbed, other_clat: Clat
) -> None:
    tb = routing_node
    before = snapshot(tb)
    # --force: the other CLAT's default route is IPv4 already; the host CLAT's two /1 win
    host = Clat(tb, HOST_PORT, *HOST_ARGS, "--force")
    try:
        host.wait_ready()
        assert_ipv4_works_through(tb, "clat-host")
        assert host.metrics_sum("clat_packets_total") > 0
        during = snapshot(tb)
        ours = nft(tb, "list", "table", "ip6", "clat_host")
        # NAT66 for the CLAT's own address only: nothing else of the node is masqueraded
        masquerades = [line.strip() for line in ours.splitlines() if "masquerade" in line]
        assert masquerades == ['ip6 saddr fd64:c1a7:464::1 oifname != "clat-host" masquerade']
        assert "table inet filter" in during["nftables"]
        assert "table ip6 clat_translator" in during["nftables"]
        # forwarding was on: no sysctl of the node is changed (clat-host's own come and go)
        host_sysctls = [s for s in during["sysctls"].splitlines() if ".clat-host." not in s]
        assert host_sysctls == before["sysctls"].splitlines()
        assert "sysctls changed: none" in host.log
        assert host.stop(signal.SIGTERM) == 0
    finally:
        host.close()
    assert snapshot(tb) == before
    # the other CLAT never noticed
    assert other_clat.http("/readyz") == (200, "translating")
    assert_ipv4_works_through(tb, "clat")


def test_host_clat_sigkill_then_restart_replaces_only_its_own_leftovers(
    routing_node: Testbed, other_clat: Clat
) -> None:
    tb = routing_node
    before = snapshot(tb)
    first = Clat(tb, HOST_PORT, *HOST_ARGS, "--force")
    try:
        first.wait_ready()
        first.stop(signal.SIGKILL)
    finally:
        first.close()
    leftover = snapshot(tb)
    assert "table ip6 clat_host" in leftover["nftables"]
    second = Clat(tb, HOST_PORT, *HOST_ARGS, "--force")
    try:
        second.wait_ready()
        found = second.wait_log(r"removed leftovers of an earlier run: (.*)").group(1)
        assert found == "nftables table ip6 clat_host"
        assert "clat_translator" not in second.log
        # the other CLAT's table and TUN survived and it still translates
        state = snapshot(tb)
        assert "table ip6 clat_translator" in state["nftables"]
        assert re.search(r"^\d+: clat: ", state["links"], re.MULTILINE)
        assert other_clat.http("/readyz") == (200, "translating")
        assert_ipv4_works_through(tb, "clat-host")
        assert second.stop() == 0
    finally:
        second.close()
    assert snapshot(tb) == before
    assert_ipv4_works_through(tb, "clat")


@pytest.fixture
def ra_node(node: Testbed) -> Iterator[Testbed]:
    """A node that does not forward and depends on router advertisements: a default route
    learned from an RA on eth0, a LAN link `lan1` with an RA-learned route, and `lan0` whose
    own forwarding is on while all/forwarding is off."""
    tb = node
    assert tb.sysctl(tb.pod, "net.ipv6.conf.all.forwarding") == "0"
    assert tb.sysctl(tb.pod, "net.ipv6.conf.eth0.accept_ra") == "1"
    with NetNS(tb.pod) as ns:
        ns.link("add", ifname="lan0", kind="veth", peer={"ifname": "lan1"})
    for device in ("lan0", "lan1"):  # no duplicate address detection: a snapshot that settles
        tb.sysctl(tb.pod, f"net.ipv6.conf.{device}.accept_dad", "0")
    tb.sysctl(tb.pod, "net.ipv6.conf.lan0.forwarding", "1")
    with NetNS(tb.pod) as ns:
        for device in ("lan0", "lan1"):
            ns.link("set", index=ns.link_lookup(ifname=device)[0], state="up")
        lan1 = ns.link_lookup(ifname="lan1")[0]
        ns.route("add", dst="2001:db8:99::", dst_len=64, oif=lan1, proto=9, family=10)
    advertise_default_router(tb)
    try:
        yield tb
    finally:
        with NetNS(tb.pod) as ns:
            ns.link("del", index=ns.link_lookup(ifname="lan0")[0])
            for route in ns.get_routes(family=socket.AF_INET6, table=254):
                if route["proto"] == 9 and route["dst_len"] == 0:
                    ns.route("del", dst="::", dst_len=0, gateway=route.get_attr("RTA_GATEWAY"))


def advertise_default_router(tb: Testbed) -> None:
    """rtr sends one RA (router lifetime 9000 s, RFC 4861 §4.2); wait for the node's route."""
    with NetNS(tb.rtr) as rtr:
        index = rtr.link_lookup(ifname="to-pod")[0]
    with tb.inside(tb.rtr):
        sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with sender:
        sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # §6.1.2
        sender.sendto(bytes(ICMPv6ND_RA(routerlifetime=9000)), ("ff02::1", 0, 0, index))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if ra_default_routes(tb):
            return
        time.sleep(0.1)
    raise AssertionError("the node learned no default route from the RA")


def ra_default_routes(tb: Testbed) -> list[str]:
    routes = tb.run(tb.pod, ["ip", "-6", "route", "show", "default"]).stdout.splitlines()
    return [r for r in routes if "proto ra" in r]


def test_host_clat_on_a_node_that_learns_routes_from_ras(ra_node: Testbed) -> None:
    tb = ra_node
    before = snapshot(tb)
    for stop in (signal.SIGTERM, signal.SIGKILL):
        host = Clat(tb, HOST_PORT, *HOST_ARGS)
        try:
            host.wait_ready()
            # forwarding went on without losing the RA default route (accept_ra=2 came first)
            assert tb.sysctl(tb.pod, "net.ipv6.conf.all.forwarding") == "1"
            assert ra_default_routes(tb)
            sysctl = {
                d: tb.sysctl(tb.pod, f"net.ipv6.conf.{d}.accept_ra") for d in ("eth0", "lan1")
            }
            assert sysctl == {"eth0": "2", "lan1": "2"}
            assert tb.sysctl(tb.pod, "net.ipv6.conf.lan0.accept_ra") == "1"  # it forwarded before
            assert_ipv4_works_through(tb, "clat-host")
            host.stop(stop)
        finally:
            host.close()
    # the killed run's record in its table lets the next run put the sysctls back
    assert "table ip6 clat_host" in snapshot(tb)["nftables"]
    assert tb.sysctl(tb.pod, "net.ipv6.conf.all.forwarding") == "1"
    cleaner = Clat(tb, HOST_PORT, *HOST_ARGS)
    try:
        cleaner.wait_ready()
        found = cleaner.wait_log(r"removed leftovers of an earlier run: (.*)").group(1)
        assert found == "nftables table ip6 clat_host, sysctls"
        assert cleaner.stop() == 0
    finally:
        cleaner.close()
    after = snapshot(tb)
    assert after == before
    # per device forwarding (lan0 on, the rest off) is back too, not flattened to all/forwarding
    assert tb.sysctl(tb.pod, "net.ipv6.conf.lan0.forwarding") == "1"
    assert tb.sysctl(tb.pod, "net.ipv6.conf.lan1.forwarding") == "0"


def test_host_clat_stands_down_when_the_node_has_native_ipv4(node: Testbed) -> None:
    tb = node
    with NetNS(tb.pod) as ns:
        ns.link("add", ifname="native4", kind="veth", peer={"ifname": "native4-peer"})
        index = ns.link_lookup(ifname="native4")[0]
        ns.link("set", index=index, state="up")
        ns.addr("add", index=index, address="198.18.0.2", prefixlen=24)
        ns.route("add", dst="0.0.0.0", dst_len=0, gateway="198.18.0.1")
    try:
        before = snapshot(tb)
        host = Clat(tb, HOST_PORT, *HOST_ARGS)
        try:
            host.wait_ready()
            assert host.http("/readyz") == (200, "standing down")
            assert "standing down: " in host.log and "(default via 198.18.0.1" in host.log
            assert snapshot(tb) == before  # nothing made: no device, no table, no sysctl
            assert host.stop() == 0
        finally:
            host.close()
        assert snapshot(tb) == before
    finally:
        with NetNS(tb.pod) as ns:
            ns.link("del", index=ns.link_lookup(ifname="native4")[0])
