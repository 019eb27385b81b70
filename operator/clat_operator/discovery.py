"""The PLAT prefix as the cluster's DNS64 announces it: RFC 7050, once, at the operator's start.

Sidecars started with this prefix come up without their own discovery round trip; they
still re-check it themselves. Any failure here just means "let the sidecars discover".
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

logger = logging.getLogger(__name__)

WELL_KNOWN_NAME = "ipv4only.arpa."
# RFC 7050 §2.2: the well-known IPv4 addresses that ipv4only.arpa resolves to.
WELL_KNOWN_IPV4 = frozenset(
    {ipaddress.IPv4Address("192.0.0.170"), ipaddress.IPv4Address("192.0.0.171")}
)
# RFC 7050 §3 asks to try the lengths from the longest one.
_LENGTHS = (96, 64, 56, 48, 40, 32)


def embedded_ipv4(address: ipaddress.IPv6Address, length: int) -> ipaddress.IPv4Address:
    """RFC 6052 §2.2: the IPv4 address after a `length`-bit prefix (skipping octet 8)."""
    raw = address.packed
    octets = [raw[i] for i in range(length // 8, 16) if i != 8][:4]
    return ipaddress.IPv4Address(bytes(octets))


def prefix_from_address(address: ipaddress.IPv6Address) -> ipaddress.IPv6Network | None:
    """The prefix under which a well-known address is embedded (RFC 7050 §3), if any."""
    for length in _LENGTHS:
        if embedded_ipv4(address, length) not in WELL_KNOWN_IPV4:
            continue
        raw = address.packed
        suffix_start = 16 if length == 96 else length // 8 + 5  # 4 IPv4 octets + the u octet
        if raw[8] != 0 or any(raw[suffix_start:]):
            continue  # RFC 6052 §2.2: u octet and suffix are zero
        return ipaddress.IPv6Network((address, length), strict=False)
    return None


def prefixes_from_answers(addresses: Sequence[str]) -> list[ipaddress.IPv6Network]:
    found: list[ipaddress.IPv6Network] = []
    for text in addresses:
        prefix = prefix_from_address(ipaddress.IPv6Address(text))
        if prefix is not None and prefix not in found:
            found.append(prefix)
    return found


async def discover_plat_prefix(
    nameservers: Sequence[str] = (),
    port: int = 53,
    timeout: float = 3.0,
) -> str:
    """AAAA ipv4only.arpa through the resolvers of /etc/resolv.conf (or `nameservers`).

    Returns the first prefix found (RFC 7050 §3: several may exist; sidecars may find more),
    or "" when there is no DNS64 or no answer in time.
    """
    try:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration:
        logger.info("PLAT prefix discovery skipped: no resolver configured")
        return ""
    if nameservers:
        resolver.nameservers = list(nameservers)
    resolver.port = port
    resolver.lifetime = timeout
    try:
        answer = await resolver.resolve(WELL_KNOWN_NAME, dns.rdatatype.AAAA, search=False)
    except (dns.exception.DNSException, OSError) as e:
        logger.info(
            f"PLAT prefix discovery found nothing ({type(e).__name__}: {e}); "
            "the sidecars will discover it"
        )
        return ""
    prefixes = prefixes_from_answers([rr.address for rr in answer])
    if not prefixes:
        logger.info("PLAT prefix discovery: ipv4only.arpa AAAA answers embed no well-known address")
        return ""
    servers = ",".join(str(s) for s in resolver.nameservers)
    logger.info(f"PLAT prefix discovered (RFC 7050 via {servers}): {', '.join(map(str, prefixes))}")
    return str(prefixes[0])
