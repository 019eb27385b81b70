"""The few direct Kubernetes API requests the operator makes, through kopf's own client.

kopf already holds the credentials (service account in the cluster, KUBECONFIG in dev mode)
and re-authenticates on 401; its request function is not public API, so this is the one
module that touches it. Every request here is listed in contract.API_CALLS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
from kopf._cogs.clients import api as _api
from kopf._cogs.clients import errors as _errors

logger = logging.getLogger(__name__)

ApiError = _errors.APIError
NotFound = _errors.APINotFoundError
Conflict = _errors.APIConflictError

# What a request can fail with: an API status, a timeout, the connection (kopf has retried).
FAILURES: tuple[type[BaseException], ...] = (ApiError, TimeoutError, OSError, aiohttp.ClientError)

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


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


class Kube:
    """Requests with explicit timeouts; `attempts=1` where an answer is needed right now."""

    def __init__(self, settings: kopf.OperatorSettings) -> None:
        self.settings = settings

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
        response = await _api.request(
            method,
            path,
            payload=payload,
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=timeout),
            backoffs=list(retries),
            settings=self.settings,
            logger=logger,
        )
        async with response:
            return await response.json()

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
