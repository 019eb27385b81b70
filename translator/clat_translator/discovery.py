"""Finding the PLAT prefix: RFC 7050 (DNS64 answers for ipv4only.arpa) and RFC 8781 (PREF64 in RAs).

Pure parsing is separate from I/O so it is unit-tested without a network.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.rdatatype
import dns.resolver

from clat_translator.xlat import rfc6052

DEFAULT_TTL = 600


class DiscoveryError(RuntimeError):
    """No PLAT prefix was found; the message says what was tried."""


@dataclass(frozen=True)
class Discovered:
    """Prefixes found by one method, in the order found, with how long they are valid."""

    prefixes: tuple[ipaddress.IPv6Network, ...]
    ttl: int
    source: str  # "rfc7050 via <server>", "rfc8781 from <router>", "flag"


def read_resolv_conf(path: str = "/etc/resolv.conf") -> list[str]:
    servers = []
    try:
        with open(path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append(parts[1])
    except OSError:
        return []
    return servers


def discover_rfc7050(
    servers: Sequence[str] = (), timeout: float = 3.0, port: int = 53
) -> Discovered:
    """Ask each resolver in turn for AAAA ipv4only.arpa; the first with a valid answer wins."""
    targets = list(servers) or read_resolv_conf()
    if not targets:
        raise DiscoveryError("no DNS servers: none given and none in /etc/resolv.conf")
    problems = []
    for server in targets:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [server.split("%")[0]]
        resolver.port = port
        resolver.timeout = resolver.lifetime = timeout
        try:
            answer = resolver.resolve(rfc6052.WELL_KNOWN_NAME, dns.rdatatype.AAAA, search=False)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            problems.append(f"{server}: {type(exc).__name__} {exc}".strip())
            continue
        # RFC 7050 §3, and the same rules as --plat-prefix: a bad answer is refused here,
        # saying why, rather than failing later when the translator is built.
        found = rfc6052.search(rdata.address for rdata in answer)
        if not found.prefixes:
            problems.append(f"{server}: AAAA ipv4only.arpa refused: {'; '.join(found.refused)}")
            continue
        ttl = answer.rrset.ttl if answer.rrset is not None else DEFAULT_TTL
        return Discovered(found.prefixes, int(ttl), f"rfc7050 via {server}")
    raise DiscoveryError("no DNS64 prefix from " + "; ".join(problems))


# ---- RFC 8781 PREF64 in router advertisements -------------------------------------------------

ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
OPTION_PREF64 = 38
# RFC 8781 §4: Prefix Length Code -> prefix length
PLC_LENGTHS = {0: 96, 1: 64, 2: 56, 3: 48, 4: 40, 5: 32}


def parse_pref64(icmpv6: bytes) -> list[tuple[ipaddress.IPv6Network, int]]:
    """(prefix, lifetime seconds) of every valid PREF64 option in an ICMPv6 Router Advertisement.

    `icmpv6` starts at the ICMPv6 header (what a raw ICMPv6 socket receives).
    """
    if len(icmpv6) < 16 or icmpv6[0] != ND_ROUTER_ADVERT or icmpv6[1] != 0:
        return []
    found = []
    offset = 16  # RFC 4861 §4.2: options follow the 16-byte RA header
    while offset + 2 <= len(icmpv6):
        kind, units = icmpv6[offset], icmpv6[offset + 1]
        if units == 0:
            break  # RFC 4861 §4.6: a zero length is invalid; stop parsing
        end = offset + 8 * units
        if end > len(icmpv6):
            break
        if kind == OPTION_PREF64 and units == 2:
            (word,) = struct.unpack_from("!H", icmpv6, offset + 2)
            lifetime, plc = (word >> 3) * 8, word & 0x7  # RFC 8781 §4: scaled by 8 s
            if plc in PLC_LENGTHS:
                raw = icmpv6[offset + 4 : offset + 16] + bytes(4)
                length = PLC_LENGTHS[plc]
                try:
                    net = rfc6052.parse_prefix(ipaddress.IPv6Network((raw, length)))
                except ValueError:
                    # bits set past the length (RFC 8781 §4), or a prefix --plat-prefix would
                    # refuse (u-octet, not unicast): ignore the option
                    net = None
                if net is not None:
                    found.append((net, lifetime))
        offset = end
    return found


class Pref64Listener:
    """Collects PREF64 options from router advertisements the pod receives, in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[ipaddress.IPv6Network, float, str] | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self, solicit_on: str | None = None) -> None:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError:
            return  # no CAP_NET_RAW: RFC 8781 is simply not available
        # ICMP6_FILTER (RFC 3542 §3.2): block every type but Router Advertisement
        blocked = [0xFFFFFFFF] * 8
        blocked[ND_ROUTER_ADVERT >> 5] &= ~(1 << (ND_ROUTER_ADVERT & 31))
        sock.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("8I", *blocked))
        sock.settimeout(1.0)
        self._sock = sock
        if solicit_on:
            self._solicit(sock, solicit_on)
        self._thread = threading.Thread(target=self._run, name="pref64", daemon=True)
        self._thread.start()

    @staticmethod
    def _solicit(sock: socket.socket, ifname: str) -> None:
        # RFC 4861 §4.1: a Router Solicitation to all-routers, hop limit 255
        try:
            index = socket.if_nametoindex(ifname)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.sendto(struct.pack("!BBHI", ND_ROUTER_SOLICIT, 0, 0, 0), ("ff02::2", 0, 0, index))
        except OSError:
            pass

    def _run(self) -> None:
        while self._sock is not None:
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            for prefix, lifetime in parse_pref64(data):
                with self._lock:
                    if lifetime == 0:
                        self._latest = None  # RFC 8781 §4: lifetime 0 withdraws it
                    else:
                        self._latest = (prefix, time.monotonic() + lifetime, str(peer[0]))

    def current(self) -> Discovered | None:
        with self._lock:
            if self._latest is None:
                return None
            prefix, expires, router = self._latest
        remaining = int(expires - time.monotonic())
        if remaining <= 0:
            return None
        return Discovered((prefix,), remaining, f"rfc8781 from {router}")

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
