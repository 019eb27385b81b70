"""The PLAT prefix as the cluster's DNS64 announces it: RFC 7050, once, at the operator's start.

Sidecars started with this prefix come up without their own discovery round trip; they
still re-check it themselves. Any failure here just means "let the sidecars discover".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver
from clat_translator.xlat import rfc6052

logger = logging.getLogger(__name__)


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
        answer = await resolver.resolve(rfc6052.WELL_KNOWN_NAME, dns.rdatatype.AAAA, search=False)
    except (dns.exception.DNSException, OSError) as e:
        logger.info(
            f"PLAT prefix discovery found nothing ({type(e).__name__}: {e}); "
            "the sidecars will discover it"
        )
        return ""
    # RFC 7050 §3, held to the rules an annotation is held to (rfc6052.parse_prefix).
    found = rfc6052.search(rr.address for rr in answer)
    if found.refused:
        logger.info(f"PLAT prefix discovery refused: {'; '.join(found.refused)}")
    prefixes = found.prefixes
    if not prefixes:
        logger.info("PLAT prefix discovery found no usable prefix; the sidecars will discover it")
        return ""
    servers = ",".join(str(s) for s in resolver.nameservers)
    logger.info(f"PLAT prefix discovered (RFC 7050 via {servers}): {', '.join(map(str, prefixes))}")
    return str(prefixes[0])
