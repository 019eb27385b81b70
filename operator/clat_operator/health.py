"""Plain-HTTP liveness and readiness for the operator's own pod.

Listens on all addresses of both families: on an IPv6-only cluster the kubelet probes the
pod's IPv6 address, on a dual-stack one it may probe IPv4. (kopf's liveness endpoint binds a
single address.)
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp.web

from clat_operator import contract


class HealthServer:
    def __init__(self, port: int, ready: Callable[[], str | None]) -> None:
        """`ready()` returns None when ready, else what is still missing."""
        self.port = port
        self.ready = ready
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.add_routes(
            [
                aiohttp.web.get(contract.HEALTH_PATH, self._healthz),
                aiohttp.web.get(contract.READY_PATH, self._readyz),
            ]
        )
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        # host=None: all addresses of both families (asyncio binds :: as V6ONLY, and 0.0.0.0).
        site = aiohttp.web.TCPSite(self._runner, host=None, port=self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"status": "ok"})

    async def _readyz(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        missing = self.ready()
        if missing is None:
            return aiohttp.web.json_response({"status": "ready"})
        return aiohttp.web.json_response(
            {"status": "not ready", "waiting for": missing}, status=503
        )
