"""MTU policy: splitting translated packets into fragments (RFC 7915 §4.1, §5.1; RFC 8200 §4.5)."""

import struct

from .rewrite import IP6_HEAD, ipv4_header

FRAG6 = struct.Struct("!BBHI")  # next header, reserved, offset|M, identification
IPPROTO_FRAGMENT = 44


def ipv6_packets(
    tc: int,
    proto: int,
    hop: int,
    addrs6: bytes,
    data: bytes,
    frag: tuple[int, int, bool] | None,
    mtu: int,
) -> list[bytes]:
    """IPv6 packet(s) carrying `data`, each at most `mtu` bytes when a Fragment Header is used.

    `frag` is None for a packet that needs no Fragment Header, else (identification, offset in
    bytes, more fragments after this data). RFC 7915 §4.1: a Fragment Header only for IPv4
    fragments, or for DF-clear packets split to fit lowest_ipv6_mtu (RFC 8021: no atomic
    fragments); identification copied from IPv4, high 16 bits zero.
    """
    first_word = 0x60000000 | (tc << 20)
    if frag is None:
        return [IP6_HEAD.pack(first_word, len(data), proto, hop) + addrs6 + data]
    ident, offset, more = frag
    chunk = (mtu - 48) & ~7
    out = []
    pos, total = 0, len(data)
    while True:
        piece = data[pos : pos + chunk]
        last = pos + chunk >= total
        m = more if last else True
        out.append(
            IP6_HEAD.pack(first_word, len(piece) + 8, IPPROTO_FRAGMENT, hop)
            + addrs6
            + FRAG6.pack(proto, 0, (offset + pos) | m, ident)
            + piece
        )
        if last:
            return out
        pos += chunk


def ipv4_fragments(
    tos: int,
    ident: int,
    ttl: int,
    proto: int,
    addrs4: bytes,
    data: bytes,
    offset: int,
    more: bool,
    mtu: int,
) -> list[bytes]:
    """IPv4 fragments of `data` (RFC 791), each at most `mtu` bytes, DF clear."""
    chunk = (mtu - 20) & ~7
    out = []
    pos, total = 0, len(data)
    while True:
        piece = data[pos : pos + chunk]
        last = pos + chunk >= total
        mf = 0x2000 if (more or not last) else 0
        flags = mf | ((offset + pos) >> 3)
        out.append(ipv4_header(tos, 20 + len(piece), ident, flags, ttl, proto, addrs4) + piece)
        if last:
            return out
        pos += chunk
