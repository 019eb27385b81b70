"""The TUN device: open, read, write, close. Nothing else.

The run loop only uses this small interface, so that offloaded I/O (IFF_VNET_HDR,
TUNSETOFFLOAD, IFF_MULTI_QUEUE workers, batches) can replace it later without touching the loop.
The device is not persistent: when the process dies, even by SIGKILL, the kernel deletes it
together with its addresses and routes.
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
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
MAX_PACKET = 65535


class TunError(OSError):
    """The TUN device could not be opened or used."""


def ensure_tun_node(path: Path = TUN_PATH) -> bool:
    """Create the /dev/net/tun character device if the container lacks it; True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(TUN_MAJOR, TUN_MINOR))
    return True


class TunDevice:
    """A layer-3 TUN device without packet-info header: each read is one IP packet."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self.name = name

    @classmethod
    def open(cls, name: str) -> TunDevice:
        """Create the device `name` and return it, non-blocking."""
        if not 0 < len(name.encode()) < IFNAMSIZ:
            raise TunError(errno.EINVAL, f"bad TUN device name {name!r}")
        ensure_tun_node()
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
            answer = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"cannot create TUN device {name}: {exc.strerror}") from exc
        real_name = answer[:IFNAMSIZ].rstrip(b"\0").decode()
        return cls(fd, real_name)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes | None:
        """One packet, or None when nothing is waiting."""
        try:
            return os.read(self._fd, MAX_PACKET)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        """Hand one IP packet to the kernel, as if it had arrived on the device."""
        os.write(self._fd, packet)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0
