"""The CLAT of one served pod, made inside its network namespace from the sidecar's own parts.

  PodClatServer   the agent's PodServer: for a verified pod, in a thread that has entered the
                  pod's namespace (setns), what the sidecar makes in its own (plumbing.py with
                  its undo list: nftables NAT66 table, sysctls, the `clat` TUN with 192.0.0.1/32
                  and the IPv4 default route), the kernel data path on the TUN (bpf/loader.py),
                  and the pod's TUN descriptor on the agent's one event loop (the slow path:
                  QueuePump with the pod's own Translator and Stats).
  PodClat         what one pod has: its undo list, TUN, translator, counters, kernel path.

Why a thread per step works (each checked by tests/node/test_node_datapath.py): netlink sockets,
the TUN (/dev/net/tun binds the device to the opener's namespace), /proc/sys/net and the `nft`
child (forked from that thread, it inherits the thread's namespace) all act on the namespace of
the calling *thread*; the TUN descriptor, read and written from the agent's loop thread, stays
bound to the pod's namespace.

The TUN is persistent (TUNSETPERSIST) and the tc program stays attached when the agent dies:
a killed or upgraded agent leaves the pods' IPv4 working on the kernel path. The namespace is
bind-mounted at STATE_DIR/netns/<uid> (beside STATE_DIR/pods/<uid>.json) while served, so a
restarted agent finds it again (`adopt_all`) although the pod's init container has long exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from clat_translator import netconf
from clat_translator.bpf.loader import KernelDatapath, KernelPathUnavailable
from clat_translator.metrics import Stats
from clat_translator.plumbing import PodPlumbing, Undo, refuse_foreign_device
from clat_translator.queue_pump import QueuePump
from clat_translator.tun import TunDevice
from clat_translator.xlat import Translator, XlatConfig

from clat_node import logs, netns
from clat_node.agent import AcceptedPod, PeerCredentials, PodRegistry, Teardown
from clat_node.verify import VerifiedPod

T = TypeVar("T")

DEFAULT_CLAT_V4 = "192.0.0.1"  # RFC 7335, as the sidecar
DEFAULT_CLAT_V6 = "fd64:c1a7:464::1"  # the sidecar's internal ULA, masqueraded to the pod's IP
LOCAL_IPV4 = "192.0.0.2"  # source of the translator's own ICMPv4 errors (RFC 7335)
RFC7600_IPV4 = "192.0.0.8"  # source of translated ICMPv6 errors from untranslatable sources
DEFAULT_STATE_DIR = "/run/clat-node"
TUNSETPERSIST = 0x400454CB  # linux/if_tun.h _IOW('T', 203, int)
MS_BIND = 0x1000
MNT_DETACH = 0x2
DATAPATHS = ("auto", "kernel", "userspace")

_libc = ctypes.CDLL(None, use_errno=True)


class PodSetupError(RuntimeError):
    """The pod's CLAT could not be made; what was made of it is taken back."""


@dataclass(frozen=True)
class NodeSettings:
    plat_prefix: str
    clat_v4: str = DEFAULT_CLAT_V4
    clat_v6: str = DEFAULT_CLAT_V6
    tun: str = "clat"
    datapath: str = "auto"  # auto | kernel | userspace
    state_dir: str = DEFAULT_STATE_DIR

    def __post_init__(self) -> None:
        if self.datapath not in DATAPATHS:
            raise ValueError(f"datapath {self.datapath!r}: one of {', '.join(DATAPATHS)}")


@dataclass
class PodClat:
    """One pod's CLAT. `standing_down`: the pod has native IPv4, nothing was made."""

    pod: VerifiedPod
    plumbing: PodPlumbing
    stats: Stats
    tun: TunDevice | None = None
    pump: QueuePump | None = None
    kernel: KernelDatapath | None = None
    datapath: str = "none"
    standing_down: str | None = None
    kernel_unavailable: str | None = None
    adopted: bool = False
    notes: list[str] = field(default_factory=list)


