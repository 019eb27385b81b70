"""Realistic pods, as controllers and users create them (the inputs of the admission tests)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

ENABLED = {"clat.io/enabled": "true"}


def deployment_pod(annotations: dict[str, str] | None = None, name: str = "web") -> dict[str, Any]:
    """What the ReplicaSet controller of `Deployment web` sends: generateName, owner, hash label."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{name}-7d4b9c6f5d-",
            "labels": {"app": name, "pod-template-hash": "7d4b9c6f5d"},
            "annotations": dict(annotations if annotations is not None else ENABLED),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{name}-7d4b9c6f5d",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/web:2.4.1",
                    "args": ["--listen", "[::]:8080"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "UPSTREAM", "value": "http://203.0.113.10/"}],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 5,
                    },
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 10},
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": True}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
        },
    }


def pod_with_init_containers() -> dict[str, Any]:
    """A restricted-style pod: non-root pod security context, init containers, a native sidecar."""
    pod = deployment_pod(name="api")
    pod["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["spec"]["initContainers"] = [
        {"name": "migrate", "image": "registry.example/api:1", "command": ["api", "migrate"]},
        {"name": "log-shipper", "image": "registry.example/shipper:3", "restartPolicy": "Always"},
        {"name": "warm-cache", "image": "registry.example/api:1", "command": ["api", "warm"]},
    ]
    return pod


def bare_pod(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "registry.example/tool:1"}], **spec},
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = dict(annotations)
    return pod


def host_network_pod() -> dict[str, Any]:
    pod = deployment_pod(name="node-agent")
    pod["spec"]["hostNetwork"] = True
    pod["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"
    return pod


def job_pod() -> dict[str, Any]:
    pod = bare_pod("backup-28512345-x7k2p", ENABLED, restartPolicy="Never")
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "backup-28512345",
            "uid": str(uuid.uuid4()),
            "controller": True,
        }
    ]
    return pod


def stored(
    pod: dict[str, Any], namespace: str, name: str | None = None, **status: Any
) -> dict[str, Any]:
    """The pod as the API server stores it: name, namespace, uid (and a status, if given)."""
    result = copy.deepcopy(pod)
    meta = result["metadata"]
    meta["name"] = name or meta.get("name") or meta["generateName"] + uuid.uuid4().hex[:5]
    meta["namespace"] = namespace
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
    if status:
        result["status"] = status
    return result
