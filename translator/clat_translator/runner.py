"""`clat-translator run`: set up the pod namespace, translate until told to stop, clean up.

Threads: the main thread does setup, the packet loop and cleanup; the HTTP server, the PREF64
listener and the prefix re-check each have a daemon thread. Signals only set an event and wake
the loop through a pipe, so cleanup always runs on the main thread. With more than one worker
the packet loop runs in worker processes instead (workers.py), one per TUN queue, and the main
thread watches them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from clat_translator import discovery, logs, netconf, nftables
from clat_translator.datapath import Datapath
from clat_translator.discovery import Discovered, DiscoveryError, Pref64Listener
from clat_translator.health import HealthServer
from clat_translator.metrics import Stats, make_registry
from clat_translator.rtnl import NetlinkError
from clat_translator.tun import TunDevice, TunError, offload_names
from clat_translator.workers import WorkerError, WorkerPool, auto_workers
from clat_translator.xlat import DROP_REASONS, Translator, XlatConfig
from clat_translator.xlat.offload import OFFLOAD_DROP_REASONS

DEFAULT_CLAT_V4 = "192.0.0.1"  # RFC 7335
DEFAULT_CLAT_V6 = "fd64:c1a7:464::1"  # an internal ULA (RFC 4193), masqueraded to the pod address
LOCAL_IPV4 = "192.0.0.2"  # source of the ICMPv4 errors the translator itself sends (RFC 7335)
RFC7600_IPV4 = "192.0.0.8"  # source of translated ICMPv6 errors from untranslatable sources
MIN_RECHECK_SECONDS = 5.0
MAX_RECHECK_SECONDS = 86400.0
MAX_BACKOFF_SECONDS = 30.0
COUNTER_LOG_SECONDS = 60.0


@dataclass
class RunSettings:
    plat_prefix: str | None = None
    plat_prefix_hint: str | None = None  # used at once, then re-checked by discovery
    dns64_servers: list[str] = field(default_factory=list)
    uplink: str | None = None
    clat_v4: str = DEFAULT_CLAT_V4
    clat_v6: str | None = None  # None = DEFAULT_CLAT_V6 behind NAT66
    tun: str = "clat"
    mtu: int | None = None
    listen: str = "[::]:9180"
    force: bool = False
    offload: bool = True  # virtio-net headers, TSO/USO and checksum offload on the TUN
    workers: int | None = 1  # packet loop processes (TUN queues); None = one per usable CPU
    datapath: str = "auto"  # auto | kernel | userspace (--datapath); not acted on yet


class SetupError(RuntimeError):
    """Setup failed for a reason the operator of the pod must fix; the message says which."""


class Sidecar:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.log = logs.get()
        self.stop = threading.Event()
        self.stats = Stats(_drop_reasons())
        self.clat_v6 = settings.clat_v6 or DEFAULT_CLAT_V6
        self.nat66 = settings.clat_v6 is None
        self.tun: TunDevice | None = None
        self.pool: WorkerPool | None = None
        self.sysctls = netconf.SysctlChanges()
        self.table_installed = False
        self.prefix: Discovered | None = None
        self.pending: Discovered | None = None
        self.pending_lock = threading.Lock()
        self.pref64 = Pref64Listener()
        self.not_ready_reason = "starting"
        self.failed: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.ipv4_mtu = 0
        self.uplink: netconf.Uplink | None = None
        self.translator: Translator | None = None

    # ---- probes ---------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        return (False, self.failed) if self.failed else (True, "ok")

    def ready(self) -> tuple[bool, str]:
        if not self.stats.ready:
            return False, self.not_ready_reason
        if self.stats.standing_down:
            return True, "standing down"
        # checked on every probe: a route deleted behind our back makes the pod not ready
        try:
            with netconf.netlink() as ipr:
                in_place = netconf.tun_routes_present(ipr, self.settings.tun, self.clat_v6)
        except (OSError, NetlinkError) as exc:
            return False, f"cannot read routes: {exc}"
        if not in_place:
            return False, f"the routes through {self.settings.tun} are missing"
        return True, "translating"

    # ---- the whole life -------------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        server: HealthServer | None = None
        code = 0
        try:
            server = HealthServer(
                self.settings.listen, make_registry(self.stats), self.healthy, self.ready
            )
            server.start()
            self.log.info("starting listen=%s tun=%s", self.settings.listen, self.settings.tun)
            code = self._serve()
        except (
            SetupError,
            netconf.NetconfError,
            nftables.NftError,
            TunError,
            NetlinkError,
            OSError,
            ValueError,
            WorkerError,
        ) as exc:
            self.failed = str(exc)
            self.log.error("failed: %s", exc)
            code = 1
        finally:
            self._cleanup()
            if server is not None:
                server.stop()
            signal.set_wakeup_fd(-1)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            self.log.info("stopping on %s", signal.Signals(signum).name)
        self.stop.set()

    def _serve(self) -> int:
        self._remove_leftovers()
        self.uplink = self._wait_for_uplink()
        if self.uplink is None:
            return 0
        with netconf.netlink() as ipr:
            native = netconf.native_ipv4_route(ipr, self.settings.tun)
        if native and not self.settings.force:
            return self._stand_down(native)
        if native:
            self.log.info("native IPv4 present (%s); translating anyway (--force)", native)
        if not self._wait_for_prefix():
            return 0
        self._setup(split_default=native is not None)
        if self.settings.plat_prefix is None:
            threading.Thread(target=self._recheck_prefix, name="recheck", daemon=True).start()
        self._loop()
        return 0

    def _stand_down(self, native: str) -> int:
        self.stats.standing_down = True
        self.stats.ready = True
        self.log.info(
            "standing down: the pod already has native IPv4 (%s); translating nothing "
            "(--force to translate anyway)",
            native,
        )
        self.stop.wait()
        return 0

    # ---- leftovers and cleanup --------------------------------------------------------------

    def _remove_leftovers(self) -> None:
        state = nftables.read_state()
        if state is not None:
            leftover = netconf.SysctlChanges.parse(state)
            restored = ", ".join(f"{k}={v}" for k, v in leftover.originals.items()) or "none"
            failed = leftover.restore()
            nftables.remove()
            self.log.info(
                "removed leftovers of an earlier run: nftables table %s %s; restored sysctls %s%s",
                nftables.TABLE_FAMILY,
                nftables.TABLE_NAME,
                restored,
                f" (failed: {', '.join(failed)})" if failed else "",
            )
        with netconf.netlink() as ipr:
            index = netconf.link_index(ipr, self.settings.tun)
            if index is not None:
                kind = netconf.link_kind(ipr, index)
                if kind != "tun":
                    raise SetupError(
                        f"a device named {self.settings.tun!r} exists and is not a TUN "
                        f"(kind {kind}): choose another name with --tun"
                    )
                netconf.delete_link(ipr, self.settings.tun)
                self.log.info("removed leftover TUN device %s", self.settings.tun)

    def _cleanup(self) -> None:
        self.stats.ready = False
        self.pref64.stop()
        if self.pool is not None:
            self.pool.stop()
            self.log.info("stopped %d workers", self.pool.count)
            self.pool.counters.sum_into(self.stats)
            self.stats.refresh = None
            self.pool = None
        if self.tun is not None:
            # the kernel deletes a non-persistent TUN, its address and its routes, on close
            self.tun.close()
            self.tun = None
            self.log.info("removed TUN device %s with its address and routes", self.settings.tun)
        if self.table_installed:
            try:
                nftables.remove()
                self.log.info(
                    "removed nftables table %s %s", nftables.TABLE_FAMILY, nftables.TABLE_NAME
                )
            except nftables.NftError as exc:
                self.log.error("cleanup: %s", exc)
            self.table_installed = False
        if self.sysctls.originals:
            restored = ", ".join(f"{k}={v}" for k, v in self.sysctls.originals.items())
            failed = self.sysctls.restore()
            self.log.info(
                "restored sysctls %s%s",
                restored,
                f" (failed: {', '.join(failed)})" if failed else "",
            )
        self.log.info("stopped")

    # ---- waiting for the uplink and the prefix ----------------------------------------------

    def _wait_for_uplink(self) -> netconf.Uplink | None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                with netconf.netlink() as ipr:
                    uplink = netconf.find_uplink(ipr, self.settings.uplink)
            except netconf.NetconfError as exc:
                if self.settings.uplink is not None and "does not exist" not in str(exc):
                    raise
                self.not_ready_reason = str(exc)
                self.log.warning("not ready: %s; retrying in %.0f s", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            self.log.info(
                "uplink %s mtu=%d addresses=%s",
                uplink.name,
                uplink.mtu,
                ",".join(uplink.addresses) or "none",
            )
            return uplink
        return None

    def _discover_once(self, first: bool = False) -> Discovered:
        """RFC 8781 PREF64 if a router advertised one, else RFC 7050 through the resolvers."""
        if first:
            self.stop.wait(1.0)  # give a router a moment to answer our solicitation
        found = self.pref64.current()
        if found is not None:
            self.stats.discovery["rfc8781", "found"] += 1
            return found
        try:
            found = discovery.discover_rfc7050(self.settings.dns64_servers)
        except DiscoveryError:
            self.stats.discovery["rfc7050", "failed"] += 1
            raise
        self.stats.discovery["rfc7050", "found"] += 1
        return found

    def _wait_for_prefix(self) -> bool:
        if self.settings.plat_prefix is not None:
            prefix = ipaddress.IPv6Network(self.settings.plat_prefix)
            self._use_prefix(Discovered((prefix,), 0, "flag"))
            return True
        assert self.uplink is not None
        self.pref64.start(solicit_on=self.uplink.name)
        if self.settings.plat_prefix_hint is not None:
            # Ready at once; _recheck_prefix confirms it (or moves to what discovery finds)
            # after MIN_RECHECK_SECONDS, as the hint carries no lifetime of its own.
            prefix = ipaddress.IPv6Network(self.settings.plat_prefix_hint)
            self._use_prefix(Discovered((prefix,), 0, "hint"))
            return True
        delay = 1.0
        first = True
        self.not_ready_reason = "looking for the PLAT prefix"
        while not self.stop.is_set():
            try:
                found = self._discover_once(first)
            except DiscoveryError as exc:
                self.not_ready_reason = f"no PLAT prefix yet: {exc}"
                self.log.warning("not ready: %s; retrying in %.0f s", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                first = False
                continue
            self._use_prefix(found)
            return True
        return False

    def _use_prefix(self, found: Discovered) -> None:
        prefix = found.prefixes[0]
        if len(found.prefixes) > 1:
            others = ", ".join(str(p) for p in found.prefixes[1:])
            self.log.info("several PLAT prefixes found; using the first, ignoring %s", others)
        ttl = f" ttl={found.ttl}s" if found.ttl else ""
        self.log.info("PLAT prefix %s from %s%s", prefix, found.source, ttl)
        self.prefix = found
        self.stats.prefix = str(prefix)
        self.stats.prefix_source = found.source.split(" ")[0]

    def _recheck_prefix(self) -> None:
        """RFC 7050 §3.3 / RFC 8781 §5: look again when the answer's lifetime runs out."""
        assert self.prefix is not None
        wait = float(self.prefix.ttl)
        delay = 1.0
        while not self.stop.wait(min(max(wait, MIN_RECHECK_SECONDS), MAX_RECHECK_SECONDS)):
            try:
                found = self._discover_once()
            except DiscoveryError as exc:
                self.log.warning("PLAT prefix re-check failed (keeping the current one): %s", exc)
                wait = delay
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            delay = 1.0
            wait = float(found.ttl)
            current = self.prefix
            if current is not None and found.prefixes[0] != current.prefixes[0]:
                with self.pending_lock:
                    self.pending = found
                os.write(self._wake_w, b"p")
            elif current is not None and current.source == "hint":
                self._use_prefix(found)  # confirmed: say by what, and use its lifetime

    # ---- setup -----------------------------------------------------------------------------

    def _setup(self, split_default: bool) -> None:
        settings, uplink = self.settings, self.uplink
        assert uplink is not None
        self.ipv4_mtu = settings.mtu or uplink.mtu - netconf.IPV6_OVERHEAD
        if self.ipv4_mtu + netconf.IPV6_OVERHEAD > uplink.mtu:
            self.log.warning(
                "--mtu %d + 20 exceeds the uplink MTU %d: the kernel will answer oversize "
                "translated packets with Packet Too Big",
                self.ipv4_mtu,
                uplink.mtu,
            )
        self.not_ready_reason = "setting up the TUN device"
        # IPv6 forwarding: translated packets come in on the TUN and leave on the uplink.
        self.sysctls.plan("net/ipv6/conf/all/forwarding", "1")
        # With forwarding on, accept_ra=1 stops honouring router advertisements: keep an
        # RA-learned default route alive with 2 (accept even when forwarding).
        accept_ra = f"net/ipv6/conf/{uplink.name}/accept_ra"
        if netconf.read_sysctl(accept_ra) == "1":
            # Pods rarely learn routes from RAs (the CNI sets them), so this one is optional.
            self.sysctls.plan(accept_ra, "2", if_read_only="routes learned from RAs may expire")
        # rp_filter needs no change: every IPv4 source the TUN delivers routes back via the TUN.
        # Record the originals in the namespace before touching anything (SIGKILL recovery).
        nftables.install(self.clat_v6 if self.nat66 else None, settings.tun, self._state_text())
        self.table_installed = True
        for warning in self.sysctls.apply():
            self.log.warning("%s", warning)
        workers = settings.workers or auto_workers()
        self.tun = TunDevice.open(settings.tun, vnet_hdr=settings.offload, multi_queue=workers > 1)
        offloads = self.tun.set_offload() if settings.offload else 0
        # The CLAT-v6 route needs IPv6 on the TUN (a per-device sysctl, gone with the device).
        disable_ipv6 = f"net/ipv6/conf/{self.tun.name}/disable_ipv6"
        if netconf.read_sysctl(disable_ipv6) != "0":
            netconf.write_sysctl(disable_ipv6, "0")
        device_mtu = min(max(uplink.mtu, self.ipv4_mtu + netconf.IPV6_OVERHEAD), 65535)
        with netconf.netlink() as ipr:
            netconf.configure_tun(
                ipr,
                self.tun.name,
                settings.clat_v4,
                self.clat_v6,
                self.ipv4_mtu,
                device_mtu,
                split_default,
            )
        self.translator = self._make_translator()
        if workers > 1:
            self._start_workers(workers)
        self.stats.offloads = offload_names(offloads) if settings.offload else "off"
        self.stats.workers = workers
        self.log.info(
            "data path: offload=%s workers=%d",
            self.stats.offloads,
            workers,
        )
        self.log.info(
            "TUN %s up: %s/32 (RFC 7335), IPv4 default route mtu=%d advmss=%d; CLAT IPv6 %s%s",
            self.tun.name,
            settings.clat_v4,
            self.ipv4_mtu,
            self.ipv4_mtu - netconf.TCP_IPV4_HEADERS,
            self.clat_v6,
            f" masqueraded to {uplink.name}'s address" if self.nat66 else " (routed, no NAT66)",
        )
        changed = self.sysctls.serialize()
        self.log.info("sysctls changed: %s", changed or "none")
        self.stats.ready = True
        self.log.info("ready: translating via PLAT prefix %s", self.stats.prefix)

    def _start_workers(self, count: int) -> None:
        assert self.tun is not None and self.translator is not None
        pool = WorkerPool(
            self.tun.name,
            self.tun.vnet_hdr,
            count,
            self.translator,
            tuple(self.stats.drops),
        )
        self.pool = pool
        pool.start()
        # The main process keeps its descriptor (the device lives while any is open) but takes
        # no packets: the kernel spreads them over the workers' queues only.
        self.tun.detach_queue()
        self.stats.refresh = lambda: pool.counters.sum_into(self.stats)

    def _state_text(self) -> str:
        return self.sysctls.serialize()

    def _make_translator(self) -> Translator:
        assert self.prefix is not None and self.uplink is not None
        config = XlatConfig(
            pool6=str(self.prefix.prefixes[0]),
            eamt=[(f"{self.settings.clat_v4}/32", f"{self.clat_v6}/128")],
            local_ipv4=LOCAL_IPV4,
            rfc6791v4=RFC7600_IPV4,
            amend_udp_checksum_zero=True,
            ipv6_mtu=self.uplink.mtu,
            # the IPv4 side is the pod's own stack: no link to fit, only the route's MTU
            ipv4_mtu=65535,
            clat_mode=True,
        )
        return Translator(config)

    def _apply_pending_prefix(self) -> None:
        with self.pending_lock:
            found, self.pending = self.pending, None
        if found is None or self.prefix is None:
            return
        old = self.prefix.prefixes[0]
        assert self.translator is not None
        try:
            self.translator.update_pool6(str(found.prefixes[0]))  # live: the TUN stays
        except ValueError as exc:
            self.log.error("PLAT prefix %s refused, keeping %s: %s", found.prefixes[0], old, exc)
            return
        if self.pool is not None:
            self.pool.update_pool6(str(found.prefixes[0]))
        self.stats.prefix_changes += 1
        self.log.info(
            "PLAT prefix changed %s -> %s (from %s)", old, found.prefixes[0], found.source
        )
        self._use_prefix(found)

    # ---- the packet loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        tun = self.tun
        assert tun is not None and self.translator is not None
        stats = self.stats
        datapath = None if self.pool is not None else Datapath(tun, self.translator, stats)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if datapath is not None:
            poller.register(tun.fileno(), select.POLLIN)
        tun_fd = tun.fileno()
        next_report = time.monotonic() + COUNTER_LOG_SECONDS
        reported = stats.snapshot()
        while not self.stop.is_set():
            for fd, _ in poller.poll(1000):
                if fd == tun_fd and datapath is not None:
                    datapath.pump()
                elif fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    if self.pending is not None:
                        self._apply_pending_prefix()
            if self.pool is not None:
                self.pool.check()
            now = time.monotonic()
            if now >= next_report:
                next_report = now + COUNTER_LOG_SECONDS
                if stats.refresh is not None:
                    stats.refresh()
                if stats.snapshot() != reported:
                    reported = stats.snapshot()
                    self.log.info("counters %s", stats.summary())


def _drop_reasons() -> tuple[str, ...]:
    return tuple(sorted(DROP_REASONS | OFFLOAD_DROP_REASONS))
