"""The HTTPS server of the admission webhook: kopf's WebhookServer, plus two small duties.

- The pod in an AdmissionReview may carry no metadata.namespace (pods made by controllers
  from generateName); the request's own `namespace` is authoritative, so it is filled in
  before kopf hands the pod to the handler.
- `listening` is set once the socket accepts connections (the operator's readiness).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kopf


class ClatWebhookServer(kopf.WebhookServer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listening = asyncio.Event()

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def with_namespace(
            request: Any,
            *,
            webhook: str | None = None,
            headers: kopf.Headers | None = None,
            sslpeer: kopf.SSLPeer | None = None,
        ) -> Any:
            payload = request.get("request") if isinstance(request, dict) else None
            if isinstance(payload, dict):
                obj, namespace = payload.get("object"), payload.get("namespace")
                if isinstance(obj, dict) and isinstance(namespace, str) and namespace:
                    metadata = obj.setdefault("metadata", {})
                    if isinstance(metadata, dict) and not metadata.get("namespace"):
                        metadata["namespace"] = namespace
            return await fn(request, webhook=webhook, headers=headers, sslpeer=sslpeer)

        try:
            async for client_config in super().__call__(with_namespace):
                self.listening.set()
                yield client_config
        finally:
            self.listening.clear()
