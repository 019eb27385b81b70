"""The few direct Kubernetes API requests the operator makes, through the `kubernetes` client.

kopf keeps what it is for (handlers, admission, peering) and its own connection for them; the
operator's reads, patches and Events go through `kubernetes_asyncio`, with the credentials kopf
logs in with, found the same way and in the same order (see `connect`). Every request here is
listed in contract.API_CALLS.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

logger = logging.getLogger(__name__)

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
# The API server keeps at most this much of an Event's message (what kopf cut it to as well).
EVENT_MESSAGE_LIMIT = 1024


class ApiError(Exception):
    """The API server answered with an error status; the message is its own, on one line."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status


class NotFound(ApiError):
    """404: the object (or its kind) does not exist."""


class Conflict(ApiError):
    """409: it exists already, or changed meanwhile."""


# What a request can fail with: an API status, a timeout, the connection (after the retries).
FAILURES: tuple[type[BaseException], ...] = (ApiError, TimeoutError, OSError, aiohttp.ClientError)

_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def core_path(resource: str, namespace: str | None = None, name: str | None = None) -> str:
    return _path("/api/v1", resource, namespace, name)


def group_path(
    group_version: str, resource: str, namespace: str | None = None, name: str | None = None
) -> str:
    return _path(f"/apis/{group_version}", resource, namespace, name)


def _path(root: str, resource: str, namespace: str | None, name: str | None) -> str:
    path = root
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{resource}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


async def client_configuration() -> k8s.Configuration:
    """Credentials as kopf's login finds them: the service account in a pod, else KUBECONFIG
    (or ~/.kube/config). In the cluster the token file is re-read as the kubelet rotates it."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return configuration
    except k8s_config.ConfigException:
        pass  # not in a pod: the developer's kubeconfig
    # Named explicitly: the library reads $KUBECONFIG once, when it is imported.
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    await k8s_config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


class Kube:
    """Requests with explicit timeouts; `retries=()` where an answer is needed right now."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls) -> Kube:
        """Raises ConnectionSetupError when no credentials are found (the message says where)."""
        try:
            configuration = await client_configuration()
        except (k8s_config.ConfigException, OSError, ValueError) as e:
            raise ConnectionSetupError(
                f"no Kubernetes credentials: not in a pod with a service account, and no "
                f"usable kubeconfig ({e})"
            ) from None
        return cls(k8s.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        payload: object | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: tuple[float, ...] = (1.0, 2.0),
    ) -> Any:
        """One API request, retried after each delay in `retries` on a timeout, a broken
        connection or a status that says "try again" (429, 5xx). Raises one of FAILURES."""
        delays = list(retries)
        while True:
            try:
                return await self._once(method, path, payload, headers, timeout)
            except ApiError as e:
                if e.status not in _RETRIED_STATUSES or not delays:
                    raise
                problem: BaseException = e
            except (TimeoutError, OSError, aiohttp.ClientError) as e:
                if not delays:
                    raise
                problem = e
            delay = delays.pop(0)
            logger.debug(f"{method.upper()} {path} failed ({problem}); again in {delay}s")
            await asyncio.sleep(delay)

    async def _once(
        self,
        method: str,
        path: str,
        payload: object | None,
        headers: Mapping[str, str] | None,
        timeout: float,
    ) -> Any:
        header_params = {"Accept": "application/json", "Content-Type": "application/json"}
        header_params.update(headers or {})
        try:
            return await self.api.call_api(
                path,
                method.upper(),
                header_params=header_params,
                body=payload,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=timeout,
            )
        except k8s.ApiException as e:
            raise _api_error(e) from None

    async def get(
        self, path: str, *, timeout: float = 10.0, retries: tuple[float, ...] = (1.0, 2.0)
    ) -> Any:
        return await self.request("get", path, timeout=timeout, retries=retries)

    async def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("post", path, payload=body)

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("patch", path, payload=body, headers=MERGE_PATCH)

    async def delete(self, path: str) -> Any:
        return await self.request("delete", path)


