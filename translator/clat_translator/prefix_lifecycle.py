"""The PLAT prefix's life in the sidecar: found, re-checked when its lifetime runs out, switched.

Where it comes from, in order: `--plat-prefix` (never re-checked), `--plat-prefix-hint` (used
at once, re-checked soon), RFC 8781 PREF64 in router advertisements, RFC 7050 discovery. A
re-check runs on its own daemon thread (RFC 7050 §3.3, RFC 8781 §5); a changed prefix waits
under a lock, and a byte in a pipe wakes the packet loop, which applies it between two batches
(`apply_pending`): the data path is only ever touched by the loop's thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable

from clat_translator import discovery, logs
from clat_translator.discovery import Discovered, DiscoveryError, Pref64Listener
from clat_translator.metrics import Stats

MIN_RECHECK_SECONDS = 5.0
MAX_RECHECK_SECONDS = 86400.0
MAX_BACKOFF_SECONDS = 30.0


class PlatPrefixWatcher:
    """Finds the PLAT prefix, keeps it current, and tells the loop when it changed.

    `stats` gets the discovery counters, the prefix in use and the changes applied; `stop` ends
    every wait and the re-check thread.
    """

    def __init__(
        self,
        fixed: str | None,
        hint: str | None,
        dns64_servers: list[str],
        stats: Stats,
        stop: threading.Event,
    ) -> None:
        self.fixed = fixed
        self.hint = hint
        self.dns64_servers = dns64_servers
        self.stats = stats
        self.stop = stop
        self.log = logs.get()
        self.current: Discovered | None = None
        self.pref64 = Pref64Listener()
        self._pending: Discovered | None = None
        self._lock = threading.Lock()  # guards _pending and the pipe's life
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    @property
    def prefix(self) -> ipaddress.IPv6Network:
        assert self.current is not None, "no PLAT prefix yet"
        return self.current.prefixes[0]

    def fileno(self) -> int:
        """Readable when a changed prefix waits for `apply_pending`."""
        return self._wake_r

    # ---- the first prefix ----------------------------------------------------------------------

    def wait(self, uplink: str, not_ready: Callable[[str], None]) -> bool:
        """Find the first prefix (retrying with backoff, saying why through `not_ready`);
        False when stopped first."""
        if self.fixed is not None:
            self._use(Discovered((ipaddress.IPv6Network(self.fixed),), 0, "flag"))
            return True
        self.pref64.start(solicit_on=uplink)
        if self.hint is not None:
            # Ready at once; the re-check confirms it (or moves to what discovery finds) after
            # MIN_RECHECK_SECONDS, as the hint carries no lifetime of its own.
            self._use(Discovered((ipaddress.IPv6Network(self.hint),), 0, "hint"))
            return True
        delay = 1.0
        first = True
        not_ready("looking for the PLAT prefix")
        while not self.stop.is_set():
            try:
                found = self._discover_once(first)
            except DiscoveryError as exc:
                not_ready(f"no PLAT prefix yet: {exc}")
                self.log.warning("not ready: %s; retrying in %.0f s", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                first = False
                continue
            self._use(found)
            return True
        return False

    def _discover_once(self, first: bool = False) -> Discovered:
        """RFC 8781 PREF64 if a router advertised one, else RFC 7050 through the resolvers."""
        if first:
            self.stop.wait(1.0)  # give a router a moment to answer our solicitation
        found = self.pref64.current()
        if found is not None:
            self.stats.discovery["rfc8781", "found"] += 1
            return found
        try:
            found = discovery.discover_rfc7050(self.dns64_servers)
        except DiscoveryError:
            self.stats.discovery["rfc7050", "failed"] += 1
            raise
        self.stats.discovery["rfc7050", "found"] += 1
        return found

    def _use(self, found: Discovered) -> None:
        prefix = found.prefixes[0]
        if len(found.prefixes) > 1:
            others = ", ".join(str(p) for p in found.prefixes[1:])
            self.log.info("several PLAT prefixes found; using the first, ignoring %s", others)
        ttl = f" ttl={found.ttl}s" if found.ttl else ""
        self.log.info("PLAT prefix %s from %s%s", prefix, found.source, ttl)
        self.current = found
        self.stats.prefix = str(prefix)
        self.stats.prefix_source = found.source.split(" ")[0]

    # ---- re-checks and the live switch --------------------------------------------------------

    def start_rechecks(self) -> None:
        """Re-check a discovered (or hinted) prefix from now on; a fixed one never is."""
        if self.fixed is None:
            threading.Thread(target=self._recheck, name="recheck", daemon=True).start()

    def _recheck(self) -> None:
        """RFC 7050 §3.3 / RFC 8781 §5: look again when the answer's lifetime runs out."""
        assert self.current is not None
        wait = float(self.current.ttl)
        delay = 1.0
        while not self.stop.wait(min(max(wait, MIN_RECHECK_SECONDS), MAX_RECHECK_SECONDS)):
            try:
                found = self._discover_once()
            except DiscoveryError as exc:
                self.log.warning("PLAT prefix re-check failed (keeping the current one): %s", exc)
                wait = delay
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            delay = 1.0
            wait = float(found.ttl)
            current = self.current
            if current is not None and found.prefixes[0] != current.prefixes[0]:
                with self._lock:
                    if self._closed:
                        return
                    self._pending = found
                    os.write(self._wake_w, b"p")
            elif current is not None and current.source == "hint":
                self._use(found)  # confirmed: say by what, and use its lifetime

    def apply_pending(self, switch: Callable[[str], None]) -> None:
        """Apply a changed prefix through `switch` (the data path's live update; ValueError
        refuses it and the current one stays). Called by the loop when `fileno` is readable."""
        with self._lock:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            found, self._pending = self._pending, None
        if found is None or self.current is None:
            return
        old, new = self.prefix, found.prefixes[0]
        try:
            switch(str(new))  # live: the TUN and the routes stay
        except ValueError as exc:
            self.log.error("PLAT prefix %s refused, keeping %s: %s", new, old, exc)
            return
        self.stats.prefix_changes += 1
        self.log.info("PLAT prefix changed %s -> %s (from %s)", old, new, found.source)
        self._use(found)

    def close(self) -> None:
        """Stop listening for router advertisements; the re-check thread ends with `stop`."""
        self.pref64.stop()
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
