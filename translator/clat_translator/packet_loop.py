"""The one poll loop of the sidecar's processes: TUN queues, control pipes, timers.

The same loop runs in the main process (serving the TUN itself with one worker, or only
watching the workers with several) and in each worker process (workers.py). What it serves is
registered with `watch`: a descriptor and what to do when it is readable. `every_wake` runs
after each wake-up (at least once a second). With `publish` (a worker's counters to the main
process), counters leave at most PUBLISH_SECONDS late while busy and IDLE_PUBLISH_MS after the
traffic pauses.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

from clat_translator.queue_pump import QueuePump

PUBLISH_SECONDS = 0.05  # a busy worker's counters reach /metrics at most this late
IDLE_PUBLISH_MS = 5  # ... and this long after its traffic pauses
IDLE_WAKE_MS = 1000  # timers and the stop flag are looked at least this often


class PacketLoop:
    def __init__(self) -> None:
        self._poller = select.poll()
        self._handlers: dict[int, Callable[[int], object]] = {}
        self._counting: set[int] = set()
        self._ticks: list[Callable[[], object]] = []

    def watch(self, fd: int, handler: Callable[[int], object], counts: bool = False) -> None:
        """Call `handler(poll events)` when `fd` is readable (or hung up); `counts`: it
        changes the counters (for `publish`)."""
        self._handlers[fd] = handler
        if counts:
            self._counting.add(fd)
        self._poller.register(fd, select.POLLIN)

    def serve(self, pump: QueuePump) -> None:
        """Translate what the TUN queue of `pump` delivers, a batch per wake-up."""
        self.watch(pump.fileno(), lambda _events: pump.pump(), counts=True)

    def every_wake(self, tick: Callable[[], object]) -> None:
        self._ticks.append(tick)

    def run(self, stopped: Callable[[], bool], publish: Callable[[], None] | None = None) -> None:
        """Serve until `stopped()` (looked at after each wake-up); publish once more at the end."""
        poll = self._poller.poll
        handlers, counting, ticks = self._handlers, self._counting, self._ticks
        publishing = publish is not None
        published = time.monotonic()
        dirty = False
        while not stopped():
            events = poll(IDLE_PUBLISH_MS if dirty else IDLE_WAKE_MS)
            for fd, event in events:
                handlers[fd](event)
                if publishing and fd in counting:
                    dirty = True
            for tick in ticks:
                tick()
            if dirty and publish is not None:
                now = time.monotonic()
                if not events or now - published >= PUBLISH_SECONDS:
                    publish()
                    published = now
                    dirty = False
        if publish is not None:
            publish()
