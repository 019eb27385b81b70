"""The kernel data path's loader: clat.bpf.o through Debian's libbpf1 (ctypes), no compiler.

`BpfProgram` is the loaded object: its configuration map, its per-CPU counters, and
BPF_PROG_TEST_RUN for tests. `KernelDatapath` attaches it to clsact egress of the `clat` TUN,
where it translates the common packets in the kernel and leaves the rest to the TUN's file
descriptor (the userspace path). Every failure to get there is a `KernelPathUnavailable` with
a one-line reason, so that the sidecar can fall back (or refuse) saying why.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import mmap
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..xlat import XlatConfig
from ..xlat.config import parse_pool6
from ..xlat.context import Context

OBJECT_PATH = Path(__file__).with_name("clat.bpf.o")
PROGRAM_NAME = "clat_egress"
LOCAL_IPV4 = "192.0.0.2"
DF_LIMIT = 1260  # RFC 7915 §5.1: DF on translated packets bigger than 1260 bytes
MIN_KERNEL = (5, 15)  # gso_size kept by bpf_skb_change_proto, GSO of every type (5.14+)
VERIFIER_LOG_LINES = 40  # kept from libbpf's output for debugging a rejected program
# The verifier log's closing lines, which say nothing of why (libbpf's own, its statistics).
VERIFIER_SUMMARY = ("libbpf:", "processed ", "-- ", "verification time", "stack depth")
MESSAGE_BYTES = 1 << 22  # one libbpf message, formatted whole (the verifier's log is one)

# clat.bpf.c `enum clat_counter`, in order (tests/bpf checks the two agree).
COUNTERS: tuple[str, ...] = (
    "xlat46-packets",
    "xlat46-bytes",
    "xlat64-packets",
    "xlat64-bytes",
    "disabled",
    "not-ip",
    "length",
    "ipv4-header",
    "fragment",
    "extension-header",
    "source",
    "destination",
    "hop-limit",
    "protocol",
    "icmp",
    "udp-checksum-zero",
    "size",
    "gso",
    "checksum-edge",
    "helper-error",
    "udp-userspace",
    "drop-helper-error",
)
# Why a packet went to userspace: the counters after the four translated ones, but the drop.
PASS_REASONS: tuple[str, ...] = COUNTERS[4:-1]
DROP_REASONS: tuple[str, ...] = ("helper-error",)

# clat.bpf.c `struct clat_config`: host byte order numbers, addresses in network order.
CONFIG = struct.Struct("=IIII16s16s4s4sIIIII")
CLAT_F_UDP46_USERSPACE = 1  # clat.bpf.c: UDP IPv4 -> IPv6 left to userspace (its coalescer)
CLAT_F_SUPERPACKET_DF = 2  # clat.bpf.c: a 6->4 super-packet with a small last segment, whole
CLAT_F_UDP64_USERSPACE = 4  # clat.bpf.c: UDP IPv6 -> IPv4 left to userspace

# struct __sk_buff (linux/bpf.h, a stable ABI): its size and where gso_segs, gso_size sit
SKB_CTX_SIZE = 192
SKB_CTX_GSO_SEGS = 164
SKB_CTX_GSO_SIZE = 176

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1
TC_HANDLE = 0xC1A7  # our filter's handle and priority on clsact egress
TC_PRIORITY = 1
TC_H_CLSACT_EGRESS = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)


class KernelPathUnavailable(RuntimeError):
    """The kernel data path cannot run here; `reason` is one line, `log` the verifier's tail."""

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """What the program needs: the sidecar's XlatConfig in the form clat_config holds."""

    pool6: str
    clat_v4: str
    clat_v6: str
    local_ipv4: str = LOCAL_IPV4
    ipv6_mtu: int = 1500
    ipv4_mtu: int = 65535
    lowest_ipv6_mtu: int = 1280
    df_limit: int = DF_LIMIT
    # UDP IPv4 -> IPv6 to the userspace path, whose coalescer (USO) carries bulk upstream UDP
    # faster than one skb per datagram; costs the userspace path's latency per datagram.
    udp46_userspace: bool = False
    udp64_userspace: bool = False  # the same for UDP IPv6 -> IPv4 (downstream)
    # An IPv6 -> IPv4 super-packet whose last segment alone would be DF-clear (RFC 7915 §5.1)
    # is translated whole with DF on every segment: it is delivered to the CLAT's own address
    # whole, no segment is ever sent. False: such packets go to userspace to be split, and
    # arrive behind their flow's later packets (reordering, retransmits).
    superpacket_df: bool = True

    def __post_init__(self) -> None:
        parse_pool6(self.pool6)  # ValueError naming pool6
        for name in ("clat_v4", "local_ipv4"):
            try:
                ipaddress.IPv4Address(getattr(self, name))
            except ValueError:
                raise ValueError(f"KernelConfig.{name}={getattr(self, name)!r}: not IPv4") from None
        try:
            ipaddress.IPv6Address(self.clat_v6)
        except ValueError:
            raise ValueError(f"KernelConfig.clat_v6={self.clat_v6!r}: not IPv6") from None

    @classmethod
    def from_xlat(
        cls, config: XlatConfig, udp46_userspace: bool = False, udp64_userspace: bool = False
    ) -> KernelConfig:
        """The sidecar's XlatConfig (pool6 + one EAM /32 -> /128); KernelPathUnavailable when it
        uses settings the program does not implement."""
        unsupported = [
            name
            for name, used in (
                ("pool6=None", config.pool6 is None),
                ("reset_traffic_class", config.reset_traffic_class),
                ("reset_tos", config.reset_tos),
                ("denylist4", bool(config.denylist4)),
                ("local_ipv4=None", config.local_ipv4 is None),
            )
            if used
        ]
        eamt = list(config.eamt)
        v4 = ipaddress.IPv4Network(eamt[0][0]) if len(eamt) == 1 else None
        v6 = ipaddress.IPv6Network(eamt[0][1]) if len(eamt) == 1 else None
        if v4 is None or v6 is None or v4.prefixlen != 32 or v6.prefixlen != 128:
            unsupported.append("eamt other than one /32 -> /128 entry")
        elif config.local_ipv6 is not None and ipaddress.IPv6Address(config.local_ipv6) == (
            v6.network_address
        ):
            unsupported.append("local_ipv6 = the CLAT address")
        if unsupported:
            raise KernelPathUnavailable(
                "the kernel path does not implement " + ", ".join(unsupported)
            )
        assert v4 is not None and v6 is not None and config.pool6 is not None
        return cls(
            pool6=str(config.pool6),
            clat_v4=str(v4.network_address),
            clat_v6=str(v6.network_address),
            local_ipv4=str(config.local_ipv4),
            ipv6_mtu=config.ipv6_mtu,
            ipv4_mtu=config.ipv4_mtu,
            lowest_ipv6_mtu=config.lowest_ipv6_mtu,
            df_limit=Context(config).df_limit,
            udp46_userspace=udp46_userspace,
            udp64_userspace=udp64_userspace,
        )

    def pack(self, tun_ifindex: int, l3_offset: int = 0) -> bytes:
        """The clat_config map value."""
        net = ipaddress.IPv6Network(self.pool6)
        return CONFIG.pack(
            1,
            tun_ifindex,
            l3_offset,
            net.prefixlen,
            net.network_address.packed,
            ipaddress.IPv6Address(self.clat_v6).packed,
            ipaddress.IPv4Address(self.clat_v4).packed,
            ipaddress.IPv4Address(self.local_ipv4).packed,
            self.ipv6_mtu,
            self.ipv4_mtu,
            self.lowest_ipv6_mtu,
            self.df_limit,
            (CLAT_F_UDP46_USERSPACE if self.udp46_userspace else 0)
            | (CLAT_F_SUPERPACKET_DF if self.superpacket_df else 0)
            | (CLAT_F_UDP64_USERSPACE if self.udp64_userspace else 0),
        )


