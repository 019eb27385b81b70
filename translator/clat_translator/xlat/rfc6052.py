"""RFC 6052 IPv4-embedded IPv6 addresses, and RFC 7050's search for the prefix. Pure, stdlib only.

The one owner of these rules: the core (XlatConfig, AddressMapper), the sidecar's flags and
discovery, and the operator's admission checks and discovery all call this module, so a prefix
one of them accepts is a prefix every other one accepts.

A prefix is an `ipaddress.IPv6Network`; `parse_prefix` turns text into one (once, at the edge)
and accepts an IPv6Network as it is, after the same checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

# RFC 6052 §2.2: the only prefix lengths an IPv4-embedded IPv6 address may use.
PREFIX_LENGTHS: tuple[int, ...] = (32, 40, 48, 56, 64, 96)
# RFC 6052 §2.1: the Well-Known Prefix.
WELL_KNOWN_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")

# RFC 7050 §2.2: the name a DNS64 synthesises AAAA records for, and its two A records.
WELL_KNOWN_NAME = "ipv4only.arpa."
WELL_KNOWN_IPV4: tuple[ipaddress.IPv4Address, ...] = (
    ipaddress.IPv4Address("192.0.0.170"),
    ipaddress.IPv4Address("192.0.0.171"),
)
_WELL_KNOWN_INTS = frozenset(int(a) for a in WELL_KNOWN_IPV4)

_U_OCTET_MASK = 0xFF << 56  # RFC 6052 §2.2: bits 64-71 of the address
# Not unicast prefixes a NAT64 can be reached through (the operator's policy since its start).
NOT_UNICAST: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (ipaddress.IPv6Network("::ffff:0:0/96"), "IPv4-mapped"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
    (ipaddress.IPv6Network("::/127"), "unspecified or loopback"),
)


class PrefixError(ValueError):
    """A prefix RFC 6052 (or the unicast policy) refuses; the message says what is allowed.

    The message does not repeat the value: the caller names the setting and the value.
    """


def lengths_text() -> str:
    """'/32, /40, /48, /56, /64, /96', for messages."""
    return ", ".join(f"/{n}" for n in PREFIX_LENGTHS)


def parse_prefix(value: str | ipaddress.IPv6Network) -> ipaddress.IPv6Network:
    """A PLAT prefix from text (or a network, checked the same way). Raises PrefixError.

    RFC 6052 §2.2: length 32/40/48/56/64/96 and bits 64-71 (the u-octet) zero; no bits set
    after the length; and unicast: not IPv4-mapped, link-local, multicast, :: or ::1.
    """
    if isinstance(value, ipaddress.IPv6Network):
        network = value
    elif isinstance(value, str):
        network = _from_text(value)
    else:
        raise PrefixError(f"not an IPv6 prefix; allowed: text such as {WELL_KNOWN_PREFIX}")
    if network.prefixlen not in PREFIX_LENGTHS:
        raise PrefixError(f"RFC 6052 allows prefix lengths {lengths_text()} only")
    if int(network.network_address) & _U_OCTET_MASK:
        raise PrefixError("RFC 6052 §2.2: bits 64-71 (the u-octet) of the prefix must be zero")
    for bad, what in NOT_UNICAST:
        if network.overlaps(bad):
            raise PrefixError(
                f"it overlaps {bad} ({what}); allowed: a global or unique-local unicast prefix "
                "(not mapped, link-local or multicast)"
            )
    return network


def _from_text(text: str) -> ipaddress.IPv6Network:
    stripped = text.strip()
    try:
        network = ipaddress.IPv6Network(stripped, strict=True)
    except ipaddress.NetmaskValueError:
        raise PrefixError(f"RFC 6052 allows prefix lengths {lengths_text()} only") from None
    except ValueError as e:
        if "has host bits set" in str(e):
            raise PrefixError(
                f"allowed: an IPv6 prefix with no bits set after its length (e.g. "
                f"{WELL_KNOWN_PREFIX})"
            ) from None
        raise PrefixError(
            f"not an IPv6 prefix; allowed: an IPv6 prefix such as {WELL_KNOWN_PREFIX} "
            f"(length {lengths_text()})"
        ) from None
    if "/" not in stripped:
        raise PrefixError(
            f"allowed: an IPv6 prefix with its length ({lengths_text()}), e.g. {WELL_KNOWN_PREFIX}"
        )
    return network


def parse_pool6(value: str | ipaddress.IPv6Network | None) -> ipaddress.IPv6Network | None:
    """parse_prefix, with None kept as None (the core's "EAM table only")."""
    return None if value is None else parse_prefix(value)


# ---- embedding and extraction (RFC 6052 §2.2), on integers for the packet core ----------------


def embed_int(prefix: int, length: int, ipv4: int) -> int:
    """The IPv4-embedded IPv6 address of `ipv4` under `prefix`/`length`; u-octet, suffix zero."""
    if length == 96:
        return prefix | ipv4
    if length == 64:
        return prefix | (ipv4 << 24)
    low = length - 32  # bits of the IPv4 address that go after the u-octet
    return prefix | ((ipv4 >> low) << 64) | ((ipv4 & ((1 << low) - 1)) << (56 - low))


def extract_int(address: int, length: int) -> int:
    """The IPv4 address embedded after a `length`-bit prefix (u-octet and suffix ignored)."""
    if length == 96:
        return address & 0xFFFFFFFF
    if length == 64:
        return (address >> 24) & 0xFFFFFFFF
    low = length - 32
    high = (address >> 64) & ((1 << (64 - length)) - 1)
    return (high << low) | ((address >> (56 - low)) & ((1 << low) - 1))


def embed(prefix: ipaddress.IPv6Network, ipv4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    """RFC 6052 §2.2: `ipv4` embedded in `prefix` (one of PREFIX_LENGTHS)."""
    _check_length(prefix.prefixlen)
    value = embed_int(int(prefix.network_address), prefix.prefixlen, int(ipv4))
    return ipaddress.IPv6Address(value)


def extract(address: ipaddress.IPv6Address, length: int) -> ipaddress.IPv4Address:
    """RFC 6052 §2.2: the IPv4 address embedded in `address` after a `length`-bit prefix."""
    _check_length(length)
    return ipaddress.IPv4Address(extract_int(int(address), length))


def _check_length(length: int) -> None:
    if length not in PREFIX_LENGTHS:
        raise PrefixError(f"RFC 6052 allows prefix lengths {lengths_text()} only")


# ---- RFC 7050 §3: the prefix from the AAAA answers for ipv4only.arpa ---------------------------


@dataclass(frozen=True)
class Found:
    """What the answers held: valid prefixes in answer order, and why others were refused."""

    prefixes: tuple[ipaddress.IPv6Network, ...]
    refused: tuple[str, ...]  # "ADDRESS: why", one per answer that gave no usable prefix


def prefix_of(address: ipaddress.IPv6Address) -> ipaddress.IPv6Network:
    """The prefix under which a well-known IPv4 address is embedded. Raises PrefixError.

    RFC 7050 §3: the well-known address is searched at every RFC 6052 position; an address
    where it sits at more than one is ambiguous (the answer for the other well-known address
    decides). The u-octet and the suffix must be zero (RFC 6052 §2.2), and the prefix must pass
    parse_prefix: a DNS64 answer is held to the same rules as a configured prefix.
    """
    value = int(address)
    positions = [n for n in PREFIX_LENGTHS if extract_int(value, n) in _WELL_KNOWN_INTS]
    if not positions:
        known = " or ".join(str(a) for a in WELL_KNOWN_IPV4)
        raise PrefixError(f"no well-known address ({known}) at any RFC 6052 position")
    if len(positions) > 1:
        where = ", ".join(f"/{n}" for n in positions)
        raise PrefixError(f"a well-known address at several positions ({where}): ambiguous")
    length = positions[0]
    if length < 96:
        embedded = embed_int(0, length, extract_int(value, length))
        rest = value & ((1 << (128 - length)) - 1)
        if rest != embedded:
            raise PrefixError(f"/{length}: RFC 6052 §2.2 wants the u-octet and the suffix zero")
    network = ipaddress.IPv6Network((value >> (128 - length) << (128 - length), length))
    try:
        return parse_prefix(network)
    except PrefixError as e:
        raise PrefixError(f"prefix {network}: {e}") from None


def search(addresses: Iterable[str | ipaddress.IPv6Address]) -> Found:
    """RFC 7050 §3 over every AAAA answer: distinct valid prefixes, and the reasons for the rest."""
    prefixes: list[ipaddress.IPv6Network] = []
    refused: list[str] = []
    for item in addresses:
        try:
            address = ipaddress.IPv6Address(item)
        except ValueError:
            refused.append(f"{item}: not an IPv6 address")
            continue
        try:
            prefix = prefix_of(address)
        except PrefixError as e:
            refused.append(f"{address}: {e}")
            continue
        if prefix not in prefixes:
            prefixes.append(prefix)
    return Found(tuple(prefixes), tuple(refused))
