"""Values of the clat.io/ annotations (and the same settings cluster-wide), checked with the stdlib.

Each check returns the normalised value or raises ValueError with a message that says what is
allowed; the caller adds the annotation name and the bad value.
"""

from __future__ import annotations

import ipaddress

# RFC 6052 §2.2: the prefix lengths an IPv4-embedded IPv6 address can have.
RFC6052_LENGTHS = (32, 40, 48, 56, 64, 96)
# The IPv4 MTU of the clat route. The IPv6 path needs 20 bytes more (RFC 7915 §4: the IPv6
# header replaces a 20-byte IPv4 header), and IPv6 links carry at least 1280 (RFC 8200 §5).
MTU_MIN = 1280 - 20
MTU_MAX = 65535 - 20
BOOLEAN_VALUES = ("true", "false")

_U_OCTET = ipaddress.IPv6Network("::ff00:0:0:0/72").network_address  # bits 64..71
_NOT_UNICAST = (
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("fe80::/10"),  # link-local: never routed to a NAT64
    ipaddress.IPv6Network("ff00::/8"),  # multicast
    ipaddress.IPv6Network("::/127"),  # unspecified and loopback
)


def boolean(value: str) -> bool:
    if value not in BOOLEAN_VALUES:
        raise ValueError('allowed: "true" or "false"')
    return value == "true"


def plat_prefix(value: str) -> ipaddress.IPv6Network:
    """An RFC 6052 prefix: IPv6, length 32/40/48/56/64/96, no host bits, bits 64-71 zero."""
    try:
        network = ipaddress.IPv6Network(value.strip(), strict=True)
    except ipaddress.NetmaskValueError:
        raise ValueError(f"allowed: an IPv6 prefix with length {_lengths()}") from None
    except ValueError as e:
        if "has host bits set" in str(e):
            raise ValueError(
                "allowed: an IPv6 prefix with no bits set after its length (e.g. 64:ff9b::/96)"
            ) from None
        raise ValueError(
            f"allowed: an IPv6 prefix such as 64:ff9b::/96 (length {_lengths()})"
        ) from None
    if "/" not in value:
        raise ValueError(
            f"allowed: an IPv6 prefix with its length ({_lengths()}), e.g. 64:ff9b::/96"
        )
    if network.prefixlen not in RFC6052_LENGTHS:
        raise ValueError(f"RFC 6052 allows prefix lengths {_lengths()} only")
    if int(network.network_address) & int(_U_OCTET):
        raise ValueError("RFC 6052 §2.2: bits 64-71 (the u octet) of the prefix must be zero")
    if any(network.overlaps(bad) for bad in _NOT_UNICAST):
        raise ValueError(
            "allowed: a global or unique-local unicast prefix (not mapped, link-local or multicast)"
        )
    return network


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
    if any(address in bad for bad in _NOT_UNICAST):
        raise ValueError(
            "allowed: a global or unique-local unicast address "
            "(not IPv4-mapped, link-local, multicast, :: or ::1)"
        )
    if plat is not None and address in plat:
        raise ValueError(
            f"it lies inside the PLAT prefix {plat}; the CLAT address must be outside it"
        )
    return address


def _lengths() -> str:
    return "/" + ", /".join(str(n) for n in RFC6052_LENGTHS)
