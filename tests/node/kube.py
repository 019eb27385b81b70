"""kmock's Kubernetes emulator as the API server of the node tests, over real HTTP.

The emulator runs in its own thread and event loop, so the agent's verifier (`kubernetes_asyncio`,
on the test's event loop, or the agent as a process) talks to it as to an API server. Pods and
namespaces are stored as the API would hold them; the tests change them through the emulator's store
(what the kubelet and the scheduler would do) or through the client (what a user would do).
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import kmock
from kubernetes_asyncio import client

T = TypeVar("T")

NODE = "node-1"


class Emulator:
    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="kmock", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.k8s: kmock.KubernetesEmulator | None = None
        self.url = ""

    def __enter__(self) -> Emulator:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to __enter__
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        async with kmock.KubernetesEmulator() as k8s, kmock.Server(k8s) as server:
            k8s.resources.load_bundled()
            # kmock reads GET /api/v1/namespaces/NAME as "everything in namespace NAME": serve
            # the Namespace object from its own store, as the API server does.
            k8s["get", re.compile(r"/api/v1/namespaces/[^/]+")] << self._fetch_namespace
            self.k8s = k8s
            self.url = str(server.url).rstrip("/")
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def _fetch_namespace(self, request: kmock.Request) -> Any:
        assert self.k8s is not None
        try:
            obj = self.k8s.objects[kmock.resource("v1/namespaces"), None, str(request.namespace)]
        except KeyError:
            raise kmock.KubernetesObjectNotFoundError() from None
        if obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    def _call(self, fn: Callable[[kmock.KubernetesEmulator], Awaitable[T]]) -> T:
        assert self._loop is not None and self.k8s is not None
        k8s = self.k8s
        return asyncio.run_coroutine_threadsafe(fn(k8s), self._loop).result(10)

    def put(self, plural: str, namespace: str | None, name: str, body: Mapping[str, Any]) -> None:
        async def go(k8s: kmock.KubernetesEmulator) -> None:
            k8s.objects[kmock.resource(plural), namespace, name] = copy.deepcopy(dict(body))

        self._call(go)

    def core_v1(self) -> Any:
        """A kubernetes_asyncio CoreV1Api on this emulator; make it inside the event loop that
        uses it, and close its `api_client` there."""
        configuration = client.Configuration()
        configuration.host = self.url
        return client.CoreV1Api(client.ApiClient(configuration))

    def delete_pod(self, namespace: str, name: str) -> None:
        """DELETE the pod over HTTP, as a user would (blocking; from any thread)."""
        import urllib.request

        url = f"{self.url}/api/v1/namespaces/{namespace}/pods/{name}"
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10):
            pass

    def kubeconfig(self, path: str) -> str:
        """A kubeconfig file for this emulator (for the agent run as a process); its path."""
        import yaml

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": {"token": "node-agent"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "agent"}}],
            "current-context": "kmock",
        }
        with open(path, "w") as out:
            yaml.safe_dump(config, out)
        return path

    # ---- objects as the API holds them ----------------------------------------------------

    def namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "labels": dict(labels or {})},
        }
        self.put("v1/namespaces", None, name, body)

    def pod(
        self,
        namespace: str,
        name: str,
        ips: list[str],
        *,
        uid: str | None = None,
        node: str = NODE,
        annotations: Mapping[str, str] | None = None,
        host_network: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid or str(uuid.uuid4()),
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "nodeName": node,
                "hostNetwork": host_network,
                "containers": [{"name": "app", "image": "app"}],
            },
            "status": {"phase": "Pending", "podIPs": [{"ip": ip} for ip in ips]},
        }
        if ips:
            body["status"]["podIP"] = ips[0]
        self.put("v1/pods", namespace, name, body)
        return body
