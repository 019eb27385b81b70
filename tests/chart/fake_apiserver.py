"""Just enough of a Kubernetes API server for helm's `lookup` and release storage.

helm renders `lookup "v1" "Secret" ...` only against a cluster (`--dry-run=server`, or a real
install). No cluster runs here, so this plain-HTTP server answers helm's discovery requests and
serves Secrets from a dict that the test controls: that is how the chart's "reuse the existing
TLS Secret on upgrade" logic is exercised with the real helm binary.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# (group, version, kind, plural, namespaced): what discovery lists, so that helm can map every
# kind the chart renders (helm 4 maps them all for `--dry-run=server`).
_RESOURCES = (
    ("", "v1", "Secret", "secrets", True),
    ("", "v1", "Service", "services", True),
    ("", "v1", "ServiceAccount", "serviceaccounts", True),
    ("apps", "v1", "Deployment", "deployments", True),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
    ),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    ("kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings", False),
    ("cert-manager.io", "v1", "Issuer", "issuers", True),
    ("cert-manager.io", "v1", "Certificate", "certificates", True),
    ("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True),
)


def _resource_list(group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get", "list", "create", "update", "patch", "delete", "watch"],
            }
            for g, v, kind, plural, namespaced in _RESOURCES
            if (g, v) == (group, version)
        ],
    }


def _group_list() -> dict[str, Any]:
    groups = sorted({(g, v) for g, v, *_ in _RESOURCES if g})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
            }
            for g, v in groups
        ],
    }


class FakeApiServer:
    """Serves /version, discovery, and Secrets (get and list) from `self.secrets`."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> Secret
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0].rstrip("/")
                api.requests.append(self.path)
                status, body = api.answer(path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if path == "/version":
            return 200, {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [],
            }
        if path == "/apis":
            return 200, _group_list()
        if path == "/api/v1":
            return 200, _resource_list("", "v1")
        if parts[0] == "apis" and len(parts) == 3:
            listing = _resource_list(parts[1], parts[2])
            if listing["resources"]:
                return 200, listing
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "secrets":
            namespace = parts[3]
            if len(parts) == 5:
                items = [s for (ns, _), s in self.secrets.items() if ns == namespace]
                return 200, {
                    "kind": "SecretList",
                    "apiVersion": "v1",
                    "metadata": {},
                    "items": items,
                }
            secret = self.secrets.get((namespace, parts[5]))
            if secret is not None:
                return 200, secret
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "code": 404,
            "message": f"{path} not found",
        }

    def kubeconfig(self, directory: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path = directory / "kubeconfig"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    @contextmanager
    def running(self) -> Iterator[FakeApiServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
