"""The TUN device: open (optionally with virtio-net headers, offloads and several queues), read
into a buffer, close. The data path reads and writes the descriptor itself (queue_pump.py).

The device is not persistent: when the last process holding one of its queues dies, even by
SIGKILL, the kernel deletes it together with its addresses and routes.

Offload (Documentation/networking/tuntap.rst, include/uapi/linux/if_tun.h): with IFF_VNET_HDR
every read and write starts with a `struct virtio_net_hdr`; TUNSETOFFLOAD tells the kernel what
we can take: partial checksums (TUN_F_CSUM), TCP super-packets (TSO4/TSO6) and, on kernels
since 6.2, UDP ones (USO4/USO6). A flag the kernel refuses is dropped and the rest kept.
IFF_MULTI_QUEUE gives one queue (file descriptor) per worker; the kernel spreads flows over the
queues by hash.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from pathlib import Path

TUN_PATH = Path("/dev/net/tun")
TUN_MAJOR, TUN_MINOR = 10, 200  # Documentation/admin-guide/devices.txt
# include/uapi/linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETQUEUE = 0x400454D9
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_DETACH_QUEUE = 0x0400
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
OFFLOAD_NAMES = {
    TUN_F_CSUM: "csum",
    TUN_F_TSO4: "tso4",
    TUN_F_TSO6: "tso6",
    TUN_F_TSO_ECN: "tso-ecn",
    TUN_F_USO4: "uso4",
    TUN_F_USO6: "uso6",
}
ALL_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6
# What to give up, in order, when TUNSETOFFLOAD refuses: UDP (kernels before 6.2), ECN, TCP.
_DEGRADE = (TUN_F_USO4 | TUN_F_USO6, TUN_F_TSO_ECN, TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM)
VNET_HDR_SIZE = 10  # struct virtio_net_hdr (xlat.offload.VNET_HDR)
IFNAMSIZ = 16
# A read holds one virtio-net header and one packet; a super-packet is at most 64 KiB of
# IP (the device's gso_max_size) and a plain packet at most the 65535 of the IPv4 header.
READ_BUFFER = VNET_HDR_SIZE + 65536 + 256


class TunError(OSError):
    """The TUN device could not be opened or used."""


def ensure_tun_node(path: Path = TUN_PATH) -> bool:
    """Create the /dev/net/tun character device if the container lacks it; True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(TUN_MAJOR, TUN_MINOR))
    return True


def offload_names(flags: int) -> str:
    """ "csum,tso4,..." for a TUN_F_* set; "none" when empty."""
    return ",".join(name for bit, name in OFFLOAD_NAMES.items() if flags & bit) or "none"


class TunDevice:
    """One queue of a layer-3 TUN device without packet-info header.

    Each read is one IP packet, preceded by a virtio-net header when `vnet_hdr` is set.
    """

    def __init__(self, fd: int, name: str, vnet_hdr: bool = False, multi_queue: bool = False):
        self._fd = fd
        self.name = name
        self.vnet_hdr = vnet_hdr
        self.multi_queue = multi_queue
        self.offloads = 0

    @classmethod
    def open(cls, name: str, vnet_hdr: bool = False, multi_queue: bool = False) -> TunDevice:
        """Create the device `name` (or attach one more queue to it, with `multi_queue`)."""
        if not 0 < len(name.encode()) < IFNAMSIZ:
            raise TunError(errno.EINVAL, f"bad TUN device name {name!r}")
        ensure_tun_node()
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        flags = IFF_TUN | IFF_NO_PI
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        try:
            ifr = struct.pack("16sH22x", name.encode(), flags)
            answer = fcntl.ioctl(fd, TUNSETIFF, ifr)
            if vnet_hdr:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"cannot create TUN device {name}: {exc.strerror}") from exc
        real_name = answer[:IFNAMSIZ].rstrip(b"\0").decode()
        return cls(fd, real_name, vnet_hdr, multi_queue)

    def set_offload(self, wanted: int = ALL_OFFLOADS) -> int:
        """Ask for the TUN_F_* offloads in `wanted`; give up what the kernel refuses (UDP,
        then ECN, then TCP, then checksums) and return what it took."""
        if not self.vnet_hdr:
            raise TunError(errno.EINVAL, "offloads need a TUN opened with virtio-net headers")
        flags = wanted
        for give_up in (0, *_DEGRADE):
            flags &= ~give_up
            try:
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, flags)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise TunError(exc.errno, f"TUNSETOFFLOAD: {exc.strerror}") from exc
                continue
            self.offloads = flags
            return flags
        self.offloads = 0
        return 0

    def detach_queue(self) -> None:
        """Stop taking packets on this queue; the descriptor still keeps the device alive."""
        ifr = struct.pack("16sH22x", b"", IFF_DETACH_QUEUE)
        try:
            fcntl.ioctl(self._fd, TUNSETQUEUE, ifr)
        except OSError as exc:
            raise TunError(exc.errno, f"TUNSETQUEUE detach: {exc.strerror}") from exc

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: bytearray) -> int:
        """One packet into `buffer`; its length, 0 when nothing is waiting."""
        try:
            return os.readv(self._fd, (buffer,))
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
