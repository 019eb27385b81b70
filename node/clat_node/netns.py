"""A network namespace held by a descriptor: what it is, and work done inside it.

The agent never joins a pod's namespace with its own main thread. Work inside a namespace runs
in a thread of its own that enters it with setns(2) (CAP_SYS_ADMIN) and ends there: sockets and
devices made by that thread belong to the pod's namespace, the agent's other threads stay home,
and no thread has to find its way back.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from clat_translator.rtnl import IPRoute

T = TypeVar("T")

# linux/nsfs.h: NS_GET_NSTYPE = _IO(0xb7, 0x3), answers the CLONE_NEW* type of a namespace fd.
NS_GET_NSTYPE = 0xB703
RT_SCOPE_UNIVERSE = 0
CLONE_NEWNET = 0x40000000  # linux/sched.h (os.CLONE_NEWNET and os.setns are Python 3.12+)

_libc = ctypes.CDLL(None, use_errno=True)


class NotANetworkNamespace(ValueError):
    """The descriptor is something other than a network namespace."""


@dataclass(frozen=True)
class NamespaceIdentity:
    """Who a namespace is: its nsfs inode (stable while anyone holds it) and its addresses."""

    device: int
    inode: int
    ipv6: tuple[str, ...]  # global-scope IPv6 addresses, as the pod's podIPs would name them


def namespace_key(fd: int) -> tuple[int, int]:
    """(device, inode) of a network namespace descriptor; refuses any other kind of file."""
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        raise NotANetworkNamespace("the descriptor is not a namespace") from None
    if kind != CLONE_NEWNET:
        raise NotANetworkNamespace("the descriptor is a namespace, but not a network namespace")
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def own_namespace_keys() -> set[tuple[int, int]]:
    """The agent's own network namespace and the node's (pid 1's): never a pod's to serve."""
    keys = set()
    for path in ("/proc/self/ns/net", "/proc/1/ns/net"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        keys.add((st.st_dev, st.st_ino))
    return keys


def _enter(fd: int) -> None:
    """setns(2) for the calling thread only: the other threads stay where they are."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot enter the network namespace: {os.strerror(err)}")


def run_in_netns(fd: int, work: Callable[[], T], what: str = "netns work") -> T:
    """Run `work` in a new thread that has entered the network namespace `fd`; return its result."""
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _enter(fd)
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=what, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def global_ipv6_addresses() -> tuple[str, ...]:
    """The calling thread's namespace's global IPv6 addresses (link-local and loopback left out)."""
    with IPRoute() as ipr:
        addresses = {
            str(msg.get_attr("IFA_ADDRESS"))
            for msg in ipr.get_addr(family=socket.AF_INET6)
            if msg["scope"] == RT_SCOPE_UNIVERSE
        }
    return tuple(sorted(addresses))


def identify(fd: int) -> NamespaceIdentity:
    """Identify the network namespace `fd` (blocking: netlink inside the namespace)."""
    device, inode = namespace_key(fd)
    ipv6 = run_in_netns(fd, global_ipv6_addresses, what=f"identify netns {inode}")
    return NamespaceIdentity(device=device, inode=inode, ipv6=ipv6)
