"""Address translation: RFC 6052 (pool6) and RFC 7757 (EAM table), on 4- and 16-byte strings."""

from __future__ import annotations

import ipaddress

from . import rfc6052
from .config import XlatConfig, parse_pool6

# Jool's implicit denylist: IPv4 ranges that never translate through pool6 (RFC 6890 "this
# network", loopback, link-local, multicast, reserved + limited broadcast).
RESERVED4 = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")


class _Eam:
    __slots__ = ("p4", "n4", "p6", "n6", "shift", "mask4")

    def __init__(self, v4: ipaddress.IPv4Network, v6: ipaddress.IPv6Network) -> None:
        self.p4 = int(v4.network_address)
        self.n4 = v4.prefixlen
        self.p6 = int(v6.network_address)
        self.n6 = v6.prefixlen
        self.mask4 = (1 << (32 - self.n4)) - 1
        # RFC 7757 §3.3: the IPv4 suffix follows the IPv6 prefix immediately.
        self.shift = 128 - self.n6 - (32 - self.n4)


def _table(keyed: list[tuple[int, int, _Eam]]) -> list[tuple[int, dict[int, _Eam]]]:
    """Group (length, network, entry) by prefix length, longest first (longest match wins)."""
    by_len: dict[int, dict[int, _Eam]] = {}
    for length, net, entry in keyed:
        by_len.setdefault(length, {}).setdefault(net, entry)  # first duplicate wins
    return sorted(by_len.items(), key=lambda item: -item[0])


class AddressMapper:
    """Both directions of the stateless address mapping, EAM first (RFC 7757 §3.3)."""

    def __init__(self, config: XlatConfig) -> None:
        entries = [
            _Eam(ipaddress.IPv4Network(v4), ipaddress.IPv6Network(v6)) for v4, v6 in config.eamt
        ]
        self._by4 = _table([(e.n4, e.p4, e) for e in entries])
        self._by6 = _table([(e.n6, e.p6, e) for e in entries])
        self.has_eam = bool(entries)
        deny = [ipaddress.IPv4Network(p) for p in config.denylist4]
        if config.local_ipv4 is not None:
            deny.append(ipaddress.IPv4Network(config.local_ipv4))
        self._deny = [(int(n.network_address), int(n.netmask)) for n in deny]
        reserved = [ipaddress.IPv4Network(p) for p in RESERVED4]
        self._reserved = [(int(n.network_address), int(n.netmask)) for n in reserved]
        self.set_pool6(config.pool6)

    def set_pool6(self, pool6: str | ipaddress.IPv6Network | None) -> None:
        net = parse_pool6(pool6)
        self.pool6_len = net.prefixlen if net else 0
        self.pool6_int = int(net.network_address) if net else 0
        self.has_pool6 = net is not None

    # -- RFC 7757 ---------------------------------------------------------------------------

    def eam4(self, a4: int) -> int | None:
        """RFC 7757 §3.3: IPv4 -> IPv6 through the longest matching EAM, or None."""
        for length, nets in self._by4:
            e = nets.get(a4 & ~((1 << (32 - length)) - 1) & 0xFFFFFFFF)
            if e is not None:
                return e.p6 | ((a4 & e.mask4) << e.shift)
        return None

    def eam6(self, a6: int) -> int | None:
        """RFC 7757 §3.3: IPv6 -> IPv4 through the longest matching EAM, or None."""
        for length, nets in self._by6:
            e = nets.get(a6 >> (128 - length) << (128 - length))
            if e is not None:
                return e.p4 | ((a6 >> e.shift) & e.mask4)
        return None

    def in_eam4(self, a4: int) -> bool:
        return self.eam4(a4) is not None

    # -- RFC 6052 ---------------------------------------------------------------------------

    def denied4(self, a4: int, reserved: bool = True) -> bool:
        """denylist4, the reserved ranges and local_ipv4 never use pool6 (Jool's denylist4);
        `reserved=False` leaves the reserved ranges out (the source of an ICMP error)."""
        if reserved and any(a4 & mask == net for net, mask in self._reserved):
            return True
        return any(a4 & mask == net for net, mask in self._deny)

    def embed(self, a4: int, reserved: bool = True) -> int | None:
        """RFC 6052 §2.2: IPv4 -> IPv4-embedded IPv6 address; u-octet and suffix zero."""
        if not self.has_pool6 or self.denied4(a4, reserved):
            return None
        return rfc6052.embed_int(self.pool6_int, self.pool6_len, a4)

    def in_pool6(self, a6: int) -> bool:
        """Whether an IPv6 address is inside the pool6 prefix (whatever it embeds)."""
        n = self.pool6_len
        return self.has_pool6 and (a6 >> (128 - n)) == (self.pool6_int >> (128 - n))

    def extract(self, a6: int) -> int | None:
        """RFC 6052 §2.2: the IPv4 address embedded in a pool6 address (u-octet ignored)."""
        n = self.pool6_len
        if not self.has_pool6 or (a6 >> (128 - n)) != (self.pool6_int >> (128 - n)):
            return None
        a4 = rfc6052.extract_int(a6, n)
        return None if self.denied4(a4) else a4

    # -- both, on bytes ---------------------------------------------------------------------

    def to6(
        self, a4: bytes, use_eam: bool = True, reserved: bool = True
    ) -> tuple[bytes, bool] | None:
        """Translate a 4-byte address: (16-byte address, came from an EAM) or None."""
        v4 = int.from_bytes(a4, "big")
        if use_eam and self.has_eam:
            v6 = self.eam4(v4)
            if v6 is not None:
                return v6.to_bytes(16, "big"), True
        v6 = self.embed(v4, reserved)
        return None if v6 is None else (v6.to_bytes(16, "big"), False)

    def to4(self, a6: bytes) -> tuple[bytes, bool] | None:
        """Translate a 16-byte address: (4-byte address, came from an EAM) or None."""
        v6 = int.from_bytes(a6, "big")
        if self.has_eam:
            v4 = self.eam6(v6)
            if v4 is not None:
                return v4.to_bytes(4, "big"), True
        v4 = self.extract(v6)
        return None if v4 is None else (v4.to_bytes(4, "big"), False)
