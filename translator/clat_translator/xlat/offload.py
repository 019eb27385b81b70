"""Super-packets: translation of what an offloading TUN hands over (virtio-net header + packet).

With IFF_VNET_HDR and TUNSETOFFLOAD the kernel gives the TUN whole TSO/USO super-packets (up to
64 KB of TCP or UDP payload behind one IP header, cut into `gso_size` pieces later) and leaves
transport checksums unfinished (NEEDS_CSUM: the checksum field holds the pseudo-header sum).
Translating such a packet is one header rewrite however many segments it carries; the kernel
segments what we write back, or hands it whole to the receiving socket.

Pure, no I/O. A frame is the 10-byte `struct virtio_net_hdr` (little-endian on a TUN; virtio
1.x §5.1.6) followed by one IP packet. `OffloadTranslator.fast` rewrites the plain cases
(TCP/UDP, no IPv4 options or IPv6 extension headers, a plain address pair, segments that fit the
MTUs); everything else takes `fallback`: the super-packet is cut into segments here, checksums
finished, and each segment goes through `Translator.translate`, the reference. After
segmentation both give the bytes `translate` gives for each segment (tests/offload proves it),
with the one liberty RFC 6864 §4.1 allows: the IPv4 Identification of atomic (DF) datagrams,
which the kernel numbers per segment where the reference writes 0.
"""

from __future__ import annotations

import struct

from .checksum import finish, finish_udp, sum16
from .context import DF_LIMIT
from .rewrite import IP6_HEAD, ipv4_header
from .translator import Translator

VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size  # 10: the size TUNSETVNETHDRSZ is set to
F_NEEDS_CSUM = 0x01  # the L4 checksum field holds the pseudo-header sum; finish from csum_start
F_DATA_VALID = 0x02  # the checksum was verified (CHECKSUM_UNNECESSARY)
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 4, 5
GSO_ECN = 0x80  # TCP with CWR: the kernel keeps CWR on the first segment only
NO_VNET_HDR = bytes(VNET_HDR_LEN)

BAD_VNET_HEADER = "bad-vnet-header"  # a super-packet its virtio-net header does not describe
OFFLOAD_DROP_REASONS: frozenset[str] = frozenset({BAD_VNET_HEADER})

TCP, UDP = 6, 17
# protocol -> (checksum offset in the transport header, IPv4 GSO type, IPv6 GSO type)
_L4 = {TCP: (16, GSO_TCPV4, GSO_TCPV6), UDP: (6, GSO_UDP_L4, GSO_UDP_L4)}
_IP4 = struct.Struct("!BBHHHBB")  # from octet 0: version/IHL, TOS, total, ID, flags, TTL, proto
_IP6 = struct.Struct("!IHBB")  # from octet 0: version/TC/flow, payload length, next header, hop
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80
_IPV6_SKIPPABLE = (0, 43, 60)  # Hop-by-Hop, Routing, Destination Options (RFC 8200 §4)

Frame = list[bytes | memoryview]  # one writev vector: the virtio-net header, then the packet


class OffloadResult:
    """What became of one frame: `frames` to write to the TUN, each one writev vector.

    `segments` counts translated packets as they travel on a wire (a super-packet of 45
    segments counts 45); `back` the packets returned toward the sender's family (ICMP errors);
    `drops` holds one reason per refused segment; `offloaded` is True when the frame was
    translated whole, without segmentation or checksum work.
    """

    __slots__ = ("frames", "segments", "back", "drops", "offloaded")

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.segments = 0
        self.back = 0
        self.drops: list[str] = []
        self.offloaded = False

    def __repr__(self) -> str:
        return (
            f"OffloadResult(frames={len(self.frames)}, segments={self.segments}, "
            f"back={self.back}, drops={self.drops!r}, offloaded={self.offloaded})"
        )


def _fold(c: int) -> int:
    """One's complement fold of a non-negative sum to 16 bits (RFC 1071)."""
    c = (c & 0xFFFF) + (c >> 16)
    return (c & 0xFFFF) + (c >> 16)


