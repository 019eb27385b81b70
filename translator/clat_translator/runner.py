"""`clat-translator run`: set up the pod namespace, translate until told to stop, clean up.

The sidecar is a short driver over parts with their own state: the PLAT prefix's life
(prefix_lifecycle.py), what it makes in the namespace and how to take it back (plumbing.py),
the data paths (datapath.py) and the one poll loop they are served by (packet_loop.py).

Threads: the main thread does setup, the loop and cleanup; the HTTP server, the PREF64 listener
and the prefix re-check each have a daemon thread. Signals only set an event and wake the loop
through a pipe, so cleanup always runs on the main thread. With more than one worker the
packets are translated in worker processes instead (workers.py), one per TUN queue, and the
main thread's loop watches them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

from clat_translator import logs, netconf, nftables
from clat_translator.bpf.loader import KernelPathUnavailable
from clat_translator.datapath import Datapath, UserspaceDatapath
from clat_translator.health import HealthServer
from clat_translator.kernel_datapath import KernelPath
from clat_translator.metrics import Stats, make_registry
from clat_translator.packet_loop import PacketLoop
from clat_translator.plumbing import PodPlumbing, SetupError, refuse_foreign_device
from clat_translator.prefix_lifecycle import MAX_BACKOFF_SECONDS, PlatPrefixWatcher
from clat_translator.rtnl import NetlinkError
from clat_translator.tun import TunDevice, TunError, offload_names
from clat_translator.workers import WorkerError, auto_workers
from clat_translator.xlat import Translator, XlatConfig

DEFAULT_CLAT_V4 = "192.0.0.1"  # RFC 7335
DEFAULT_CLAT_V6 = "fd64:c1a7:464::1"  # an internal ULA (RFC 4193), masqueraded to the pod address
LOCAL_IPV4 = "192.0.0.2"  # source of the ICMPv4 errors the translator itself sends (RFC 7335)
RFC7600_IPV4 = "192.0.0.8"  # source of translated ICMPv6 errors from untranslatable sources
COUNTER_LOG_SECONDS = 60.0
# What ends a run with code 1 and its message in the log (never a traceback).
SETUP_ERRORS = (
    SetupError,
    netconf.NetconfError,
    nftables.NftError,
    TunError,
    NetlinkError,
    OSError,
    ValueError,
    WorkerError,
)


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
    datapath: str = "auto"  # auto | kernel | userspace (the kernel path: bpf/)
    nft_table: str = "clat_translator"  # our own nftables table (ip6 family), --nft-table


class Sidecar:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.log = logs.get()
        self.stop = threading.Event()
        self.stats = Stats()
        self.clat_v6 = settings.clat_v6 or DEFAULT_CLAT_V6
        self.nat66 = settings.clat_v6 is None
        self.prefix = PlatPrefixWatcher(
            settings.plat_prefix,
            settings.plat_prefix_hint,
            settings.dns64_servers,
            self.stats,
            self.stop,
        )
        self.plumbing = PodPlumbing(self.log, settings.nft_table)
        self.datapaths: list[Datapath] = []
        self.not_ready_reason = "starting"
        self.failed: str | None = None
        self.uplink: netconf.Uplink | None = None
        self._next_report = 0.0  # when the counters are logged next, if they changed
        self._reported: tuple[int, ...] = ()
        self._wake_r, self._wake_w = os.pipe()  # signals wake the loop
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

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
        server: HealthServer | None = None
        with self._signals():
            try:
                server = HealthServer(
                    self.settings.listen, make_registry(self.stats), self.healthy, self.ready
                )
                server.start()
                self.log.info("starting listen=%s tun=%s", self.settings.listen, self.settings.tun)
                return self._serve()
            except SETUP_ERRORS as exc:
                self.failed = str(exc)
                self.log.error("failed: %s", exc)
                return 1
            finally:
                self._teardown()
                if server is not None:
                    server.stop()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(-1)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

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
        if not self.prefix.wait(self.uplink.name, self._not_ready):
            return 0
        self._setup(split_default=native is not None)
        self.prefix.start_rechecks()
        self._loop()
        return 0

    def _not_ready(self, reason: str) -> None:
        self.not_ready_reason = reason

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

    # ---- leftovers and cleanup: one undo list each (plumbing.py) -----------------------------

    def _remove_leftovers(self) -> None:
        leftovers = PodPlumbing.leftovers(self.settings.tun, self.log, self.settings.nft_table)
        if leftovers.made:
            found = ", ".join(step.what for step in leftovers.made)
            leftovers.teardown()
            self.log.info("removed leftovers of an earlier run: %s", found)
        refuse_foreign_device(self.settings.tun)

    def _teardown(self) -> None:
        self.stats.ready = False
        self.prefix.close()
        for datapath in reversed(self.datapaths):
            datapath.stop()
        self.datapaths = []
        self.stats.refresh = None
        self.plumbing.teardown()
        self.log.info("stopped")

    # ---- waiting for the uplink -------------------------------------------------------------

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

    # ---- setup -----------------------------------------------------------------------------

    def _setup(self, split_default: bool) -> None:
        settings, uplink, plumbing = self.settings, self.uplink, self.plumbing
        assert uplink is not None
        ipv4_mtu = settings.mtu or uplink.mtu - netconf.IPV6_OVERHEAD
        if ipv4_mtu + netconf.IPV6_OVERHEAD > uplink.mtu:
            self.log.warning(
                "--mtu %d + 20 exceeds the uplink MTU %d: the kernel will answer oversize "
                "translated packets with Packet Too Big",
                ipv4_mtu,
                uplink.mtu,
            )
        self.not_ready_reason = "setting up the TUN device"
        sysctls = netconf.SysctlChanges()
        # IPv6 forwarding on, accept_ra kept meaning what it did (a host may depend on RAs)
        with netconf.netlink() as ipr:
            netconf.plan_ipv6_forwarding(ipr, sysctls, uplink.name)
        # rp_filter needs no change: every IPv4 source the TUN delivers routes back via the TUN.
        # Record the originals in the namespace before touching anything (SIGKILL recovery).
        plumbing.install_table(self.clat_v6 if self.nat66 else None, settings.tun, sysctls)
        for warning in plumbing.apply_sysctls(sysctls):
            self.log.warning("%s", warning)
        workers = settings.workers or auto_workers()
        tun = plumbing.open_tun(settings.tun, vnet_hdr=settings.offload, multi_queue=workers > 1)
        offloads = tun.set_offload() if settings.offload else 0
        # The CLAT-v6 route needs IPv6 on the TUN (a per-device sysctl, gone with the device).
        disable_ipv6 = f"net/ipv6/conf/{tun.name}/disable_ipv6"
        if netconf.read_sysctl(disable_ipv6) != "0":
            netconf.write_sysctl(disable_ipv6, "0")
        device_mtu = min(max(uplink.mtu, ipv4_mtu + netconf.IPV6_OVERHEAD), 65535)
        plumbing.configure_tun(
            tun, settings.clat_v4, self.clat_v6, ipv4_mtu, device_mtu, split_default
        )
        self.stats.offloads = offload_names(offloads) if settings.offload else "off"
        self.stats.workers = workers
        self._start_datapaths(tun, self._make_translator(), workers)
        if self.stats.datapath == "kernel":
            how = " (tc-eBPF on the TUN, userspace for the rest)"
        elif self.stats.kernel_unavailable:
            how = f" (the kernel path cannot run here: {self.stats.kernel_unavailable})"
        else:
            how = ""
        self.log.info(
            "data path: %s%s offload=%s workers=%d",
            self.stats.datapath,
            how,
            self.stats.offloads,
            workers,
        )
        self.log.info(
            "TUN %s up: %s/32 (RFC 7335), IPv4 default route mtu=%d advmss=%d; CLAT IPv6 %s%s",
            tun.name,
            settings.clat_v4,
            ipv4_mtu,
            ipv4_mtu - netconf.TCP_IPV4_HEADERS,
            self.clat_v6,
            f" masqueraded to {uplink.name}'s address" if self.nat66 else " (routed, no NAT66)",
        )
        self.log.info("sysctls changed: %s", sysctls.describe_changes())
        self.stats.ready = True
        self.log.info("ready: translating via PLAT prefix %s", self.stats.prefix)

    def _start_datapaths(self, tun: TunDevice, translator: Translator, workers: int) -> None:
        """The data paths, on the configured TUN, before ready. The userspace one always runs:
        it takes every packet the TUN delivers. The kernel one (--datapath kernel, or auto where
        it loads) is attached after it and translates the common packets before they reach the
        TUN's descriptor; the last one attached names the data path."""
        userspace = UserspaceDatapath(tun, translator, self.stats, workers)
        self.datapaths.append(userspace)  # before start: teardown stops what a failed start began
        userspace.start()
        requested = self.settings.datapath
        self.stats.datapath_requested = requested
        if requested != "userspace":
            unavailable = self._start_kernel_path(tun.name, translator.config)
            if unavailable is not None and requested == "kernel":
                raise SetupError(f"--datapath kernel: {unavailable}")
            self.stats.kernel_unavailable = unavailable or ""
        self.stats.datapath = self.datapaths[-1].name
        stats, datapaths = self.stats, self.datapaths

        def collect() -> None:
            for datapath in datapaths:
                datapath.collect(stats)

        self.stats.refresh = collect

    def _start_kernel_path(self, tun_name: str, config: XlatConfig) -> str | None:
        """Attach the kernel path; None, or the one-line reason it cannot run here."""
        try:
            kernel = KernelPath(tun_name, config)
        except KernelPathUnavailable as exc:
            return exc.reason
        self.datapaths.append(kernel)  # before start, as above
        try:
            kernel.start()
        except (KernelPathUnavailable, OSError) as exc:
            self.datapaths.remove(kernel)
            kernel.stop()
            if isinstance(exc, KernelPathUnavailable):
                if exc.log:
                    self.log.debug("libbpf said:\n%s", exc.log)
                return exc.reason
            return f"attaching the kernel path: {exc}"
        return None

    def _make_translator(self) -> Translator:
        assert self.uplink is not None
        config = XlatConfig(
            pool6=str(self.prefix.prefix),
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

    def _switch_prefix(self, prefix: str) -> None:
        """A new PLAT prefix for every data path (the userspace one, first, validates it)."""
        for datapath in self.datapaths:
            datapath.update_pool6(prefix)

    # ---- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        loop = PacketLoop()
        loop.watch(self._wake_r, self._drain_wake)  # a signal: self.stop says it
        loop.watch(
            self.prefix.fileno(), lambda _events: self.prefix.apply_pending(self._switch_prefix)
        )
        for datapath in self.datapaths:
            datapath.attach(loop)
        loop.every_wake(self._log_counters)
        self._next_report = time.monotonic() + COUNTER_LOG_SECONDS
        self._reported = self.stats.snapshot()
        loop.run(self.stop.is_set)

    def _drain_wake(self, _events: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def _log_counters(self) -> None:
        """Once a minute, when they changed: nothing is logged per packet."""
        now = time.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + COUNTER_LOG_SECONDS
        stats = self.stats
        if stats.refresh is not None:
            stats.refresh()
        if stats.snapshot() != self._reported:
            self._reported = stats.snapshot()
            self.log.info("counters %s", stats.summary())
