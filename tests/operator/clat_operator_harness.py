"""Test harness: kmock's Kubernetes emulator as the API server, the operator via kopf's KopfRunner.

The emulator runs in its own thread and event loop, so the operator (another thread, another
loop, started by KopfRunner) and the tests (sync or async) talk to it over real HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import pathlib
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp
import aiohttp.web
import jsonpatch
import kmock
import kubernetes_validate
from clat_operator import certs, contract
from kopf.testing import KopfRunner

T = TypeVar("T")

KUBERNETES_SCHEMAS = ("1.29.0", kubernetes_validate.latest_version())
OPERATOR_ARGS = ["run", "-A", "-m", "clat_operator.handlers"]


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET6, socket.SOCK_STREAM)) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus `metadata.generateName`, as the API server does it (Events use it)."""

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        metadata = request.data.get("metadata") if isinstance(request.data, dict) else None
        creates = request.action == kmock.action.CREATE and isinstance(metadata, dict)
        if creates and metadata.get("generateName") and not metadata.get("name"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        return await super()._handle(request)


class Emulator:
    """kmock's KubernetesEmulator on 127.0.0.1, in a thread; `version` is what /version says."""

    def __init__(self, version: tuple[int, int] = (1, 30)) -> None:
        self.version = version
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
        async with ApiServer() as k8s, kmock.Server(k8s) as server:
            k8s.resources.load_bundled()
            k8s.resources[f"{contract.PEERING_API_VERSION}/clusterkopfpeerings"] = (
                kmock.ResourceInfo(kind=contract.PEERING_KIND, namespaced=False)
            )
            major, minor = self.version
            k8s["get /version"] << {
                "major": str(major),
                "minor": str(minor),
                "gitVersion": f"v{major}.{minor}.3",
                "platform": "linux/amd64",
            }
            # kmock reads /api/v1/namespaces/NAME as "namespace NAME" and cannot fetch a
            # Namespace object by itself: serve those from its own object store.
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

    # ---- access from the tests (any thread) --------------------------------------------

    def call(self, fn: Callable[[kmock.KubernetesEmulator], Awaitable[T]]) -> T:
        assert self._loop is not None and self.k8s is not None
        k8s = self.k8s
        return asyncio.run_coroutine_threadsafe(fn(k8s), self._loop).result(10)

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        async def go(k8s: kmock.KubernetesEmulator) -> Any:
            headers = (
                {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else None
            )
            async with k8s.request(method, path, json=body, headers=headers) as response:
                assert response.status < 300, (
                    f"{method} {path}: {response.status} {await response.text()}"
                )
                return await response.json()

        return self.call(go)

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("POST", path, dict(body))

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, dict(body))

    def put_object(
        self, plural: str, namespace: str | None, name: str, body: Mapping[str, Any]
    ) -> None:
        """Store an object directly (no watch event): things that exist before the operator."""

        async def go(k8s: kmock.KubernetesEmulator) -> None:
            k8s.objects[plural, namespace, name] = copy.deepcopy(dict(body))

        self.call(go)

    def get_object(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        async def go(k8s: kmock.KubernetesEmulator) -> dict[str, Any] | None:
            try:
                obj = k8s.objects[kmock.resource(plural), namespace, name]
            except KeyError:
                return None
            return None if obj.deleted else json.loads(json.dumps(obj.raw))

        return self.call(go)

    def events(self) -> list[dict[str, Any]]:
        async def go(k8s: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
            return [
                json.loads(json.dumps(obj.raw))
                for (resource, _, _), obj in k8s.objects.items()
                if resource.plural == "events" and not obj.deleted
            ]

        return self.call(go)

    def events_for(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events()
            if e["involvedObject"].get("name") == name and (reason is None or e["reason"] == reason)
        ]

    def requests(self) -> list[kmock.Request]:
        async def go(k8s: kmock.KubernetesEmulator) -> list[kmock.Request]:
            return list(k8s._requests)

        return self.call(go)

    def kubeconfig(self, directory: pathlib.Path) -> pathlib.Path:
        path = directory / f"kubeconfig-{uuid.uuid4().hex[:8]}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "kmock",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "test-token"}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}
                    ],
                }
            )
        )
        return path


# ---- RBAC view of the requests the emulator saw ---------------------------------------

_VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "DELETE": "delete"}


