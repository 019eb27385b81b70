"""The netns testbed: real parts joined by veth pairs, none of them linked to the host.

```
 pod (IPv6 only)       rtr (IPv6 router)          plat
 eth0 2001:db8:1::2 -- 2001:db8:1::1              tayga NAT64 (tun nat64), unbound DNS64
                       2001:db8:2::1 -MTU 1400- 2001:db8:2::2, DNS64 on 2001:db8:2::53
                                                  192.0.2.1
                                                      |
 srv (IPv4 only)                      r4 (IPv4 router)|
 eth0 192.0.2.10 -------------------- 192.0.2.9, 192.0.2.2
 203.0.113.10 HTTP, UDP echo, ping; 203.0.113.53 DNS (unbound)
```
The NAT64 and the DNS64 use a network-specific prefix (2001:db8:64::/96 by default): Debian's
tayga refuses the well-known prefix together with documentation addresses (RFC 6052 §3.1).
The link between rtr and plat has MTU 1400 on both ends, so path-MTU discovery is exercised by a
real router. Namespace names are `<prefix>-pod`, `-rtr`, `-plat`, `-r4`, `-srv`; the caller
chooses the prefix (`clt` tests, `cdemo` demo, `cimg` image tests, `cbench` bench).

`Testbed` is a context manager: leaving it (also by an exception or Ctrl-C) stops every process
it started, deletes its namespaces, its `/etc/netns/<pod>` resolver and its temporary files.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import NetNS, netns

IFA_F_NODAD = 0x02  # linux/if_addr.h: the testbed's addresses need no duplicate detection
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Addresses:
    """Every address of the testbed (documentation ranges only: RFC 3849, RFC 5737)."""

    pod: str = "2001:db8:1::2"
    pod_gateway: str = "2001:db8:1::1"
    rtr_far: str = "2001:db8:2::1"
    plat: str = "2001:db8:2::2"
    dns64: str = "2001:db8:2::53"
    tayga_v4: str = "198.51.100.1"
    tayga_v6: str = "2001:db8:2::64"
    tayga_pool: str = "198.51.100.128/25"
    plat_v4: str = "192.0.2.1"
    r4_near: str = "192.0.2.2"
    r4_far: str = "192.0.2.9"
    srv_link: str = "192.0.2.10"
    server: str = "203.0.113.10"
    dns_server: str = "203.0.113.53"
    server_name: str = "server.clat.test"


def synthesize(prefix: str, ipv4: str) -> str:
    """The RFC 6052 §2.2 IPv6 form of `ipv4` under `prefix` (/32 ... /96; bits 64-71 zero)."""
    net = ipaddress.IPv6Network(prefix)
    v4 = ipaddress.IPv4Address(ipv4).packed
    base = bytearray(net.network_address.packed)
    offset = net.prefixlen // 8
    position = offset
    for byte in v4:
        if position == 8:  # the "u" octet stays zero
            position += 1
        base[position] = byte
        position += 1
    return str(ipaddress.IPv6Address(bytes(base)))


@dataclass
class Testbed:
    """Build with `with Testbed("clt") as tb:`; see the module docstring for the picture."""

    __test__ = False  # not a pytest test class, despite the name

    prefix: str
    nat64_prefix: str = "2001:db8:64::/96"
    far_mtu: int = 1400
    dns_ttl: int = 3
    addr: Addresses = field(default_factory=Addresses)
    verbose: bool = False
    # More IPv6-only pods beside `pod`, each on a veth of its own from rtr with its own /64
    # (2001:db8:1N::/64 for the N-th, from 1): `<prefix>-pod1`, `-pod2`, ... (node mode's tests)
    extra_pods: int = 0

    def __post_init__(self) -> None:
        self.pod = f"{self.prefix}-pod"
        self.rtr = f"{self.prefix}-rtr"
        self.plat = f"{self.prefix}-plat"
        self.r4 = f"{self.prefix}-r4"
        self.srv = f"{self.prefix}-srv"
        self.extra = [f"{self.prefix}-pod{n}" for n in range(1, self.extra_pods + 1)]
        self.namespaces = (self.pod, *self.extra, self.rtr, self.plat, self.r4, self.srv)
        self._created: list[str] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._tmp: Path | None = None
        self._netns_etc = Path("/etc/netns") / self.pod

    # ---- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> None:
        """Build everything and wait until the NAT64, the DNS64 and the servers answer."""
        if os.geteuid() != 0:
            raise PermissionError("the netns testbed needs root")
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-testbed-"))
        existing = set(netns.listnetns())
        for name in self.namespaces:
            if name in existing:  # a crashed earlier run of the same prefix: ours by name
                netns.remove(name)
            netns.create(name)
            self._created.append(name)
        self._links()
        self._resolver()
        self._start_tayga()
        self._start_unbound_dns64()
        self._start_servers()
        self._wait_ready()

    def down(self) -> None:
        """Stop what was started, delete what was created. Safe to call more than once."""
        for name in list(self._procs):
            self._stop(name)
        for name in reversed(self._created):
            with suppress(OSError):
                netns.remove(name)
        self._created.clear()
        if self._netns_etc.exists():
            shutil.rmtree(self._netns_etc, ignore_errors=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ---- running things in the namespaces ---------------------------------------------------

    def run(
        self, ns: str, argv: Sequence[str], timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `ns` (with the namespace's resolv.conf)."""
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a command inside `ns`; the caller owns the process (`ip netns exec` execs it)."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)

    @contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        """Switch this thread into `ns`: sockets made here stay in `ns` afterwards."""
        netns.pushns(ns)
        try:
            yield
        finally:
            netns.popns()

    def sysctl(self, ns: str, key: str, value: str | None = None) -> str:
        """Read (and with `value`, first write) `key` (dotted) inside `ns`."""
        path = Path("/proc/sys") / key.replace(".", "/")
        with self.inside(ns):
            if value is not None:
                path.write_text(value)
            return path.read_text().strip()

    def synthesized(self, ipv4: str) -> str:
        """`ipv4` as the pod reaches it through the NAT64 (RFC 6052 form under the prefix)."""
        return synthesize(self.nat64_prefix, ipv4)

    # ---- moving the PLAT to another prefix --------------------------------------------------

    def set_nat64_prefix(self, prefix: str) -> None:
        """Restart tayga and unbound on `prefix` (for the prefix-length and prefix-change tests)."""
        old = self.nat64_prefix
        self._stop("tayga")
        self._stop("dns64")
        with NetNS(self.plat) as plat:
            tun = plat.link_lookup(ifname="nat64")[0]
            old_net = ipaddress.IPv6Network(old)
            plat.route("del", dst=str(old_net.network_address), dst_len=old_net.prefixlen, oif=tun)
        self.nat64_prefix = prefix
        self._start_tayga(make_tun=False)
        self._start_unbound_dns64()
        self._wait_ready()

    # ---- building ---------------------------------------------------------------------------

    def _links(self) -> None:
        a = self.addr
        self._veth(self.pod, "eth0", self.rtr, "to-pod", 1500)
        self._veth(self.rtr, "to-plat", self.plat, "to-rtr", self.far_mtu)
        self._veth(self.plat, "to-r4", self.r4, "to-plat", 1500)
        self._veth(self.r4, "to-srv", self.srv, "eth0", 1500)

        with NetNS(self.pod) as ns:
            eth0 = self._index(ns, "eth0")
            self._addr6(ns, eth0, a.pod, 64)
            ns.route("add", dst="::", dst_len=0, gateway=a.pod_gateway, family=10)
        for n, pod in enumerate(self.extra, start=1):
            self._veth(pod, "eth0", self.rtr, f"to-pod{n}", 1500)
            with NetNS(pod) as ns:
                self._addr6(ns, self._index(ns, "eth0"), self.extra_pod_address(n), 64)
                gateway = self.extra_pod_address(n, host=1)
                ns.route("add", dst="::", dst_len=0, gateway=gateway, family=10)
            with NetNS(self.rtr) as ns:
                self._addr6(ns, self._index(ns, f"to-pod{n}"), gateway, 64)
        with NetNS(self.rtr) as ns:
            self._addr6(ns, self._index(ns, "to-pod"), a.pod_gateway, 64)
            self._addr6(ns, self._index(ns, "to-plat"), a.rtr_far, 64)
            ns.route("add", dst="::", dst_len=0, gateway=a.plat, family=10)
        self.sysctl(self.rtr, "net.ipv6.conf.all.forwarding", "1")
        with NetNS(self.plat) as ns:
            to_rtr = self._index(ns, "to-rtr")
            self._addr6(ns, to_rtr, a.plat, 64)
            self._addr6(ns, to_rtr, a.dns64, 64)
            ns.route("add", dst="::", dst_len=0, gateway=a.rtr_far, family=10)
            ns.addr("add", index=self._index(ns, "to-r4"), address=a.plat_v4, prefixlen=29)
            ns.route("add", dst="0.0.0.0", dst_len=0, gateway=a.r4_near)
        self.sysctl(self.plat, "net.ipv6.conf.all.forwarding", "1")
        self.sysctl(self.plat, "net.ipv4.ip_forward", "1")
        with NetNS(self.r4) as ns:
            ns.addr("add", index=self._index(ns, "to-plat"), address=a.r4_near, prefixlen=29)
            ns.addr("add", index=self._index(ns, "to-srv"), address=a.r4_far, prefixlen=29)
            ns.route("add", dst="198.51.100.0", dst_len=24, gateway=a.plat_v4)
            ns.route("add", dst="203.0.113.0", dst_len=24, gateway=a.srv_link)
        self.sysctl(self.r4, "net.ipv4.ip_forward", "1")
        with NetNS(self.srv) as ns:
            eth0 = self._index(ns, "eth0")
            ns.addr("add", index=eth0, address=a.srv_link, prefixlen=29)
            lo = self._index(ns, "lo")
            ns.addr("add", index=lo, address=a.server, prefixlen=32)
            ns.addr("add", index=lo, address=a.dns_server, prefixlen=32)
            ns.route("add", dst="0.0.0.0", dst_len=0, gateway=a.r4_far)
        # The server namespace is IPv4-only, as the far side of a NAT64 is.
        self.sysctl(self.srv, "net.ipv6.conf.all.disable_ipv6", "1")

    @staticmethod
    def extra_pod_address(n: int, host: int = 2) -> str:
        """The address of the n-th extra pod (host 2) or of its gateway on rtr (host 1)."""
        return f"2001:db8:{0x10 + n:x}::{host}"

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int) -> None:
        with NetNS(ns_a) as a:
            a.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})
            a.link("set", index=self._index(a, if_a), mtu=mtu, state="up")
            a.link("set", index=self._index(a, "lo"), state="up")
        with NetNS(ns_b) as b:
            b.link("set", index=self._index(b, if_b), mtu=mtu, state="up")
            b.link("set", index=self._index(b, "lo"), state="up")

    @staticmethod
    def _index(ns: NetNS, ifname: str) -> int:
        return int(ns.link_lookup(ifname=ifname)[0])

    @staticmethod
    def _addr6(ns: NetNS, index: int, address: str, prefixlen: int) -> None:
        ns.addr("add", index=index, address=address, prefixlen=prefixlen, flags=IFA_F_NODAD)

    def _resolver(self) -> None:
        # `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
        self._netns_etc.mkdir(parents=True, exist_ok=True)
        (self._netns_etc / "resolv.conf").write_text(f"nameserver {self.addr.dns64}\n")

    def _start_tayga(self, make_tun: bool = True) -> None:
        assert self._tmp is not None
        a = self.addr
        data_dir = self._tmp / "tayga"
        data_dir.mkdir(exist_ok=True)
        conf = self._tmp / "tayga.conf"
        conf.write_text(
            "tun-device nat64\n"
            f"ipv4-addr {a.tayga_v4}\n"
            f"ipv6-addr {a.tayga_v6}\n"
            f"prefix {self.nat64_prefix}\n"
            f"dynamic-pool {a.tayga_pool}\n"
            f"data-dir {data_dir}\n"
        )
        if make_tun:
            self.run(self.plat, ["tayga", "--mktun", "-c", str(conf)], check=True)
        with NetNS(self.plat) as ns:
            tun = self._index(ns, "nat64")
            ns.link("set", index=tun, state="up")
            net = ipaddress.IPv6Network(self.nat64_prefix)
            ns.route("add", dst=str(net.network_address), dst_len=net.prefixlen, oif=tun)
            if make_tun:
                ns.route("add", dst="198.51.100.0", dst_len=24, oif=tun)
        self._start("tayga", self.plat, ["tayga", "--nodetach", "-c", str(conf)])

    def _start_unbound_dns64(self) -> None:
        assert self._tmp is not None
        a = self.addr
        zones = {
            "ipv4only.arpa": ["@ IN A 192.0.0.170", "@ IN A 192.0.0.171"],
            "clat.test": [f"server IN A {a.server}"],
        }
        auth = ""
        for zone, records in zones.items():
            path = self._tmp / f"{zone}.zone"
            path.write_text(
                f"$ORIGIN {zone}.\n$TTL {self.dns_ttl}\n"
                f"@ IN SOA localhost. nobody.invalid. 1 3600 600 86400 {self.dns_ttl}\n"
                "@ IN NS localhost.\n" + "\n".join(records) + "\n"
            )
            # unbound's dns64 module synthesizes only from answers that come "from upstream":
            # an auth-zone for upstream, not local-data (TESTBED-NOTES.md).
            auth += (
                f'auth-zone:\n  name: "{zone}"\n  zonefile: "{path}"\n'
                "  for-upstream: yes\n  for-downstream: no\n"
            )
        conf = self._tmp / "dns64.conf"
        conf.write_text(
            "server:\n"
            f"  interface: {a.dns64}\n"
            "  do-daemonize: no\n"
            '  chroot: ""\n'
            '  username: ""\n'
            f'  directory: "{self._tmp}"\n'
            '  pidfile: ""\n'
            "  use-syslog: no\n"
            "  access-control: ::/0 allow\n"
            '  module-config: "dns64 iterator"\n'
            f"  dns64-prefix: {self.nat64_prefix}\n"
            '  domain-insecure: "ipv4only.arpa"\n'
            '  domain-insecure: "clat.test"\n'
            # unbound answers the special-use name "test." itself (RFC 6761) unless told not to
            '  local-zone: "test." nodefault\n'
            "remote-control:\n  control-enable: no\n" + auth
        )
        self._start("dns64", self.plat, ["unbound", "-d", "-p", "-c", str(conf)])

    def _start_servers(self) -> None:
        assert self._tmp is not None
        a = self.addr
        conf = self._tmp / "dns.conf"
        conf.write_text(
            "server:\n"
            f"  interface: {a.dns_server}\n"
            "  do-daemonize: no\n"
            '  chroot: ""\n'
            '  username: ""\n'
            f'  directory: "{self._tmp}"\n'
            '  pidfile: ""\n'
            "  use-syslog: no\n"
            "  do-ip6: no\n"
            "  access-control: 0.0.0.0/0 allow\n"
            '  local-zone: "clat.test." static\n'
            f'  local-data: "{a.server_name}. 60 IN A {a.server}"\n'
            "remote-control:\n  control-enable: no\n"
        )
        self._start("dns", self.srv, ["unbound", "-d", "-p", "-c", str(conf)])
        self._start(
            "servers",
            self.srv,
            [sys.executable, "-m", "testbed.servers", "--address", a.server],
            cwd=str(REPO_ROOT),
        )

    def _start(self, name: str, ns: str, argv: Sequence[str], cwd: str | None = None) -> None:
        assert self._tmp is not None
        log = open(self._tmp / f"{name}.log", "ab")  # noqa: SIM115 (owned by the process)
        self._procs[name] = self.popen(
            ns, argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        log.close()

    def _stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_of(self, name: str) -> str:
        """The output of a testbed process (tayga, dns64, dns, servers), for diagnostics."""
        assert self._tmp is not None
        path = self._tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_ready(self, timeout: float = 20) -> None:
        a = self.addr
        server6 = self.synthesized(a.server)
        checks: list[tuple[str, Callable[[], bool]]] = [
            # tayga and the IPv4 side, seen from the PLAT namespace through the NAT64
            ("nat64", lambda: self.run(self.plat, ["ping", "-c1", "-W1", server6]).returncode == 0),
            (
                "servers",
                lambda: (
                    self.run(self.plat, ["curl", "-sf", "-m2", f"http://[{server6}]/"]).returncode
                    == 0
                ),
            ),
            (
                "dns64",
                lambda: (
                    self.synthesized("192.0.0.170")
                    in self.run(
                        self.pod, ["dig", "+short", "+time=1", "+tries=1", "AAAA", "ipv4only.arpa"]
                    ).stdout
                ),
            ),
        ]
        deadline = time.monotonic() + timeout
        for what, check in checks:
            while not check():
                for name, proc in self._procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"testbed {name} exited: {self.log_of(name)[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"testbed: {what} did not come up within {timeout} s")
                time.sleep(0.2)