def _set_persist(tun: TunDevice, on: bool) -> None:
    fcntl.ioctl(tun.fileno(), TUNSETPERSIST, 1 if on else 0)


def _bind_mount(source: str, target: str) -> None:
    if _libc.mount(source.encode(), target.encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind-mounting the namespace at {target}: {os.strerror(err)}")


def _unmount(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unmounting {target}: {os.strerror(err)}")


class PodClatServer:
    """The agent's PodServer: serves pods, takes them back, re-adopts them after a restart."""

    def __init__(self, settings: NodeSettings, node_name: str) -> None:
        self.settings = settings
        self.node_name = node_name
        self.log = logs.get()
        self.pods: dict[str, PodClat] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # libbpf's print callback is process-wide: one kernel-path load or unload at a time.
        self._bpf_lock = threading.Lock()
        self.state = Path(settings.state_dir)
        (self.state / "netns").mkdir(parents=True, exist_ok=True)
        (self.state / "pods").mkdir(parents=True, exist_ok=True)

    # ---- PodServer ----------------------------------------------------------------------------

    async def serve(self, pod: AcceptedPod) -> Teardown:
        clat = await self._in_netns(pod.netns_fd, lambda: self._make(pod.pod), f"serve {pod.uid}")
        try:
            self._remember(pod)
        except OSError as exc:
            await self._in_netns(pod.netns_fd, lambda: self._take_back(clat), "undo")
            raise PodSetupError(f"cannot keep the namespace for a restart: {exc}") from None
        return self._start(pod, clat)

    # ---- after a restart -----------------------------------------------------------------------

    async def adopt_all(self, registry: PodRegistry) -> list[str]:
        """Re-adopt the pods an earlier agent served (bind-mounted namespaces in the state dir)."""
        adopted = []
        for record in sorted((self.state / "pods").glob("*.json")):
            uid = record.stem
            target = self.state / "netns" / uid
            try:
                pod = VerifiedPod(**json.loads(record.read_text()))
                fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
            except (OSError, ValueError, TypeError) as exc:
                self.log.error("cannot re-adopt pod uid %s: %s; forgetting it", uid, exc)
                self._forget(uid)
                continue
            try:
                identity = await asyncio.to_thread(netns.identify, fd)
                clat = await self._in_netns(fd, lambda p=pod: self._adopt(p), f"adopt {uid}")  # type: ignore[misc]
            except Exception as exc:
                os.close(fd)
                self.log.error("cannot re-adopt pod %s: %s; forgetting it", pod.pod, exc)
                self._forget(uid)
                continue
            # The hand-off's peer is long gone: its credentials are unknown (0 = none).
            accepted = AcceptedPod(pod, fd, identity, PeerCredentials(0, 0, 0))
            registry.add(accepted, self._start(accepted, clat))
            how = "re-adopted" if clat.adopted else "re-created"
            self.log.info(
                "%s pod %s (netns inode %d) after a restart: data path %s",
                how,
                pod.pod,
                identity.inode,
                clat.datapath,
            )
            adopted.append(uid)
        return adopted

    # ---- inside the pod's namespace (a thread of its own) ----------------------------------------

    async def _in_netns(self, fd: int, work: Callable[[], T], what: str) -> T:
        return await asyncio.to_thread(netns.run_in_netns, fd, work, what)

    def _make(self, pod: VerifiedPod) -> PodClat:
        settings = self.settings
        log = logging.getLogger(f"{logs.LOGGER_NAME}.{pod.namespace}.{pod.name}")
        leftovers = PodPlumbing.leftovers(settings.tun, log)
        if leftovers.made:  # an earlier agent's, whose state was lost: ours by name and kind
            leftovers.teardown()
        refuse_foreign_device(settings.tun)
        clat = PodClat(pod=pod, plumbing=PodPlumbing(log), stats=Stats())
        with netconf.netlink() as ipr:
            uplink = netconf.find_uplink(ipr, None)
            native = netconf.native_ipv4_route(ipr, settings.tun)
        if native:
            # As the sidecar: a pod with native IPv4 needs no CLAT; nothing is made.
            clat.standing_down = native
            clat.stats.standing_down = clat.stats.ready = True
            return clat
        try:
            self._build(clat, uplink)
        except BaseException:
            self._take_back(clat)
            raise
        return clat

    def _build(self, clat: PodClat, uplink: netconf.Uplink) -> None:
        settings, plumbing = self.settings, clat.plumbing
        ipv4_mtu = uplink.mtu - netconf.IPV6_OVERHEAD
        sysctls = netconf.SysctlChanges()
        # the sidecar's plan: accept_ra=2 before forwarding, so no RA-learned route is lost
        with netconf.netlink() as ipr:
            netconf.plan_ipv6_forwarding(ipr, sysctls, uplink.name)
        plumbing.install_table(settings.clat_v6, settings.tun, sysctls)
        for warning in plumbing.apply_sysctls(sysctls):
            clat.notes.append(warning)
        # Offload off: in node mode the slow path sees only what the kernel path leaves to it.
        tun = plumbing.open_tun(settings.tun, vnet_hdr=False, multi_queue=False)
        _set_persist(tun, True)
        # Undone before the close that then deletes the device (newest first).
        plumbing.made.append(Undo("TUN persistence", lambda: self._unpersist(tun)))
        disable_ipv6 = f"net/ipv6/conf/{tun.name}/disable_ipv6"
        if netconf.read_sysctl(disable_ipv6) != "0":
            netconf.write_sysctl(disable_ipv6, "0")
        device_mtu = min(max(uplink.mtu, ipv4_mtu + netconf.IPV6_OVERHEAD), 65535)
        plumbing.configure_tun(tun, settings.clat_v4, settings.clat_v6, ipv4_mtu, device_mtu, False)
        clat.tun = tun
        self._datapaths(clat, uplink)

    def _adopt(self, pod: VerifiedPod) -> PodClat:
        """Take over what an earlier agent left in the pod: its persistent TUN (attached again),
        its table and sysctls (their undo rebuilt from the table's record); the kernel path is
        loaded afresh and replaces the old filter in place, so IPv4 never stops. If the TUN is
        not there, the pod is set up anew."""
        settings = self.settings
        log = logging.getLogger(f"{logs.LOGGER_NAME}.{pod.namespace}.{pod.name}")
        found = PodPlumbing.leftovers(settings.tun, log)
        with netconf.netlink() as ipr:
            uplink = netconf.find_uplink(ipr, None)
            in_place = netconf.tun_routes_present(ipr, settings.tun, settings.clat_v6)
        whats = {step.what for step in found.made}
        if not in_place or f"TUN device {settings.tun}" not in whats:
            return self._make(pod)
        clat = PodClat(pod=pod, plumbing=found, stats=Stats(), adopted=True)
        tun = TunDevice.open(settings.tun)  # a persistent TUN of that name: attaches to it
        found.made.append(Undo(f"TUN descriptor {tun.name}", lambda: self._close(tun)))
        clat.tun = tun
        try:
            self._datapaths(clat, uplink)
        except BaseException:
            self._take_back(clat)
            raise
        return clat

    def _datapaths(self, clat: PodClat, uplink: netconf.Uplink) -> None:
        assert clat.tun is not None
        settings = self.settings
        config = XlatConfig(
            pool6=settings.plat_prefix,
            eamt=[(f"{settings.clat_v4}/32", f"{settings.clat_v6}/128")],
            local_ipv4=LOCAL_IPV4,
            rfc6791v4=RFC7600_IPV4,
            amend_udp_checksum_zero=True,
            ipv6_mtu=uplink.mtu,
            ipv4_mtu=65535,  # the IPv4 side is the pod's own stack: only the route's MTU
            clat_mode=True,
        )
        clat.pump = QueuePump(clat.tun, Translator(config), clat.stats)
        clat.datapath = "userspace"
        if settings.datapath != "userspace":
            kernel = KernelDatapath(clat.tun.name, config)
            try:
                with self._bpf_lock:
                    kernel.start()
            except KernelPathUnavailable as exc:
                if settings.datapath == "kernel":
                    raise PodSetupError(f"the kernel data path is unavailable: {exc}") from None
                clat.kernel_unavailable = exc.reason
            else:
                clat.kernel = kernel
                clat.datapath = "kernel"
        clat.stats.datapath = clat.datapath
        clat.stats.offloads = "off"
        clat.stats.prefix = settings.plat_prefix
        clat.stats.ready = True

    def _take_back(self, clat: PodClat) -> None:
        """Inside the pod's namespace: detach the kernel path, then the undo list."""
        kernel, clat.kernel = clat.kernel, None
        if kernel is not None:
            try:
                with self._bpf_lock:
                    kernel.stop()
            except Exception as exc:  # the device goes below all the same, and its filter with it
                clat.plumbing.log.error("detaching the kernel path: %s", exc)
        clat.plumbing.teardown()
        clat.tun = None

    @staticmethod
    def _unpersist(tun: TunDevice) -> str:
        _set_persist(tun, False)
        return f"TUN device {tun.name} no longer persistent"

    @staticmethod
    def _close(tun: TunDevice) -> str:
        tun.close()
        return f"closed the descriptor of TUN device {tun.name}"

    # ---- on the agent's loop --------------------------------------------------------------------

    def _start(self, accepted: AcceptedPod, clat: PodClat) -> Teardown:
        """The pod's TUN on the event loop (slow path); returns its teardown."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        uid = accepted.uid
        self.pods[uid] = clat
        pod = accepted.pod.pod
        if clat.standing_down:
            self.log.info("pod %s has native IPv4 (%s): standing down", pod, clat.standing_down)
        else:
            assert clat.tun is not None and clat.pump is not None
            loop.add_reader(clat.tun.fileno(), clat.pump.pump)
            if clat.kernel_unavailable:
                self.log.warning(
                    "pod %s: kernel data path unavailable (%s): userspace only",
                    pod,
                    clat.kernel_unavailable,
                )
            for note in clat.notes:
                self.log.warning("pod %s: %s", pod, note)
            self.log.info(
                "pod %s: TUN %s up, %s/32, PLAT prefix %s, data path %s",
                pod,
                self.settings.tun,
                self.settings.clat_v4,
                self.settings.plat_prefix,
                clat.datapath,
            )

        async def teardown() -> None:
            self.pods.pop(uid, None)
            if clat.tun is not None:
                loop.remove_reader(clat.tun.fileno())
            try:
                await self._in_netns(accepted.netns_fd, lambda: self._take_back(clat), "release")
            finally:
                self._forget(uid)

        return teardown

    def detach_all(self) -> None:
        """The agent stops and leaves its pods working (kernel path, persistent TUN, state dir):
        only the slow path stops, until the next agent re-adopts them."""
        for clat in list(self.pods.values()):
            if clat.tun is not None and self._loop is not None:
                self._loop.remove_reader(clat.tun.fileno())
            if clat.kernel is not None and clat.kernel.program is not None:
                clat.kernel.program.close()  # the attached filter holds the program and maps
                clat.kernel.program = None
            if clat.tun is not None:
                clat.tun.close()  # persistent: the device stays
        self.pods.clear()

    # ---- the state directory ---------------------------------------------------------------------

    def _remember(self, accepted: AcceptedPod) -> None:
        uid = accepted.uid
        target = self.state / "netns" / uid
        with contextlib.suppress(OSError):
            _unmount(str(target))  # a pod served again after a new sandbox
        target.touch()
        _bind_mount(f"/proc/self/fd/{accepted.netns_fd}", str(target))
        record = self.state / "pods" / f"{uid}.json"
        temporary = record.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(accepted.pod)))
        temporary.replace(record)

    def _forget(self, uid: str) -> None:
        target = self.state / "netns" / uid
        with contextlib.suppress(OSError):
            _unmount(str(target))
        for path in (target, self.state / "pods" / f"{uid}.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
