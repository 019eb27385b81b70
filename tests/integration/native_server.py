"""An IPv4 literal whose IPv6 form the server namespace serves natively over IPv6 (no NAT64 in
the path), so that the kernel hands the CLAT super-packets in both directions: the server's TCP
sends TSO over veth all the way to the pod's TUN. Added to the session's testbed for a module,
taken away afterwards (203.0.113.10 keeps going through tayga for the other tests).

TCP on port 8080: `get N\\n` answers N bytes of `pattern_bytes`; `put N\\n` + N bytes answers the
SHA-256 of the bytes. UDP on port 7007: every datagram is echoed.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from types import TracebackType

from pyroute2 import NetNS

from testbed import Testbed
from testbed.servers import pattern_bytes

NATIVE_SERVER4 = "203.0.113.99"
TCP_PORT, UDP_PORT = 8080, 7007
PLAT_R4 = ("2001:db8:3::1", "2001:db8:3::2")
R4_SRV = ("2001:db8:4::1", "2001:db8:4::2")
IFA_F_NODAD = 0x02
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: a receive buffer above rmem_max (root)


class NativeServer:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.address6 = tb.synthesized(NATIVE_SERVER4)
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()

    def __enter__(self) -> NativeServer:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        tb, v6 = self.tb, self.address6
        tb.sysctl(tb.srv, "net.ipv6.conf.all.disable_ipv6", "0")
        tb.sysctl(tb.srv, "net.ipv6.conf.default.disable_ipv6", "0")
        for name in ("lo", "eth0"):
            tb.sysctl(tb.srv, f"net.ipv6.conf.{name}.disable_ipv6", "0")
        tb.sysctl(tb.r4, "net.ipv6.conf.all.forwarding", "1")
        with NetNS(tb.plat) as ns:
            to_r4 = ns.link_lookup(ifname="to-r4")[0]
            ns.addr("add", index=to_r4, address=PLAT_R4[0], prefixlen=64, flags=IFA_F_NODAD)
            ns.route("add", dst=v6, dst_len=128, gateway=PLAT_R4[1], family=socket.AF_INET6)
        with NetNS(tb.r4) as ns:
            near, far = ns.link_lookup(ifname="to-plat")[0], ns.link_lookup(ifname="to-srv")[0]
            ns.addr("add", index=near, address=PLAT_R4[1], prefixlen=64, flags=IFA_F_NODAD)
            ns.addr("add", index=far, address=R4_SRV[0], prefixlen=64, flags=IFA_F_NODAD)
            ns.route("add", dst="::", dst_len=0, gateway=PLAT_R4[0], family=socket.AF_INET6)
            ns.route("add", dst=v6, dst_len=128, gateway=R4_SRV[1], family=socket.AF_INET6)
        with NetNS(tb.srv) as ns:
            eth0, lo = ns.link_lookup(ifname="eth0")[0], ns.link_lookup(ifname="lo")[0]
            ns.addr("add", index=eth0, address=R4_SRV[1], prefixlen=64, flags=IFA_F_NODAD)
            ns.addr("add", index=lo, address=v6, prefixlen=128, flags=IFA_F_NODAD)
            ns.route("add", dst="::", dst_len=0, gateway=R4_SRV[0], family=socket.AF_INET6)
        with tb.inside(tb.srv):
            tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((v6, TCP_PORT))
        tcp.listen(8)
        udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        udp.bind((v6, UDP_PORT))
        self._sockets = [tcp, udp]
        threading.Thread(target=self._accept, args=(tcp,), daemon=True).start()
        threading.Thread(target=self._echo, args=(udp,), daemon=True).start()
        # Resolve the neighbours of the new links now: the kernel keeps only a few packets
        # while it does, and a burst sent into an unresolved path would be mostly dropped.
        for _ in range(50):
            if tb.run(tb.pod, ["ping", "-6", "-c1", "-W1", v6]).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"no native IPv6 path from the pod to {v6}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb_: TracebackType | None,
    ) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        tb, v6 = self.tb, self.address6
        # undo what was done (all of it, or as far as _start got), whatever fails on the way
        with contextlib.suppress(Exception), NetNS(tb.plat) as ns:
            ns.route("del", dst=v6, dst_len=128, family=socket.AF_INET6)
        with contextlib.suppress(Exception), NetNS(tb.plat) as ns:
            to_r4 = ns.link_lookup(ifname="to-r4")[0]
            ns.addr("del", index=to_r4, address=PLAT_R4[0], prefixlen=64)
        with contextlib.suppress(Exception), NetNS(tb.r4) as ns:
            for name, address in (("to-plat", PLAT_R4[1]), ("to-srv", R4_SRV[0])):
                with contextlib.suppress(Exception):
                    index = ns.link_lookup(ifname=name)[0]
                    ns.addr("del", index=index, address=address, prefixlen=64)
        tb.sysctl(tb.r4, "net.ipv6.conf.all.forwarding", "0")
        # back to IPv4 only: the kernel drops every IPv6 address and route of the namespace
        tb.sysctl(tb.srv, "net.ipv6.conf.all.disable_ipv6", "1")
        tb.sysctl(tb.srv, "net.ipv6.conf.default.disable_ipv6", "1")

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            verb, size = reader.readline().split()
            if verb == b"get":
                conn.sendall(pattern_bytes(int(size)))
            elif verb == b"put":
                digest = hashlib.sha256()
                left = int(size)
                while left:
                    chunk = reader.read(min(left, 65536))
                    if not chunk:
                        break
                    digest.update(chunk)
                    left -= len(chunk)
                conn.sendall(digest.hexdigest().encode() + b"\n")

    def _echo(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
                if peer is None:
                    return  # shut down
                sock.sendto(data, peer)
            except OSError:
                return