class ConnectionSetupError(RuntimeError):
    """The client could not be set up; the message says why."""


def _api_error(e: k8s.ApiException) -> ApiError:
    status = int(e.status or 0)
    message = ""
    if e.body:
        try:
            message = str(json.loads(e.body).get("message") or "")
        except (ValueError, AttributeError):
            message = str(e.body)[:200]
    kind = {404: NotFound, 409: Conflict}.get(status, ApiError)
    return kind(status, str(e.reason or ""), message)


class EventPoster:
    """Kubernetes Events about objects, posted in the background (the caller does not wait).

    The body is the one kopf's `kopf.event` posts (names and fields as before this module
    took the job over): `settings` is kopf's posting settings, read at each post.
    """

    def __init__(self, kube: Kube, posting: Any) -> None:
        self.kube = kube
        self.posting = posting
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        event = event_body(
            body,
            type_,
            reason,
            message,
            component=str(self.posting.reporting_component),
            instance=str(self.posting.reporting_instance),
            name_prefix=str(self.posting.event_name_prefix),
        )
        task = asyncio.create_task(self._post(event), name=f"event {reason}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, event: Mapping[str, Any]) -> None:
        namespace = str(event["metadata"]["namespace"])
        try:
            await self.kube.create(core_path("events", namespace), event)
        except FAILURES as e:
            logger.warning(
                f"could not post the Event {event['reason']} ({e}); continuing. "
                f"Event: type={event['type']!r}, message={event['message']!r}"
            )

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (a bounded time) for the Events still being posted."""
        pending = list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=timeout)


def event_body(
    body: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    *,
    component: str,
    instance: str,
    name_prefix: str,
) -> dict[str, Any]:
    """A core/v1 Event about the object `body` (apiVersion, kind and metadata are read)."""
    metadata = body.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    involved = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "namespace": namespace,
    }
    if len(message) > EVENT_MESSAGE_LIMIT:
        infix = "..."
        head = message[: EVENT_MESSAGE_LIMIT // 2 - len(infix) // 2]
        tail = message[-EVENT_MESSAGE_LIMIT // 2 + (len(infix) - len(infix) // 2) :]
        message = f"{head}{infix}{tail}"
    now = datetime.datetime.now(datetime.UTC).isoformat()
    return {
        "metadata": {"namespace": namespace, "generateName": name_prefix},
        "action": "Action?",
        "type": type_,
        "reason": reason,
        "message": message,
        "reportingComponent": component,
        "reportingInstance": instance,
        "source": {"component": component},  # the "From" column of `kubectl describe`
        "involvedObject": involved,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": now,
    }


class NamespaceLabels:
    """Labels of namespaces, cached for `ttl` seconds, one request per namespace at a time.

    Read on every replica (the webhook runs on all of them, not only the peering leader),
    and within the webhook's time budget: a single attempt with a short timeout.
    """

    def __init__(self, kube: Kube, ttl: float = 30.0, timeout: float = 2.0) -> None:
        self.kube = kube
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._pending: dict[str, asyncio.Future[dict[str, str]]] = {}

    async def get(self, namespace: str) -> dict[str, str]:
        """The labels, or {} for a namespace that does not exist. Raises one of FAILURES."""
        cached = self._cache.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        pending = self._pending.get(namespace)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[namespace] = future
        try:
            labels = await self._fetch(namespace)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # marked as retrieved: the waiters (if any) re-raise it
            raise
        else:
            self._cache[namespace] = (time.monotonic(), labels)
            future.set_result(labels)
            return labels
        finally:
            del self._pending[namespace]

    async def _fetch(self, namespace: str) -> dict[str, str]:
        try:
            body = await self.kube.get(
                core_path("namespaces", name=namespace), timeout=self.timeout, retries=()
            )
        except NotFound:
            return {}
        return dict((body.get("metadata") or {}).get("labels") or {})