def api_calls_made(requests: list[kmock.Request]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every resource request; discovery and /version are left out."""
    made = set()
    for r in requests:
        if re.fullmatch(r"/api/v1/namespaces/[^/]+", r.url.path) and str(r.method.value) == "GET":
            made.add(("", "namespaces", "get"))  # kmock parses this as a namespace, not an object
            continue
        if r.resource is None or r.resource.plural is None:
            assert r.url.path in ("/version", "/api", "/apis") or r.url.path.startswith(
                ("/api/", "/apis/")
            ), f"unexpected non-resource request {r.method} {r.url}"
            continue
        action = r.action.value if r.action is not None else ""
        verb = _VERBS.get(action) or (
            "patch" if str(r.method.value).upper() == "PATCH" else "update"
        )
        made.add((r.resource.group, r.resource.plural, verb))
    return made


def allowed_calls(calls: tuple[contract.ApiCall, ...]) -> set[tuple[str, str, str]]:
    return {(c.group, c.resource, verb) for c in calls for verb in c.verbs}


# ---- the operator ---------------------------------------------------------------------


class ThreadLog(logging.Handler):
    """Log records of one thread (the operator's), readable while it runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread: int | None = None
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append(record)

    @property
    def text(self) -> str:
        return "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in list(self.records))

    @property
    def problems(self) -> list[str]:
        """ERROR records and anything logged with a traceback."""
        return [
            f"{r.levelname} {r.name}: {r.getMessage()}"
            for r in list(self.records)
            if r.levelno >= logging.ERROR or r.exc_info
        ]


class Operator:
    """`kopf run -A -m clat_operator.handlers` in KopfRunner, with CLAT_OPERATOR_* settings."""

    def __init__(self, emulator: Emulator, tmp: pathlib.Path, **settings: str) -> None:
        self.emulator = emulator
        self.tmp = tmp
        self.health_port = free_port()
        self.webhook_port = free_port()
        self.dev_mode = bool(settings.get("WEBHOOK_HOST"))
        self.env = {
            "KUBECONFIG": str(emulator.kubeconfig(tmp)),
            "CLAT_OPERATOR_HEALTH_PORT": str(self.health_port),
            "CLAT_OPERATOR_WEBHOOK_PORT": str(self.webhook_port),
            "CLAT_OPERATOR_DISCOVER_PREFIX": "false",
            "CLAT_OPERATOR_LOG_LEVEL": "debug",
        }
        if not self.dev_mode:
            # What the chart mounts from its Secret: a certificate for the webhook's address.
            self.cert_file, self.key_file = certs.write_self_signed(
                tmp, ["localhost", "127.0.0.1", "::1"]
            )
            self.env["CLAT_OPERATOR_TLS_CERT_FILE"] = str(self.cert_file)
            self.env["CLAT_OPERATOR_TLS_KEY_FILE"] = str(self.key_file)
        self.env.update({f"CLAT_OPERATOR_{k}": v for k, v in settings.items()})
        self.runner = KopfRunner(OPERATOR_ARGS, timeout=30)
        self.log = ThreadLog()
        self.stopped = False

    def __enter__(self) -> Operator:
        # The settings are read once at start (and KUBECONFIG at login, right after it).
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        logging.getLogger().addHandler(self.log)
        try:
            self.runner.__enter__()
            self.log.thread = self.runner._thread.ident
            self.wait_ready()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stopped:
            return  # stopped early by the test (a replica going away)
        self.stopped = True
        try:
            self.runner.__exit__(None, None, None)
        finally:
            logging.getLogger().removeHandler(self.log)

    def health(self, path: str) -> int:
        try:
            with socket.create_connection(("::1", self.health_port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                return int(s.recv(64).split()[1])
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_until(lambda: self.health(contract.READY_PATH) == 200, timeout, "operator readiness")

    @property
    def output(self) -> str:
        """What the operator logged so far."""
        return self.log.text

    def ssl_context(self) -> ssl.SSLContext:
        """Trust the webhook's certificate as the API server does (caBundle), hostname checked."""
        return ssl.create_default_context(cafile=str(self.cert_file))


# ---- admission reviews --------------------------------------------------------------------


def admission_review(
    pod: Mapping[str, Any],
    namespace: str,
    *,
    operation: str = "CREATE",
    dry_run: bool = False,
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it (admission.k8s.io/v1)."""
    pod_without_ns = copy.deepcopy(dict(pod))
    pod_without_ns.get("metadata", {}).pop("namespace", None)  # as for pods from generateName
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.get("metadata", {}).get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": pod_without_ns,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


class Review:
    """The webhook's answer, with the JSONPatch applied to the pod that was sent."""

    def __init__(
        self, sent_pod: Mapping[str, Any], review: Mapping[str, Any], answer: Mapping[str, Any]
    ):
        self.request_uid = review["request"]["uid"]
        self.answer = answer
        self.response = answer["response"]
        self.patch_ops: list[dict[str, Any]] = []
        if "patch" in self.response:
            assert self.response["patchType"] == "JSONPatch"
            self.patch_ops = json.loads(base64.b64decode(self.response["patch"]))
        self.pod = jsonpatch.apply_patch(copy.deepcopy(dict(sent_pod)), self.patch_ops)

    @property
    def allowed(self) -> bool:
        return bool(self.response["allowed"])

    @property
    def warnings(self) -> list[str]:
        return list(self.response.get("warnings") or [])

    @property
    def message(self) -> str:
        return str((self.response.get("status") or {}).get("message", ""))

    def container(self, name: str = contract.SIDECAR_CONTAINER_NAME) -> dict[str, Any]:
        for key in ("initContainers", "containers"):
            for c in self.pod["spec"].get(key) or []:
                if c["name"] == name:
                    return dict(c)
        raise AssertionError(f"no container {name} in the pod")

    def env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.container().get("env") or []}


async def post_review(
    url: str,
    pod: Mapping[str, Any],
    namespace: str,
    context: ssl.SSLContext,
    **kwargs: Any,
) -> Review:
    review = admission_review(pod, namespace, **kwargs)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=review, ssl=context) as response,
    ):
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["response"]["uid"] == review["request"]["uid"]
    # What the API server would store: the namespace is its own (the pod in the review had none).
    sent = copy.deepcopy(dict(pod))
    sent.setdefault("metadata", {})["namespace"] = namespace
    result = Review(sent, review, answer)
    result.pod["metadata"]["namespace"] = namespace
    return result


def validate_pod(pod: Mapping[str, Any]) -> None:
    """kubernetes-validate (strict: no unknown fields) against 1.29 and the newest schema."""
    for version in KUBERNETES_SCHEMAS:
        kubernetes_validate.validate(dict(pod), version, strict=True)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
