"""`clat-node agent`: the hand-off server, the pods' CLATs, the reconcile, /metrics.

One process, one asyncio loop: the hand-off socket, the API server's answers, every served
pod's TUN (the slow path) and the periodic reconcile all run on it; work inside a pod's
namespace runs in short threads that have entered it. /healthz and /metrics are served by the
translator's HTTP server in a thread of its own.

SIGTERM or SIGINT: the agent stops taking hand-offs and exits, leaving its pods working (their
persistent TUNs, kernel paths and bind-mounted namespaces stay) for the next agent to re-adopt:
a DaemonSet update must not cut every pod's IPv4. Only the slow path pauses meanwhile. With
`--release-on-exit` (uninstalling node mode) it takes every pod's CLAT down instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass

from clat_translator.health import HealthServer

from clat_node import logs
from clat_node.agent import HandoffServer, PodRegistry
from clat_node.metrics import make_registry
from clat_node.pod_clat import NodeSettings, PodClatServer
from clat_node.verify import ApiError, KubernetesPodVerifier


@dataclass(frozen=True)
class AgentSettings:
    node: NodeSettings
    node_name: str
    socket: str
    listen: str = "[::]:9181"
    reconcile_interval: float = 30.0
    release_on_exit: bool = False


class NodeAgent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.log = logs.get()
        self.registry = PodRegistry()
        self.pods = PodClatServer(settings.node, settings.node_name)
        self.failed: str | None = None
        self.ready_reason = "starting"

    def healthy(self) -> tuple[bool, str]:
        return (False, self.failed) if self.failed else (True, "ok")

    def ready(self) -> tuple[bool, str]:
        return (self.ready_reason == "ok", self.ready_reason)

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig, stop)
        try:
            verifier = await KubernetesPodVerifier.from_environment(self.settings.node_name)
        except Exception as exc:  # no service account, no kubeconfig: one line, exit 1
            self.log.error("clat-node agent: no API server credentials: %s", exc)
            return 1
        http = HealthServer(
            self.settings.listen,
            make_registry(lambda: list(self.pods.pods.values()), self.settings.node.plat_prefix),
            self.healthy,
            self.ready,
        )
        http.start()
        server = HandoffServer(self.settings.socket, verifier, self.pods, self.registry)
        try:
            adopted = await self.pods.adopt_all(self.registry)
            if adopted:
                self.log.info("re-adopted %d pods of an earlier agent", len(adopted))
            await self._reconcile(verifier)
            await server.start()
            self.ready_reason = "ok"
            self.log.info(
                "node agent of node %s: PLAT prefix %s, data path %s, listening on %s",
                self.settings.node_name,
                self.settings.node.plat_prefix,
                self.settings.node.datapath,
                self.settings.listen,
            )
            reconciling = asyncio.create_task(self._reconcile_every(verifier, stop))
            await stop.wait()
            reconciling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciling
        finally:
            self.ready_reason = "stopping"
            await server.close()
            if self.settings.release_on_exit:
                await self.registry.release_all("the agent stops (--release-on-exit)")
            else:
                kept = len(self.pods.pods)
                self.pods.detach_all()
                self.log.info(
                    "leaving %d pods working on their kernel path for the next agent", kept
                )
            await verifier.close()
            http.stop()
        self.log.info("stopped")
        return 0

    def _on_signal(self, sig: int, stop: asyncio.Event) -> None:
        if not stop.is_set():
            self.log.info("stopping on %s", signal.Signals(sig).name)
        stop.set()

    async def _reconcile_every(self, verifier: KubernetesPodVerifier, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.reconcile_interval)
            if not stop.is_set():
                await self._reconcile(verifier)

    async def _reconcile(self, verifier: KubernetesPodVerifier) -> None:
        """Release the served pods the API no longer has on this node. If the API cannot
        answer, nothing is released (a pod is never cut off for the API's outage)."""
        if not len(self.registry):
            return
        try:
            live = await verifier.live_pod_uids()
        except ApiError as exc:
            self.log.warning("reconcile skipped: %s", exc)
            return
        await self.registry.reconcile(live)


def run_agent(settings: AgentSettings) -> int:
    return asyncio.run(NodeAgent(settings).run())
