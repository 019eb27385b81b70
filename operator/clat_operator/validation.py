"""Values of the clat.io/ annotations (and the same settings cluster-wide), checked with the stdlib
and the translator's pure core (the RFC 6052 rules, shared with the sidecar).

Each check returns the normalised value or raises ValueError with a message that says what is
allowed; the caller adds the annotation name and the bad value.
"""

from __future__ import annotations

import ipaddress

from clat_translator.xlat import rfc6052

# The IPv4 MTU of the clat route. The IPv6 path needs 20 bytes more (RFC 7915 §4: the IPv6
# header replaces a 20-byte IPv4 header), and IPv6 links carry at least 1280 (RFC 8200 §5).
MTU_MIN = 1280 - 20
MTU_MAX = 65535 - 20
BOOLEAN_VALUES = ("true", "false")
# The sidecar's --datapath values (clat_translator.cli.DATAPATHS; the seam test holds them equal).
DATAPATH_VALUES = ("auto", "kernel", "userspace")
# How a pod gets its CLAT: its own clat sidecar, or the node's clat-node agent.
MODE_VALUES = ("sidecar", "node")


def boolean(value: str) -> bool:
    if value not in BOOLEAN_VALUES:
        raise ValueError('allowed: "true" or "false"')
    return value == "true"


def datapath(value: str) -> str:
    """Which data path the sidecar uses: the tc-eBPF kernel path, the userspace one, or auto."""
    if value.strip() not in DATAPATH_VALUES:
        raise ValueError(f"allowed: {', '.join(DATAPATH_VALUES)}")
    return value.strip()


def mode(value: str) -> str:
    """sidecar (the pod's own clat container) or node (the node agent serves the pod)."""
    if value.strip() not in MODE_VALUES:
        raise ValueError(f"allowed: {', '.join(MODE_VALUES)}")
    return value.strip()


def plat_prefix(value: str) -> ipaddress.IPv6Network:
    """An RFC 6052 prefix (rfc6052.parse_prefix: the sidecar's --plat-prefix applies the same)."""
    return rfc6052.parse_prefix(value)


def mtu(value: str) -> int:
    """The IPv4 route MTU through the CLAT, as a decimal number."""
    text = value.strip()
    if not text.isdigit() or not MTU_MIN <= int(text) <= MTU_MAX:
        raise ValueError(
            f"allowed: a whole number from {MTU_MIN} to {MTU_MAX} (the IPv4 MTU of the clat "
            f"route; the IPv6 path adds 20 bytes and IPv6 links carry at least 1280)"
        )
    return int(text)


def v6_address(value: str, plat: ipaddress.IPv6Network | None = None) -> ipaddress.IPv6Address:
    """A unicast IPv6 address that the network routes to the pod (RFC 6877 §6.3 CLAT address)."""
    try:
        address = ipaddress.IPv6Address(value.strip())
    except ValueError:
        raise ValueError(
            "allowed: one IPv6 address without a prefix length, e.g. 2001:db8:1::c1a7"
        ) from None
    if any(address in bad for bad, _ in rfc6052.NOT_UNICAST):
        raise ValueError(
            "allowed: a global or unique-local unicast address "
            "(not IPv4-mapped, link-local, multicast, :: or ::1)"
        )
    if plat is not None and address in plat:
        raise ValueError(
            f"it lies inside the PLAT prefix {plat}; the CLAT address must be outside it"
        )
    return address
