"""Internet checksum arithmetic (RFC 1071, RFC 1624).

The one's complement sum of 16-bit words is congruent to the big-endian integer of the data
modulo 0xFFFF (2**16 == 1 mod 0xFFFF), so a whole buffer is summed by one C-level
`int.from_bytes` and one `%`: no Python loop over the payload.
"""

MOD = 0xFFFF


def sum16(data: bytes | bytearray | memoryview) -> int:
    """One's complement sum of `data` (zero-padded to even length), as an int mod 0xFFFF."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8  # RFC 1071: an odd byte is padded with a zero octet on the right
    return n % MOD


def finish(total: int) -> int:
    """The checksum field for a one's complement sum given mod 0xFFFF (RFC 1071).

    A residue of 0 stands for the sum 0xFFFF, giving 0x0000: right whenever a pseudo-header is
    summed in (never all zero); ICMPv4 has none and uses `finish_icmp4`.
    """
    r = total % MOD
    return MOD - r if r else 0


def finish_icmp4(total: int, type_code: int, rest: bytes | memoryview) -> int:
    """`finish` for an ICMPv4 message, which has no pseudo-header: its words can all be zero
    (an Echo Reply with identifier, sequence number and data 0). Their sum is then 0, not 0xFFFF,
    and the field 0xFFFF (RFC 1071). `type_code` is the message's first word, `rest` what follows
    the checksum field (read only when the sum is 0 mod 0xFFFF)."""
    r = total % MOD
    if r:
        return MOD - r
    return 0 if type_code or any(rest) else 0xFFFF


def finish_udp(total: int) -> int:
    """As `finish`, but a computed 0x0000 is sent as 0xFFFF (RFC 768, RFC 8200 §8.1)."""
    r = total % MOD
    return MOD - r if r else 0xFFFF


def pseudo6(src_dst: bytes, next_header: int, length: int) -> int:
    """IPv6 pseudo-header sum (RFC 8200 §8.1), mod 0xFFFF."""
    return (int.from_bytes(src_dst, "big") + next_header + length) % MOD


def address_delta(old: bytes, new: bytes) -> int:
    """RFC 1624 eqn. 3 term ~m + m' for a pseudo-header whose addresses change old -> new.

    Length and protocol words of the IPv4 and IPv6 pseudo-headers sum the same, so only the
    addresses contribute. Result in [0, 0xFFFE].
    """
    return (int.from_bytes(new, "big") - int.from_bytes(old, "big")) % MOD


def fold16(total: int) -> int:
    """A non-negative sum below 2**32 folded to 16 bits with end-around carry (RFC 1071), not
    complemented: a partial checksum (the pseudo-header sum a NEEDS_CSUM field holds) plus a
    delta stays a partial checksum."""
    total = (total & 0xFFFF) + (total >> 16)
    return (total & 0xFFFF) + (total >> 16)


def update(old_checksum: int, delta: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with end-around carry."""
    c = (old_checksum ^ 0xFFFF) + delta
    c = (c & 0xFFFF) + (c >> 16)
    return c ^ 0xFFFF
