"""The userspace translation of one TUN queue: read a batch, translate, write back.

Two loops. Offload on (the default): the TUN carries virtio-net headers; each read lands in a
preallocated arena, `OffloadTranslator.fast` rewrites the headers of a whole super-packet, and
one `writev` sends [virtio-net header, new IP + transport header, a view of the payload], so the
payload is never copied in Python. Datagrams of one UDP flow read in the same wake-up wait in
the arena and leave as one USO frame (`UdpCoalescer`). Offload off: one plain packet per read,
`Translator.translate` and one write per packet out.

Either way a wake-up drains up to BATCH packets before the caller (packet_loop.py) looks at
signals and timers again, and the counters are summed in local variables and added to `Stats`
once per batch.
"""

from __future__ import annotations

import os

from clat_translator.counters import TRANSLATOR_ERROR, TUN_WRITE_FAILED
from clat_translator.metrics import Stats
from clat_translator.tun import READ_BUFFER, TunDevice
from clat_translator.xlat import Translator
from clat_translator.xlat.offload import Frame, OffloadTranslator, UdpCoalescer

BATCH = 256  # packets per wake-up before looking at signals and timers again
ARENA = 1 << 18  # read buffer: datagrams waiting to leave in one USO frame stay here
UDP = 17


class QueuePump:
    """Translate what one TUN queue delivers, with or without offload (the TUN decides)."""

    def __init__(self, tun: TunDevice, translator: Translator, stats: Stats) -> None:
        self.tun = tun
        self.translator = translator
        self.stats = stats
        self.offload = OffloadTranslator(translator) if tun.vnet_hdr else None
        self._buffer = bytearray(ARENA if tun.vnet_hdr else 0)
        self._view = memoryview(self._buffer)
        self.coalescer = UdpCoalescer()

    def fileno(self) -> int:
        return self.tun.fileno()

    def pump(self) -> int:
        """Handle up to BATCH waiting packets; return how many were read."""
        if self.offload is None:
            return self._pump_plain()
        return self._pump_offload(self.offload)

    # ---- offload on ---------------------------------------------------------------------------

    def _pump_offload(self, offload: OffloadTranslator) -> int:
        fd = self.tun.fileno()
        arena = self._view
        readv, writev = os.readv, os.writev
        fast46, fast64 = offload.fast46, offload.fast64
        coalescer = self.coalescer
        coalesce_udp, follow = coalescer.udp, coalescer.follow
        stats = self.stats
        last_slot = len(arena) - READ_BUFFER
        offset = 0
        packets46 = packets64 = bytes46 = bytes64 = super46 = super64 = 0
        count = 0
        while count < BATCH:
            if offset > last_slot:
                self._write(coalescer.drain())  # the kept payloads are views of the arena
                offset = 0
            slot = arena[offset : offset + READ_BUFFER]
            try:
                n = readv(fd, (slot,))
            except BlockingIOError:
                break
            count += 1
            if n < 30:  # not even an IPv4 header after the virtio-net one
                self._slow(slot, n, offload, 0)
                continue
            version = slot[10] >> 4
            udp = slot[19 if version == 4 else 16] == UDP
            if udp and follow(slot, n):  # the next datagram of a UDP run: nothing to translate
                offset += (n + 63) & ~63
                if version == 4:
                    packets46 += 1
                    bytes46 += n - 10
                else:
                    packets64 += 1
                    bytes64 += n - 10
                continue
            result = fast46(slot, n) if version == 4 else fast64(slot, n) if version == 6 else None
            if result is None:
                if coalescer.pending:
                    self._write(coalescer.drain())
                self._slow(slot, n, offload, version)
                continue
            frames, segments = result
            if version == 4:
                packets46 += segments
                bytes46 += n - 10
                super46 += segments > 1
            else:
                packets64 += segments
                bytes64 += n - 10
                super64 += segments > 1
            if udp:
                out = coalesce_udp(frames, slot, n)
                if out is None:
                    offset += (n + 63) & ~63  # its payload stays in the arena until the flush
                else:
                    self._write(out)
                continue
            if len(frames) == 1:
                try:
                    writev(fd, frames[0])
                except OSError:
                    stats.drops[TUN_WRITE_FAILED] += 1
            else:
                self._write(frames)
        if coalescer.pending:
            self._write(coalescer.drain())
        packets, octets, supers = stats.packets, stats.bytes, stats.super_packets
        if packets46:
            packets["4to6"] += packets46
            octets["4to6"] += bytes46
            supers["4to6"] += super46
        if packets64:
            packets["6to4"] += packets64
            octets["6to4"] += bytes64
            supers["6to4"] += super64
        merged = coalescer.coalesced
        if merged[6] or merged[4]:  # counted by the version they left with
            stats.coalesced["4to6"] += merged[6]
            stats.coalesced["6to4"] += merged[4]
            merged[6] = merged[4] = 0
        return count

    def _write(self, frames: list[Frame]) -> None:
        writev = os.writev
        fd = self.tun.fileno()
        for frame in frames:
            try:
                writev(fd, frame)
            except OSError:
                self.stats.drops[TUN_WRITE_FAILED] += 1

    def _slow(self, view: memoryview, n: int, offload: OffloadTranslator, version: int) -> None:
        """Everything `fast` refuses: segments and the reference, then one write per packet."""
        stats = self.stats
        try:
            result = offload.fallback(view, n)
        except Exception:  # the core promises never to raise; count it if it does
            stats.drops[TRANSLATOR_ERROR] += 1
            return
        direction = "4to6" if version == 4 else "6to4"
        for reason in result.drops:
            stats.drops[reason] += 1
        if result.segments:
            stats.packets[direction] += result.segments
            stats.bytes[direction] += n - 10
            if result.segments > 1:
                stats.segmented[direction] += 1
        stats.errors_sent[direction] += result.back
        self._write(result.frames)

    # ---- offload off ----------------------------------------------------------------------------

    def _pump_plain(self) -> int:
        fd = self.tun.fileno()
        read, write = os.read, os.write
        translate = self.translator.translate
        stats = self.stats
        drops = stats.drops
        packets46 = packets64 = bytes46 = bytes64 = errors46 = errors64 = 0
        count = 0
        for count in range(1, BATCH + 1):  # noqa: B007
            try:
                packet = read(fd, 65535)
            except BlockingIOError:
                count -= 1
                break
            try:
                result = translate(packet)
            except Exception:  # the core promises never to raise; count it if it does
                drops[TRANSLATOR_ERROR] += 1
                continue
            if result.drop is not None:
                drops[result.drop] += 1
            v4 = packet[0] >> 4 == 4 if packet else False
            if result.out:
                if v4:
                    packets46 += 1
                    bytes46 += len(packet)
                else:
                    packets64 += 1
                    bytes64 += len(packet)
            if result.back:
                if v4:
                    errors46 += len(result.back)
                else:
                    errors64 += len(result.back)
            for out in result.out:
                try:
                    write(fd, out)
                except OSError:
                    drops[TUN_WRITE_FAILED] += 1
            for out in result.back:
                try:
                    write(fd, out)
                except OSError:
                    drops[TUN_WRITE_FAILED] += 1
        packets, octets, errors = stats.packets, stats.bytes, stats.errors_sent
        packets["4to6"] += packets46
        packets["6to4"] += packets64
        octets["4to6"] += bytes46
        octets["6to4"] += bytes64
        errors["4to6"] += errors46
        errors["6to4"] += errors64
        return count