@dataclass
class KernelCounters:
    """The per-CPU counters summed: translated packets/bytes per direction, and per reason the
    packets handed to userspace (`passed`) or dropped because a helper failed (`dropped`)."""

    packets46: int = 0
    bytes46: int = 0
    packets64: int = 0
    bytes64: int = 0
    passed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PASS_REASONS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @classmethod
    def from_values(cls, values: list[int]) -> KernelCounters:
        by_name = dict(zip(COUNTERS, values, strict=True))
        return cls(
            packets46=by_name["xlat46-packets"],
            bytes46=by_name["xlat46-bytes"],
            packets64=by_name["xlat64-packets"],
            bytes64=by_name["xlat64-bytes"],
            passed={reason: by_name[reason] for reason in PASS_REASONS},
            dropped={"helper-error": by_name["drop-helper-error"]},
        )


# ---- libbpf through ctypes -----------------------------------------------------------------


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lib_lock = threading.Lock()
_print_lock = threading.RLock()
_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


def _signatures(lib: ctypes.CDLL) -> None:
    vp, i, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    table: dict[str, tuple[Any, list[Any]]] = {
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__find_program_by_name": (vp, [vp, cp]),
        "bpf_object__find_map_fd_by_name": (i, [vp, cp]),
        "bpf_program__fd": (i, [vp]),
        "bpf_map_update_elem": (i, [i, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "libbpf_num_possible_cpus": (i, []),
        "libbpf_set_print": (vp, [vp]),
        "bpf_tc_hook_create": (i, [ctypes.POINTER(_TcHook)]),
        "bpf_tc_hook_destroy": (i, [ctypes.POINTER(_TcHook)]),
        "bpf_tc_attach": (i, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        "bpf_tc_detach": (i, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        "bpf_tc_query": (i, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        "bpf_prog_test_run_opts": (i, [i, ctypes.POINTER(_TestRunOpts)]),
    }
    for name, (restype, argtypes) in table.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def libbpf() -> ctypes.CDLL:
    """Debian's libbpf1 (`libbpf.so.1`), loaded once."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
                _signatures(lib)
            except (OSError, AttributeError) as e:
                raise KernelPathUnavailable(f"libbpf1 (libbpf.so.1) is not usable: {e}") from None
            _lib = lib
        return _lib


@contextlib.contextmanager
def libbpf_messages() -> Iterator[list[str]]:
    """libbpf's messages while inside, kept (the last VERIFIER_LOG_LINES lines) instead of
    printed: the verifier's log for a reason, and no noise on stderr from expected errors."""
    lib = libbpf()
    log: list[str] = []

    def keep(level: int, fmt: bytes | None, args: int | None) -> int:
        # The verifier's log arrives as one message of up to megabytes: its last line (the
        # reason) must not be cut off.
        # Anonymous memory: only the pages the message fills become resident, and only until
        # it is copied out (a zero-filled buffer would add MESSAGE_BYTES to the RSS).
        with mmap.mmap(-1, MESSAGE_BYTES) as memory:
            buf = (ctypes.c_char * MESSAGE_BYTES).from_buffer(memory)
            _libc.vsnprintf(ctypes.addressof(buf), MESSAGE_BYTES, fmt, args)
            text = ctypes.string_at(ctypes.addressof(buf))
            del buf
        log.extend(text.decode(errors="replace").splitlines())
        del log[:-VERIFIER_LOG_LINES]
        return 0

    printer = _PRINT_FN(keep)
    with _print_lock:  # libbpf's print hook is process-wide
        previous = lib.libbpf_set_print(ctypes.cast(printer, ctypes.c_void_p))
        try:
            yield log
        finally:
            lib.libbpf_set_print(previous)


def _kernel_version() -> tuple[int, int]:
    release = os.uname().release
    try:
        major, minor = release.split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def _errno_reason(err: int, what: str) -> str:
    if err == errno.EPERM:
        return (
            f"{what}: operation not permitted (needs CAP_BPF and CAP_NET_ADMIN, "
            "and a seccomp profile that allows bpf())"
        )
    if err == errno.ENOSYS:
        return f"{what}: bpf() is not available (blocked by seccomp, or a kernel without BPF)"
    return f"{what}: {os.strerror(err)}"


class BpfProgram:
    """clat.bpf.o opened and loaded once: the program fd, the maps, test runs.

    `configure` writes a configuration into the slot not in use and then flips the active
    index, so every packet sees either the old or the new configuration whole.
    """

    def __init__(self, path: Path = OBJECT_PATH) -> None:
        if _kernel_version() < MIN_KERNEL:
            raise KernelPathUnavailable(
                f"kernel {os.uname().release} is older than "
                f"{MIN_KERNEL[0]}.{MIN_KERNEL[1]}, which the kernel path needs"
            )
        if not path.is_file():
            raise KernelPathUnavailable(f"the BPF object {path} is missing (built by `make`)")
        lib = libbpf()
        self._lib = lib
        self._obj: int | None = None
        self._active = 0
        self._lock = threading.Lock()
        with libbpf_messages() as log:
            obj = lib.bpf_object__open_file(str(path).encode(), None)
            if not obj:
                err = ctypes.get_errno()
                raise KernelPathUnavailable(
                    f"cannot open {path}: {os.strerror(err)}", "\n".join(log)
                )
            err = -lib.bpf_object__load(obj)
            if err:
                lib.bpf_object__close(obj)
                raise KernelPathUnavailable(_load_reason(err, log), "\n".join(log))
        self._obj = obj
        prog = lib.bpf_object__find_program_by_name(obj, PROGRAM_NAME.encode())
        self.prog_fd = lib.bpf_program__fd(prog) if prog else -1
        self._config_fd = lib.bpf_object__find_map_fd_by_name(obj, b"clat_config")
        self._active_fd = lib.bpf_object__find_map_fd_by_name(obj, b"clat_active")
        self._counters_fd = lib.bpf_object__find_map_fd_by_name(obj, b"clat_counters")
        if min(self.prog_fd, self._config_fd, self._active_fd, self._counters_fd) < 0:
            self.close()
            raise KernelPathUnavailable(f"{path} lacks the program or maps of clat.bpf.c")
        self._cpus = max(1, lib.libbpf_num_possible_cpus())

    def _update(self, fd: int, key: int, value: bytes) -> None:
        k = ctypes.c_uint32(key)
        v = ctypes.create_string_buffer(value, len(value))
        if self._lib.bpf_map_update_elem(fd, ctypes.byref(k), v, 0) < 0:
            err = ctypes.get_errno()
            raise KernelPathUnavailable(_errno_reason(err, "writing a BPF map"))

    def configure(self, config: KernelConfig, tun_ifindex: int, l3_offset: int = 0) -> None:
        """Make `config` live: every packet the program starts after this returns uses it."""
        value = config.pack(tun_ifindex, l3_offset)
        with self._lock:
            spare = self._active ^ 1
            self._update(self._config_fd, spare, value)
            self._update(self._active_fd, 0, struct.pack("=I", spare))
            self._active = spare

    def disable(self) -> None:
        """Every packet to userspace from now on (the all-zero configuration)."""
        with self._lock:
            spare = self._active ^ 1
            self._update(self._config_fd, spare, bytes(CONFIG.size))
            self._update(self._active_fd, 0, struct.pack("=I", spare))
            self._active = spare

    def counter_values(self) -> list[int]:
        """Each counter summed over the CPUs, in COUNTERS order."""
        buf = (ctypes.c_uint64 * self._cpus)()
        values = []
        for index in range(len(COUNTERS)):
            key = ctypes.c_uint32(index)
            if self._lib.bpf_map_lookup_elem(self._counters_fd, ctypes.byref(key), buf) < 0:
                err = ctypes.get_errno()
                raise OSError(err, _errno_reason(err, "reading the BPF counters"))
            values.append(sum(buf))
        return values

    def counters(self) -> KernelCounters:
        return KernelCounters.from_values(self.counter_values())

    def test_run(self, frame: bytes, gso_size: int = 0, gso_segs: int = 0) -> tuple[int, bytes]:
        """BPF_PROG_TEST_RUN on one Ethernet frame: (verdict, the frame afterwards). With
        `gso_size`, the frame is a super-packet (the skb's gso_size and gso_segs set)."""
        data_in = ctypes.create_string_buffer(frame, len(frame))
        data_out = ctypes.create_string_buffer(len(frame) + 256)
        opts = _TestRunOpts(
            sz=ctypes.sizeof(_TestRunOpts),
            data_in=ctypes.cast(data_in, ctypes.c_void_p),
            data_out=ctypes.cast(data_out, ctypes.c_void_p),
            data_size_in=len(frame),
            data_size_out=len(data_out),
            repeat=1,
        )
        if gso_size:
            ctx = bytearray(SKB_CTX_SIZE)  # struct __sk_buff: only these two may be set here
            struct.pack_into("=I", ctx, SKB_CTX_GSO_SEGS, gso_segs)
            struct.pack_into("=I", ctx, SKB_CTX_GSO_SIZE, gso_size)
            ctx_in = ctypes.create_string_buffer(bytes(ctx), len(ctx))
            opts.ctx_in = ctypes.cast(ctx_in, ctypes.c_void_p)
            opts.ctx_size_in = len(ctx)
        if self._lib.bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(opts)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, _errno_reason(err, "BPF_PROG_TEST_RUN"))
        return opts.retval, data_out.raw[: opts.data_size_out]

    def close(self) -> None:
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_reason(err: int, log: list[str]) -> str:
    if err in (errno.EPERM, errno.ENOSYS):
        return _errno_reason(err, "loading the BPF program")
    verifier = [line for line in log if line.strip()]
    if err in (errno.EACCES, errno.EINVAL) and verifier:
        tail = next(
            (line for line in reversed(verifier) if not line.strip().startswith(VERIFIER_SUMMARY)),
            verifier[-1],
        )
        return f"the kernel's verifier rejected the BPF program: {tail.strip()}"
    return _errno_reason(err, "loading the BPF program")


# ---- the data path: attached to clsact egress of the TUN ----------------------------------


def _leftover_filters(ifindex: int) -> list[tuple[int, int]]:
    """(handle, priority) of our program's filters on `ifindex`'s clsact egress (an earlier,
    killed run's): cls_bpf names them after the program ("clat_egress:[id]")."""
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        try:
            filters = ipr.get_filters(index=ifindex, parent=TC_H_CLSACT_EGRESS)
        except Exception:  # noqa: BLE001 - no clsact qdisc: nothing left over
            return []
        for f in filters:
            if f.get_attr("TCA_KIND") != "bpf":
                continue
            options = f.get_attr("TCA_OPTIONS")
            name = options.get_attr("TCA_BPF_NAME") if options is not None else None
            if name and str(name).startswith(PROGRAM_NAME):
                found.append((f["handle"], f["info"] >> 16))
    return found


class KernelDatapath:
    """The kernel data path on one TUN device: `start`, `update_pool6`, `counters`, `stop`.

    Works in the network namespace of the calling thread. Not attached until `start`;
    `stop` detaches and may be called more than once.
    """

    name = "kernel"

    def __init__(
        self,
        tun_name: str,
        config: KernelConfig | XlatConfig,
        object_path: Path = OBJECT_PATH,
    ) -> None:
        self.tun_name = tun_name
        self.config = config if isinstance(config, KernelConfig) else KernelConfig.from_xlat(config)
        self.object_path = object_path
        self.program: BpfProgram | None = None
        self.ifindex = 0
        self._created_qdisc = False
        self.replaced_leftovers = 0

    def _hook(self, attach_point: int = BPF_TC_EGRESS) -> _TcHook:
        return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=self.ifindex, attach_point=attach_point)

    def _destroy_qdisc(self, lib: ctypes.CDLL) -> None:
        """Remove the clsact qdisc: libbpf deletes it only for a hook of both attach points
        (one alone just flushes that side's filters)."""
        lib.bpf_tc_hook_destroy(ctypes.byref(self._hook(BPF_TC_INGRESS | BPF_TC_EGRESS)))
        self._created_qdisc = False

    def _opts(self, prog_fd: int = 0, flags: int = 0) -> _TcOpts:
        return _TcOpts(
            sz=ctypes.sizeof(_TcOpts),
            prog_fd=prog_fd,
            flags=flags,
            handle=TC_HANDLE,
            priority=TC_PRIORITY,
        )

    def start(self) -> None:
        """Load, configure and attach (replacing a killed run's filter); KernelPathUnavailable
        says why not."""
        try:
            self.ifindex = socket.if_nametoindex(self.tun_name)
        except OSError:
            raise KernelPathUnavailable(f"no device {self.tun_name!r} to attach to") from None
        program = BpfProgram(self.object_path)
        try:
            with libbpf_messages():
                self._attach(program)
        except BaseException:
            if self._created_qdisc:  # a failed attach leaves nothing of this run on the device
                with libbpf_messages():
                    self._destroy_qdisc(program._lib)
            program.close()
            raise
        self.program = program

    def _attach(self, program: BpfProgram) -> None:
        program.configure(self.config, self.ifindex)
        lib = program._lib
        hook = self._hook()
        rc = lib.bpf_tc_hook_create(ctypes.byref(hook))
        if rc < 0 and -rc != errno.EEXIST:
            raise KernelPathUnavailable(_errno_reason(-rc, f"clsact on {self.tun_name}"))
        self._created_qdisc = rc == 0
        for handle, priority in _leftover_filters(self.ifindex):
            if (handle, priority) == (TC_HANDLE, TC_PRIORITY):
                continue  # replaced in place below
            opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
            lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
            self.replaced_leftovers += 1
        query = self._opts()
        if lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(query)) == 0:
            self.replaced_leftovers += 1
        opts = self._opts(program.prog_fd, BPF_TC_F_REPLACE)
        rc = lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        if rc < 0:
            raise KernelPathUnavailable(_errno_reason(-rc, f"attaching to {self.tun_name} egress"))

    def update_pool6(self, prefix: str) -> None:
        """Switch the PLAT prefix live; ValueError for an invalid one (the old one stays)."""
        parse_pool6(prefix)
        new = KernelConfig(**{**self.config.__dict__, "pool6": prefix})
        if self.program is not None:
            self.program.configure(new, self.ifindex)
        self.config = new

    def counters(self) -> KernelCounters:
        if self.program is None:
            return KernelCounters()
        return self.program.counters()

    @property
    def attached(self) -> bool:
        return self.program is not None

    def stop(self) -> None:
        """Detach and unload; the clsact qdisc goes too when this run created it."""
        program, self.program = self.program, None
        if program is None:
            return
        try:
            with libbpf_messages():
                lib = program._lib
                hook = self._hook()
                # Errors are expected when the device went first (it takes its filters).
                lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(self._opts()))
                if self._created_qdisc:
                    self._destroy_qdisc(lib)
        finally:
            program.close()


def run_test_packet(
    program: BpfProgram, packet: bytes, gso_size: int = 0, gso_segs: int = 0
) -> tuple[int, bytes]:
    """The program's verdict on one IP packet (in an Ethernet frame) and the IP packet after it;
    with `gso_size`, as a super-packet."""
    ethertype = b"\x86\xdd" if packet and packet[0] >> 4 == 6 else b"\x08\x00"
    verdict, frame = program.test_run(bytes(12) + ethertype + packet, gso_size, gso_segs)
    return verdict, frame[14:]