def frame_bytes(frame: Frame) -> bytes:
    """A frame as one bytes object (for tests and diagnostics; the loop writes the vector)."""
    return b"".join(frame)


class OffloadTranslator:
    """Frames from an offloading TUN -> frames for it, around one `Translator` (the reference).

    It reads the Translator's address cache, so `update_pool6` on the Translator applies here
    at once. Not thread-safe, like the Translator.
    """

    def __init__(self, translator: Translator) -> None:
        self.translator = translator
        config = translator.config
        self._mtu6 = config.ipv6_mtu
        self._lowest6 = config.lowest_ipv6_mtu
        self._mtu4 = config.ipv4_mtu
        self._df_limit = DF_LIMIT  # RFC 7915 §5.1: 1260, fixed
        self._tc_mask = 0 if config.reset_traffic_class else 0xFF
        self._reset_tos = config.reset_tos
        self._new_tos = config.new_tos

    # ---- the whole contract ----------------------------------------------------------------

    def translate(
        self, frame: bytes | bytearray | memoryview, n: int | None = None
    ) -> OffloadResult:
        """Translate one frame (`frame[:n]`): whole when it can, else segment by segment."""
        mv = memoryview(frame)
        if n is None:
            n = len(mv)
        fast = self.fast(mv, n)
        if fast is None:
            return self.fallback(mv, n)
        result = OffloadResult()
        result.frames, result.segments = fast
        result.offloaded = True
        return result

    def fast(self, mv: memoryview, n: int) -> tuple[list[Frame], int] | None:
        """The frame translated whole, and its segment count; None: take `fallback`.

        The output frames hold views of `mv`: write them before `mv` is reused.
        """
        if n < VNET_HDR_LEN + 20:
            return None
        version = mv[VNET_HDR_LEN] >> 4
        if version == 4:
            return self.fast46(mv, n)
        if version == 6:
            return self.fast64(mv, n)
        return None

    # ---- RFC 7915 §4 on a super-packet: IPv4 -> IPv6 ----------------------------------------

    def fast46(self, mv: memoryview, n: int) -> tuple[list[Frame], int] | None:
        flags, gso, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(mv)
        vihl, tos, total, _, frag, ttl, proto = _IP4.unpack_from(mv, VNET_HDR_LEN)
        size = n - VNET_HDR_LEN
        # §4.1: no options, not a fragment (DF is the only flag allowed), TTL left to decrement
        if vihl != 0x45 or total != size or frag & 0xBFFF or ttl <= 1 or proto not in _L4:
            return None
        at, gso4, gso6 = _L4[proto]
        if size < 28 + (12 if proto == TCP else 0):
            return None
        if int.from_bytes(mv[10:30], "big") % 0xFFFF:
            return None  # a wrong header checksum: the reference drops it (RFC 1812 §5.2.2)
        entry = self.translator.plain_pair46(bytes(mv[22:30]))
        if entry is None:
            return None  # EAM hairpinning, denied or untranslatable: the reference decides
        addrs6, delta, _ = entry
        segments = 1
        seg6 = size + 20
        gso_out = GSO_NONE
        if gso:
            if (gso & 0x7F) != gso4 or not gso_size or not flags & F_NEEDS_CSUM:
                return None
            l4len = (mv[42] >> 4) << 2 if proto == TCP else 8
            payload = size - 20 - l4len
            if l4len < (20 if proto == TCP else 8) or payload <= 0:
                return None
            segments = -(-payload // gso_size)
            seg6 = 40 + l4len + min(gso_size, payload)
            gso_out = (gso & GSO_ECN) | gso6
        # §4.1 / RFC 8021: each segment fits the IPv6 MTU (DF set) or the minimum IPv6 MTU
        # (DF clear; bigger ones the reference fragments).
        if seg6 > (self._mtu6 if frag else self._lowest6):
            return None
        c_at = 30 + at
        old = (mv[c_at] << 8) | mv[c_at + 1]
        if flags & F_NEEDS_CSUM:
            if csum_start != 20 or csum_offset != at:
                return None
            # The field holds the pseudo-header sum, not complemented: add the address change
            # (§4.5; the length and protocol words sum the same in both pseudo-headers).
            c = _fold(old + delta)
            vnet = VNET_HDR.pack(
                flags, gso_out, hdr_len + 20 if hdr_len else 0, gso_size if gso else 0, 40, at
            )
        else:
            if proto == UDP and not old:
                return None  # §4.5: a zero UDP checksum; the reference computes one
            c = _fold((old ^ 0xFFFF) + delta) ^ 0xFFFF  # §4.5, RFC 1624 eqn. 3
            if not c and proto == UDP:
                c = 0xFFFF
            vnet = VNET_HDR.pack(flags & F_DATA_VALID, 0, 0, 0, 0, 0) if flags else NO_VNET_HDR
        head = b"".join(
            (
                IP6_HEAD.pack(
                    0x60000000 | ((tos & self._tc_mask) << 20), size - 20, proto, ttl - 1
                ),
                addrs6,
                mv[30:c_at],
                c.to_bytes(2, "big"),
            )
        )
        return [[vnet, head, mv[c_at + 2 : n]]], segments

    # ---- RFC 7915 §5 on a super-packet: IPv6 -> IPv4 ----------------------------------------

    def fast64(self, mv: memoryview, n: int) -> tuple[list[Frame], int] | None:
        flags, gso, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(mv)
        first, plen, proto, hop = _IP6.unpack_from(mv, VNET_HDR_LEN)
        size = n - VNET_HDR_LEN
        # §5.1: no extension headers, hop limit left to decrement
        if plen + 40 != size or hop <= 1 or proto not in _L4:
            return None
        at, gso4, gso6 = _L4[proto]
        if size < 48 + (12 if proto == TCP else 0):
            return None
        entry = self.translator.plain_pair64(bytes(mv[18:50]))
        if entry is None:
            return None
        addrs4, delta, _ = entry
        total = size - 20
        tos = self._new_tos if self._reset_tos else (first >> 20) & 0xFF
        c_at = 50 + at
        old = (mv[c_at] << 8) | mv[c_at + 1]
        if not gso:
            if total > self._mtu4:
                return None  # §5.1: Packet Too Big, or IPv4 fragments: the reference
            if flags & F_NEEDS_CSUM:
                if csum_start != 40 or csum_offset != at:
                    return None
                c = _fold(old + delta)
                vnet = VNET_HDR.pack(flags, 0, 0, 0, 20, at)
            else:
                # §5.5, RFC 1624; a zero UDP checksum stays zero: IPv4 reads "none" (RFC 768)
                c = old
                if old or proto == TCP:
                    c = _fold((old ^ 0xFFFF) + delta) ^ 0xFFFF
                    if not c and proto == UDP:
                        c = 0xFFFF
                vnet = VNET_HDR.pack(flags & F_DATA_VALID, 0, 0, 0, 0, 0) if flags else NO_VNET_HDR
            # §5.1: DF (and ID 0, RFC 6864) above 1260 bytes, else DF clear and a fresh ID
            ident, df = (0, 0x4000) if total > self._df_limit else (self._next_ident(), 0)
            head = b"".join(
                (
                    ipv4_header(tos, total, ident, df, hop - 1, proto, addrs4),
                    mv[50:c_at],
                    c.to_bytes(2, "big"),
                )
            )
            return [[vnet, head, mv[c_at + 2 : n]]], 1

        if (gso & 0x7F) != gso6 or not gso_size or not flags & F_NEEDS_CSUM:
            return None
        if csum_start != 40 or csum_offset != at or total > 65535:
            return None
        l4len = (mv[62] >> 4) << 2 if proto == TCP else 8
        payload = plen - l4len
        if l4len < (20 if proto == TCP else 8) or payload <= 0:
            return None
        segments = -(-payload // gso_size)
        if 20 + l4len + min(gso_size, payload) > self._mtu4:
            return None
        gso_out = (gso & GSO_ECN) | gso4
        seed = old + delta  # §5.5 on the pseudo-header sum (not complemented)
        last = payload - (segments - 1) * gso_size
        if 20 + l4len + gso_size <= self._df_limit or segments == 1 and total <= self._df_limit:
            # §5.1: every segment small enough for DF clear, with a fresh Identification (the
            # kernel numbers the segments from it)
            ident, df = self._next_ident(), 0
        elif segments == 1 or 20 + l4len + last > self._df_limit:
            ident, df = 0, 0x4000  # §5.1: DF above 1260 bytes; RFC 6864: ID unused
        else:
            # §5.1 wants DF on the full segments but not on a last one of 1260 bytes or less:
            # the full ones leave as one super-packet, the last on its own.
            return self._split_last(mv, n, segments, seed, tos, addrs4, l4len), segments
        vnet = VNET_HDR.pack(flags, gso_out, max(hdr_len - 20, 0), gso_size, 20, at)
        head = b"".join(
            (
                ipv4_header(tos, total, ident, df, hop - 1, proto, addrs4),
                mv[50:c_at],
                _fold(seed).to_bytes(2, "big"),
            )
        )
        return [[vnet, head, mv[c_at + 2 : n]]], segments

    def _split_last(
        self,
        mv: memoryview,
        n: int,
        segments: int,
        seed: int,
        tos: int,
        addrs4: bytes,
        l4len: int,
    ) -> list[Frame]:
        """Two frames, as the kernel would segment them: the full segments (DF) + the last."""
        flags, gso, hdr_len, gso_size, _, _ = VNET_HDR.unpack_from(mv)
        hop, proto = mv[17], mv[16]
        at = _L4[proto][0]
        size = n - VNET_HDR_LEN
        old_len = size - 40  # the transport length in the pseudo-header sum
        split = 50 + l4len + (segments - 1) * gso_size  # where the last segment's payload starts
        head_len = l4len + (segments - 1) * gso_size
        tail_len = n - split + l4len
        l4 = bytearray(mv[50 : 50 + l4len])
        tail_l4 = bytearray(l4)
        if proto == TCP:
            l4[13] &= ~(_TCP_FIN | _TCP_PSH) & 0xFF  # only the last segment keeps FIN and PSH
            seq = (int.from_bytes(l4[4:8], "big") + (segments - 1) * gso_size) & 0xFFFFFFFF
            tail_l4[4:8] = seq.to_bytes(4, "big")
            tail_l4[13] &= ~_TCP_CWR & 0xFF  # CWR only on the first segment
        else:
            l4[4:6] = head_len.to_bytes(2, "big")
            tail_l4[4:6] = tail_len.to_bytes(2, "big")
        # The pseudo-header sum covers the transport length: move it to each part's length.
        l4[at : at + 2] = _fold(seed + (head_len - old_len) % 0xFFFF).to_bytes(2, "big")
        tail_l4[at : at + 2] = _fold(seed + (tail_len - old_len) % 0xFFFF).to_bytes(2, "big")
        gso_out = (gso & GSO_ECN) | _L4[proto][1]
        full: Frame = [
            VNET_HDR.pack(flags, gso_out, max(hdr_len - 20, 0), gso_size, 20, at),
            ipv4_header(tos, 20 + head_len, 0, 0x4000, hop - 1, proto, addrs4) + l4,
            mv[50 + l4len : split],
        ]
        tail: Frame = [
            VNET_HDR.pack(flags, GSO_NONE, 0, 0, 20, at),
            ipv4_header(tos, 20 + tail_len, self._next_ident(), 0, hop - 1, proto, addrs4)
            + tail_l4,
            mv[split:n],
        ]
        return [full, tail]

    def _next_ident(self) -> int:
        return self.translator.next_ident()

    # ---- everything else: segments through the reference -------------------------------------

    def fallback(self, mv: memoryview, n: int) -> OffloadResult:
        """Cut a super-packet into segments, finish partial checksums, translate each one."""
        result = OffloadResult()
        if n < VNET_HDR_LEN:
            result.drops.append(BAD_VNET_HEADER)
            return result
        flags, gso, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(mv)
        packet = bytes(mv[VNET_HDR_LEN:n])
        if gso:
            pieces = segment(packet, gso, gso_size, csum_start if flags & F_NEEDS_CSUM else None)
        elif flags & F_NEEDS_CSUM:
            done = finish_checksum(packet, csum_start, csum_offset)
            pieces = None if done is None else [done]
        else:
            pieces = [packet]
        if pieces is None:
            result.drops.append(BAD_VNET_HEADER)
            return result
        translate = self.translator.translate
        for piece in pieces:
            r = translate(piece)
            if r.drop is not None:
                result.drops.append(r.drop)
            if r.out:
                result.segments += 1
            result.back += len(r.back)
            for p in (*r.out, *r.back):
                result.frames.append([NO_VNET_HDR, p])
        return result


# ---- software segmentation and checksums, as the kernel does them ------------------------------


def finish_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes | None:
    """Finish a NEEDS_CSUM checksum as the kernel's skb_checksum_help: the one's complement sum
    from `csum_start` to the end (the field holds the pseudo-header sum), 0 sent as 0xFFFF."""
    at = csum_start + csum_offset
    if at + 2 > len(packet) or csum_start < 20:
        return None
    c = finish_udp(sum16(packet[csum_start:]))
    return packet[:at] + c.to_bytes(2, "big") + packet[at + 2 :]


def _l4_start(packet: bytes) -> tuple[int, int] | None:
    """(offset of the transport header, protocol) of an IPv4 or IPv6 packet, or None."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        return (packet[0] & 0x0F) << 2, packet[9]
    if version != 6 or len(packet) < 40:
        return None
    nh, off = packet[6], 40
    while nh in _IPV6_SKIPPABLE:
        if off + 8 > len(packet):
            return None
        nh, off = packet[off], off + ((packet[off + 1] + 1) << 3)
    return off, nh


def segment(packet: bytes, gso: int, gso_size: int, csum_start: int | None) -> list[bytes] | None:
    """Cut a TSO/USO super-packet into the packets the kernel's GSO would send, checksums
    finished; None when the virtio-net header does not describe the packet. `csum_start`
    (None without NEEDS_CSUM) must point at the transport header."""
    found = _l4_start(packet)
    if found is None or not gso_size:
        return None
    l4, proto = found
    version = packet[0] >> 4
    base = gso & 0x7F
    wanted = {
        (4, TCP): GSO_TCPV4,
        (6, TCP): GSO_TCPV6,
        (4, UDP): GSO_UDP_L4,
        (6, UDP): GSO_UDP_L4,
    }.get((version, proto))
    if wanted is None or base != wanted or (csum_start is not None and l4 != csum_start):
        return None
    if proto == TCP:
        if len(packet) < l4 + 20:
            return None
        l4len = (packet[l4 + 12] >> 4) << 2
        at = 16
    else:
        l4len, at = 8, 6
    if l4len < (20 if proto == TCP else 8) or len(packet) < l4 + l4len:
        return None
    length = ((packet[2] << 8) | packet[3]) if version == 4 else 40 + ((packet[4] << 8) | packet[5])
    if length != len(packet):
        return None
    ip_head = bytearray(packet[:l4])
    l4_head = bytearray(packet[l4 : l4 + l4len])
    l4_head[at : at + 2] = b"\0\0"
    payload = packet[l4 + l4len :]
    count = max(1, -(-len(payload) // gso_size))
    addrs = packet[12:20] if version == 4 else packet[8:40]
    ident = (packet[4] << 8) | packet[5]
    seq = int.from_bytes(packet[l4 + 4 : l4 + 8], "big")
    tcp_flags = packet[l4 + 13] if proto == TCP else 0
    out = []
    for i in range(count):
        chunk = payload[i * gso_size : (i + 1) * gso_size]
        l4_length = l4len + len(chunk)
        if version == 4:
            ip_head[2:4] = (l4 + l4_length).to_bytes(2, "big")
            ip_head[4:6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")  # inet_gso_segment
            ip_head[10:12] = b"\0\0"
            ip_head[10:12] = finish(sum16(ip_head)).to_bytes(2, "big")
        else:
            ip_head[4:6] = (l4 - 40 + l4_length).to_bytes(2, "big")
        if proto == TCP:
            l4_head[4:8] = ((seq + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
            f = tcp_flags
            if i < count - 1:
                f &= ~(_TCP_FIN | _TCP_PSH)  # tcp_gso_segment: FIN and PSH on the last only
            if i > 0:
                f &= ~_TCP_CWR  # and CWR on the first only
            l4_head[13] = f & 0xFF
        else:
            l4_head[4:6] = l4_length.to_bytes(2, "big")
        l4_head[at : at + 2] = b"\0\0"
        pseudo = int.from_bytes(addrs, "big") + proto + l4_length
        s = pseudo + sum16(l4_head) + sum16(chunk)
        c = finish_udp(s) if proto == UDP else finish(s)
        l4_head[at : at + 2] = c.to_bytes(2, "big")
        out.append(bytes(ip_head) + bytes(l4_head) + chunk)
    return out


# ---- software GRO: one USO frame for a run of UDP datagrams -----------------------------------

MAX_COALESCED = 64  # datagrams per USO frame (UDP_MAX_SEGMENTS of older kernels)


class _Follow:
    """How the next datagram of a run looks before translation: the same bytes, but for the
    IPv4 Identification and header checksum (a partial UDP checksum depends only on the
    addresses and the length)."""

    __slots__ = ("run", "n", "start", "v6", "a", "b", "c")

    def __init__(self, run: _Run, source: memoryview, n: int) -> None:
        self.run = run
        self.n = n
        self.v6 = source[VNET_HDR_LEN] >> 4 == 6
        if self.v6:  # virtio-net header, IPv6 header, UDP header: all of it
            self.start = VNET_HDR_LEN + 48
            self.a, self.b, self.c = bytes(source[: self.start]), b"", b""
        else:  # all but the IPv4 Identification (14-15) and header checksum (20-21)
            self.start = VNET_HDR_LEN + 28
            self.a, self.b, self.c = bytes(source[:14]), bytes(source[16:20]), bytes(source[22:38])


class _Run:
    __slots__ = ("head", "payloads", "gso_size", "total", "closed")

    def __init__(self, head: bytes, payload: bytes | memoryview) -> None:
        self.head = head
        self.payloads = [payload]
        self.gso_size = len(payload)
        self.total = len(payload)
        self.closed = False


class UdpCoalescer:
    """Translated UDP datagrams of one flow and one size, read in one batch, leave as one USO
    frame: one write, and one packet through the forwarding path instead of many.

    The kernel cuts the frame back into exactly those datagrams (tests/offload proves it), as
    its own UDP GRO forwarding would. Only frames `OffloadTranslator.fast` made of a single
    datagram with a partial checksum are taken: their checksums are pseudo-header sums, so
    nothing about the payload is vouched for that the kernel did not vouch for. Datagrams of
    one flow stay in order; the caller flushes before it writes anything else of UDP.
    """

    def __init__(self) -> None:
        self._runs: dict[bytes, _Run] = {}
        self._done: list[_Run] = []  # runs a newer one of the same flow replaced: first out
        self._last: _Follow | None = None  # the run the next datagram may simply join
        # datagrams sent in USO frames of several, by the IP version they left with
        self.coalesced = {4: 0, 6: 0}

    @property
    def pending(self) -> bool:
        return bool(self._runs)

    def follow(self, source: memoryview, n: int) -> bool:
        """Take the datagram `source[:n]` (a frame read from the TUN, not translated) when it
        repeats the last one `add` took exactly: same flow, same size, same everything but the
        IPv4 Identification. It then translates to the same header, and only its payload is
        kept; False: translate it (`OffloadTranslator.fast`) and `add` the result."""
        last = self._last
        if last is None or n != last.n:
            return False
        run = last.run
        if run.closed or len(run.payloads) >= MAX_COALESCED:
            return False
        if len(run.head) + run.total + run.gso_size > 65535:
            return False
        if last.v6:
            if source[: last.start] != last.a:
                return False
        elif (
            source[:14] != last.a
            or source[16:20] != last.b
            or source[22:38] != last.c
            or int.from_bytes(source[10:30], "big") % 0xFFFF  # RFC 1812 §5.2.2: the reference
        ):
            return False
        run.payloads.append(source[last.start : n])
        run.total += run.gso_size
        return True

    def add(self, frame: Frame, source: memoryview | None = None, n: int = 0) -> bool:
        """Keep `frame` for a later USO frame; False: not a frame this can merge. With the
        frame it was translated from (`source[:n]`), `follow` can take the next ones."""
        if len(frame) != 3:
            return False
        vnet, head, payload = frame
        if len(vnet) != VNET_HDR_LEN or vnet[0] != F_NEEDS_CSUM or vnet[1] != GSO_NONE:
            return False
        head = bytes(head)
        if len(head) == 48 and head[6] == UDP:
            # IPv6: what does not change between the datagrams of a flow
            key = head[0:4] + head[6:44]
        elif len(head) == 28 and head[9] == UDP:
            key = head[0:2] + head[6:10] + head[12:24]  # IPv4: not the length, ID, checksum
        else:
            return False
        size = len(payload)
        if not size:
            return False
        run = self._runs.get(key)
        if run is not None:
            if (
                not run.closed
                and size <= run.gso_size
                and len(run.payloads) < MAX_COALESCED
                and len(head) + run.total + size <= 65535
            ):
                run.payloads.append(payload)
                run.total += size
                run.closed = size < run.gso_size  # a shorter datagram ends a run
                self._last = None if run.closed or source is None else _Follow(run, source, n)
                return True
            self._done.append(run)
        run = _Run(head, payload)
        self._runs[key] = run
        self._last = None if source is None else _Follow(run, source, n)
        return True

    def flush(self) -> list[Frame]:
        """Every pending run as frames to write now (a run of one as it came)."""
        runs = [*self._done, *self._runs.values()]
        self._runs = {}
        self._done = []
        self._last = None
        for run in runs:
            if len(run.payloads) > 1:
                self.coalesced[run.head[0] >> 4] += len(run.payloads)
        return [_uso_frame(run) for run in runs]


def _uso_frame(run: _Run) -> Frame:
    head = run.head
    l3 = len(head) - 8
    if len(run.payloads) == 1:
        return [VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, l3, 6), head, run.payloads[0]]
    udp_length = 8 + run.total
    first_length = 8 + run.gso_size
    seed = (head[l3 + 6] << 8) | head[l3 + 7]
    # the pseudo-header sum covers the UDP length: move it from the first datagram's to all
    seed = _fold(seed + (udp_length - first_length) % 0xFFFF)
    if l3 == 40:
        ip = head[:4] + udp_length.to_bytes(2, "big") + head[6:40]
    else:
        ip4 = bytearray(head[:20])
        ip4[2:4] = (20 + udp_length).to_bytes(2, "big")
        ip4[10:12] = b"\0\0"
        ip4[10:12] = finish(sum16(ip4)).to_bytes(2, "big")
        ip = bytes(ip4)
    udp = head[l3 : l3 + 4] + udp_length.to_bytes(2, "big") + seed.to_bytes(2, "big")
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_UDP_L4, l3 + 8, run.gso_size, l3, 6)
    return [vnet, ip + udp, *run.payloads]
