"""Software GRO: translated UDP datagrams of one flow leave the TUN as one USO frame.

Pure, no I/O: the caller writes what `udp` and `drain` hand back, when they say so (the flush
policy below lives here, beside the runs it keeps).
"""

from __future__ import annotations

from ..checksum import finish, fold16, sum16
from .vnet import F_NEEDS_CSUM, GSO_NONE, GSO_UDP_L4, UDP, VNET_HDR, VNET_HDR_LEN, Frame

MAX_COALESCED = 64  # datagrams per USO frame (UDP_MAX_SEGMENTS of older kernels)


class _Follow:
    """How the next datagram of a run looks before translation: the same bytes, but for the
    IPv4 Identification and header checksum (a partial UDP checksum depends only on the
    addresses and the length). IPv6: the whole of the virtio-net, IPv6 and UDP headers
    (`before_id`); IPv4: the bytes before the Identification, between it and the header
    checksum, and after the checksum up to the payload."""

    __slots__ = ("run", "n", "start", "v6", "before_id", "before_checksum", "after_checksum")

    def __init__(self, run: _Run, source: memoryview, n: int) -> None:
        self.run = run
        self.n = n
        self.v6 = source[VNET_HDR_LEN] >> 4 == 6
        if self.v6:
            self.start = VNET_HDR_LEN + 48
            self.before_id = bytes(source[: self.start])
            self.before_checksum = self.after_checksum = b""
        else:
            self.start = VNET_HDR_LEN + 28
            # in a frame the IPv4 Identification is at 14-15, the header checksum at 20-21
            self.before_id = bytes(source[:14])
            self.before_checksum = bytes(source[16:20])
            self.after_checksum = bytes(source[22 : self.start])


class _Run:
    """Datagrams of one flow waiting to leave together: the translated header of the first,
    every payload, the size all but the last share (the USO frame's gso_size)."""

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
    nothing about the payload is vouched for that the kernel did not vouch for.

    The flush policy: datagrams of one flow stay in order, so `udp` hands back what is pending
    before a UDP frame it cannot keep; the caller `drain`s before a packet goes to the
    reference path, before it reuses the buffer the kept payloads are views of, and at the end
    of each batch (nothing waits for a later wake-up).
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

    def udp(self, frames: list[Frame], source: memoryview, n: int) -> list[Frame] | None:
        """A translated UDP frame (made of `source[:n]`): None when it is kept for a USO frame,
        else the frames to write now, in order (what is pending first)."""
        if len(frames) == 1 and self.add(frames[0], source, n):
            return None
        if self._runs:
            return [*self.flush(), *frames]
        return frames

    def drain(self) -> list[Frame]:
        """Every pending run, to write now (see the flush policy above)."""
        return self.flush() if self._runs else []

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
            if source[: last.start] != last.before_id:
                return False
        elif (
            source[:14] != last.before_id
            or source[16:20] != last.before_checksum
            or source[22:38] != last.after_checksum
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
    seed = fold16(seed + (udp_length - first_length) % 0xFFFF)
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
