"""The pod network namespace, through netlink (pyroute2) and /proc/sys: links, addresses, routes.

Everything here acts on the namespace the process runs in, as a container in a pod does.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clat_translator.rtnl import IPRoute, NetlinkError

PROC_SYS = Path("/proc/sys")
IPV6_FORWARDING = "net/ipv6/conf/all/forwarding"
RTPROT_RA = 9  # linux/rtnetlink.h: a route learned from a router advertisement
IPV6_OVERHEAD = 20  # an IPv6 header is 20 bytes longer than an option-less IPv4 one (RFC 7915)
TCP_IPV4_HEADERS = 40  # advmss = MTU - IPv4 header - TCP header


class NetconfError(RuntimeError):
    """The namespace is not as the CLAT needs it; the message says what is missing."""


@dataclass(frozen=True)
class Uplink:
    """The interface of the IPv6 default route (or the one named by --uplink)."""

    name: str
    index: int
    mtu: int
    addresses: tuple[str, ...]


@contextmanager
def netlink() -> Iterator[IPRoute]:
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def link_kind(ipr: IPRoute, index: int) -> str | None:
    link = ipr.get_links(index)[0]
    info = _attr(link, "IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def find_uplink(ipr: IPRoute, name: str | None) -> Uplink:
    """The uplink by name, else the device of the IPv6 default route."""
    if name is None:
        for route in ipr.get_routes(family=socket.AF_INET6, table=254):
            if route["dst_len"] == 0 and _attr(route, "RTA_OIF"):
                index = int(_attr(route, "RTA_OIF"))
                break
            multipath = _attr(route, "RTA_MULTIPATH")
            if route["dst_len"] == 0 and multipath:
                index = int(multipath[0]["oif"])
                break
        else:
            raise NetconfError("no IPv6 default route: cannot find the uplink (give --uplink)")
    else:
        found = link_index(ipr, name)
        if found is None:
            raise NetconfError(f"uplink {name!r} does not exist")
        index = found
    link = ipr.get_links(index)[0]
    addresses = tuple(
        str(_attr(a, "IFA_ADDRESS"))
        for a in ipr.get_addr(family=socket.AF_INET6, index=index)
        if not ipaddress.IPv6Address(_attr(a, "IFA_ADDRESS")).is_link_local
    )
    return Uplink(
        name=str(_attr(link, "IFLA_IFNAME")),
        index=index,
        mtu=int(_attr(link, "IFLA_MTU")),
        addresses=addresses,
    )


def native_ipv4_route(ipr: IPRoute, ignore_device: str) -> str | None:
    """A description of the IPv4 default route, if the namespace has one not via our TUN."""
    ignore = link_index(ipr, ignore_device)
    for route in ipr.get_routes(family=socket.AF_INET, table=254):
        if route["dst_len"] != 0:
            continue
        oif = _attr(route, "RTA_OIF")
        if oif is not None and oif == ignore:
            continue
        gateway = _attr(route, "RTA_GATEWAY")
        device = "?"
        if oif is not None:
            device = str(_attr(ipr.get_links(oif)[0], "IFLA_IFNAME"))
        return f"default via {gateway} dev {device}" if gateway else f"default dev {device}"
    return None


def delete_link(ipr: IPRoute, name: str) -> bool:
    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
    return True


def configure_tun(
    ipr: IPRoute,
    name: str,
    clat_v4: str,
    clat_v6: str,
    ipv4_mtu: int,
    device_mtu: int,
    split_default: bool,
) -> None:
    """Address, MTU and routes of the TUN: the pod's IPv4 leaves through it, CLAT-v6 comes back."""
    index = link_index(ipr, name)
    if index is None:
        raise NetconfError(f"TUN device {name} vanished")
    # No link-local address on the TUN (addr_gen_mode 1 = none, set before "up"): the kernel then
    # sends no ND/MLD into it, which the translator could only drop. Netlink, not /proc/sys,
    # which is read-only in an unprivileged container.
    ipr.link(
        "set",
        index=index,
        IFLA_AF_SPEC={"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]},
    )
    ipr.link("set", index=index, mtu=device_mtu, state="up")
    # RFC 7335: 192.0.0.1/32 is the host's IPv4 address behind a CLAT
    ipr.addr("add", index=index, address=clat_v4, prefixlen=32)
    metrics = {"RTAX_MTU": ipv4_mtu, "RTAX_ADVMSS": ipv4_mtu - TCP_IPV4_HEADERS}
    # With --force a native default route may exist: two /1 routes win by prefix length
    # without touching it (and vanish with the device).
    defaults = [("0.0.0.0", 1), ("128.0.0.0", 1)] if split_default else [("0.0.0.0", 0)]
    for dst, length in defaults:
        ipr.route("replace", dst=dst, dst_len=length, oif=index, prefsrc=clat_v4, metrics=metrics)
    ipr.route("replace", dst=clat_v6, dst_len=128, oif=index, family=socket.AF_INET6)


def tun_routes_present(ipr: IPRoute, name: str, clat_v6: str) -> bool:
    """The readiness check: the device is up and both routes are in place."""
    index = link_index(ipr, name)
    if index is None:
        return False
    v4 = any(
        _attr(r, "RTA_OIF") == index and r["dst_len"] <= 1
        for r in ipr.get_routes(family=socket.AF_INET, table=254)
    )
    v6 = any(
        _attr(r, "RTA_OIF") == index
        and r["dst_len"] == 128
        and ipaddress.IPv6Address(_attr(r, "RTA_DST")) == ipaddress.IPv6Address(clat_v6)
        for r in ipr.get_routes(family=socket.AF_INET6, table=254)
    )
    return v4 and v6


# ---- sysctls ---------------------------------------------------------------------------------


def sysctl_path(key: str) -> Path:
    """Keys are /proc/sys paths ("net/ipv6/conf/all/forwarding"): interface names may hold dots."""
    if ".." in key.split("/") or key.startswith("/"):
        raise ValueError(f"bad sysctl key {key!r}")
    return PROC_SYS / key


def read_sysctl(key: str) -> str:
    return sysctl_path(key).read_text().strip()


def write_sysctl(key: str, value: str) -> None:
    sysctl_path(key).write_text(value)


def read_only(exc: OSError) -> bool:
    """/proc/sys is mounted read-only in containers that are not privileged."""
    return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def plan_ipv6_forwarding(ipr: IPRoute, sysctls: SysctlChanges, uplink: str) -> None:
    """Plan IPv6 forwarding on (translated packets come in on the TUN and leave on the uplink)
    so that nothing else of the namespace behaves differently, and restoring puts it all back.

    A namespace that forwards already (a node routing for its pods) is left as it is. Otherwise:
    - writing all/forwarding sets `default` and every device to the same value, and restoring it
      sets them all back to 0: the ones that were 1 are recorded first (so restored last);
    - with forwarding on, accept_ra=1 ignores router advertisements (their processing, RFC 4861
      §6.3.4, is a host's, not a router's), and switching it on purges the RA-learned default
      routes of every device whose accept_ra is not 2. So accept_ra=2 (accept even when
      forwarding) goes in first, on the uplink and on every device holding routes from RAs.
    """
    if read_sysctl(IPV6_FORWARDING) == "1":
        return
    forwarding_off = []
    for device in sorted(p.name for p in (PROC_SYS / "net/ipv6/conf").iterdir()):
        key = f"net/ipv6/conf/{device}/forwarding"
        if device == "all":
            continue
        if read_sysctl(key) == "1":
            sysctls.keep(key)
        elif device != "default":
            forwarding_off.append(device)
    learning = {uplink}
    for route in ipr.get_routes(family=socket.AF_INET6, table=254):
        oif = _attr(route, "RTA_OIF")
        if route["proto"] == RTPROT_RA and oif is not None:
            learning.add(str(_attr(ipr.get_links(oif)[0], "IFLA_IFNAME")))
    for device in sorted(learning.intersection(forwarding_off)):
        key = f"net/ipv6/conf/{device}/accept_ra"
        if read_sysctl(key) == "1":
            # Pods rarely learn routes from RAs (the CNI sets them), so this one is optional.
            sysctls.plan(key, "2", if_read_only="routes learned from RAs may expire")
    sysctls.plan(IPV6_FORWARDING, "1")


class SysctlChanges:
    """Sysctls we changed, with their original values, restorable in reverse order."""

    def __init__(self, originals: Iterable[tuple[str, str]] = ()) -> None:
        self.originals: dict[str, str] = dict(originals)
        self.wanted: dict[str, str] = {}
        self.optional: dict[str, str] = {}  # key -> what is lost if it cannot be written

    def plan(self, key: str, value: str, if_read_only: str | None = None) -> bool:
        """Remember `key`'s original value if it differs from `value`; True if it will change.

        Planning before applying lets the caller record the originals somewhere safe first.
        `if_read_only` makes the change optional: what the pod loses when /proc/sys is
        read-only. A required change that cannot be written ends setup with NetconfError.
        """
        current = read_sysctl(key)
        if current == value:
            return False
        self.originals.setdefault(key, current)
        self.wanted[key] = value
        if if_read_only is not None:
            self.optional[key] = if_read_only
        return True

    def keep(self, key: str) -> None:
        """Record `key`'s value without changing it, so `restore` writes it back: for a value
        that another key's change (or its restore) overwrites as a side effect."""
        self.originals.setdefault(key, read_sysctl(key))

    def apply(self) -> list[str]:
        """Write the planned values; return warnings for optional ones that could not be."""
        warnings = []
        for key, value in self.wanted.items():
            try:
                write_sysctl(key, value)
            except OSError as exc:
                if not read_only(exc):
                    raise
                self.originals.pop(key, None)
                if key in self.optional:
                    lost = self.optional[key]
                    warnings.append(f"cannot set {key}={value} ({exc.strerror}): {lost}")
                    continue
                dotted = key.replace("/", ".")
                raise NetconfError(
                    f"{dotted} must be {value} and /proc/sys is read-only here: run the clat "
                    f"container privileged, or have the kubelet set it (pod "
                    f"securityContext.sysctls, allowed with --allowed-unsafe-sysctls; the "
                    f"operator adds it in capabilities mode)"
                ) from None
        return warnings

    def restore(self) -> list[str]:
        """Put every original value back (newest change first); return the keys that failed."""
        failed = []
        for key, value in reversed(list(self.originals.items())):
            try:
                write_sysctl(key, value)
            except OSError:
                failed.append(key)
        self.originals.clear()
        return failed

    def serialize(self) -> str:
        """The originals, "key=value ...": the record kept in the nftables table."""
        return " ".join(f"{k}={v}" for k, v in self.originals.items())

    def describe_changes(self) -> str:
        """What `apply` changed, "key was->now ..."; "none" when nothing."""
        return (
            " ".join(
                f"{k} {v}->{self.wanted[k]}" for k, v in self.originals.items() if k in self.wanted
            )
            or "none"
        )

    def describe_restore(self) -> str:
        """What `restore` will change, "key now->original ..."; "none" when nothing."""
        parts = []
        for key, value in self.originals.items():
            try:
                now = read_sysctl(key)
            except (OSError, ValueError):
                now = "?"
            parts.append(f"{key} {now}->{value}")
        return " ".join(parts) or "none"

    @classmethod
    def parse(cls, text: str) -> SysctlChanges:
        pairs = []
        for item in text.split():
            key, sep, value = item.partition("=")
            if sep and key.startswith("net/") and value.lstrip("-").isdigit():
                pairs.append((key, value))
        return cls(pairs)
