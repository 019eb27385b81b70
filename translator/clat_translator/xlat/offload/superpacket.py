"""Super-packets: translation of what an offloading TUN hands over (virtio-net header + packet).

With IFF_VNET_HDR and TUNSETOFFLOAD the kernel gives the TUN whole TSO/USO super-packets (up to
64 KB of TCP or UDP payload behind one IP header, cut into `gso_size` pieces later) and leaves
transport checksums unfinished (NEEDS_CSUM: the checksum field holds the pseudo-header sum).
Translating such a packet is one header rewrite however many segments it carries; the kernel
segments what we write back, or hands it whole to the receiving socket.

Pure, no I/O. A frame is a virtio-net header and one IP packet (vnet.py).
`OffloadTranslator.fast` rewrites the plain cases (TCP/UDP, no IPv4 options or IPv6 extension
headers, a plain address pair, segments that fit the MTUs); everything else takes `fallback`:
the super-packet is cut into segments (segment.py), checksums finished, and each segment goes
through `Translator.translate`, the reference. After segmentation both give the bytes
`translate` gives for each segment (tests/offload proves it), with the one liberty RFC 6864 §4.1
allows: the IPv4 Identification of atomic (DF) datagrams, which the kernel numbers per segment
where the reference writes 0.
"""

from __future__ import annotations

import struct

from ..checksum import fold16, update
from ..context import DF_LIMIT
from ..rewrite import IP6_HEAD, ipv4_header
from ..translator import Translator
from .segment import finish_checksum, segment
from .vnet import (
    BAD_VNET_HEADER,
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    NO_VNET_HDR,
    TCP,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    UDP,
    VNET_HDR,
    VNET_HDR_LEN,
    Frame,
)

# protocol -> (checksum offset in the transport header, IPv4 GSO type, IPv6 GSO type)
_L4 = {TCP: (16, GSO_TCPV4, GSO_TCPV6), UDP: (6, GSO_UDP_L4, GSO_UDP_L4)}
_IP4 = struct.Struct("!BBHHHBB")  # from octet 0: version/IHL, TOS, total, ID, flags, TTL, proto
_IP6 = struct.Struct("!IHBB")  # from octet 0: version/TC/flow, payload length, next header, hop


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
            c = fold16(old + delta)
            vnet = VNET_HDR.pack(
                flags, gso_out, hdr_len + 20 if hdr_len else 0, gso_size if gso else 0, 40, at
            )
        else:
            if proto == UDP and not old:
                return None  # §4.5: a zero UDP checksum; the reference computes one
            c = update(old, delta)  # §4.5, RFC 1624 eqn. 3
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
                c = fold16(old + delta)
                vnet = VNET_HDR.pack(flags, 0, 0, 0, 20, at)
            else:
                # §5.5, RFC 1624; a zero UDP checksum stays zero: IPv4 reads "none" (RFC 768)
                c = old
                if old or proto == TCP:
                    c = update(old, delta)
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
                fold16(seed).to_bytes(2, "big"),
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
            l4[13] &= ~(TCP_FIN | TCP_PSH) & 0xFF  # only the last segment keeps FIN and PSH
            seq = (int.from_bytes(l4[4:8], "big") + (segments - 1) * gso_size) & 0xFFFFFFFF
            tail_l4[4:8] = seq.to_bytes(4, "big")
            tail_l4[13] &= ~TCP_CWR & 0xFF  # CWR only on the first segment
        else:
            l4[4:6] = head_len.to_bytes(2, "big")
            tail_l4[4:6] = tail_len.to_bytes(2, "big")
        # The pseudo-header sum covers the transport length: move it to each part's length.
        l4[at : at + 2] = fold16(seed + (head_len - old_len) % 0xFFFF).to_bytes(2, "big")
        tail_l4[at : at + 2] = fold16(seed + (tail_len - old_len) % 0xFFFF).to_bytes(2, "big")
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
