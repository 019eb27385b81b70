"""Rendering the chart with the pinned helm binaries (installed by `make tools`)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "clat-operator"
HELM3 = REPO / ".tools" / "helm"
HELM4 = REPO / ".tools" / "helm4"
NAMESPACE = "clat-system"
RELEASE = "clat-operator"

Manifest = dict[str, Any]


def require(tool: Path) -> Path:
    """The tool, or a skip outside CI (an error in CI: `make test` installs it)."""
    if not tool.is_file():
        message = f"{tool.relative_to(REPO)} is missing: run `make tools`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tool


def helm(
    *args: str, tool: Path = HELM3, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run helm with a private HOME/config (nothing of the user's helm setup leaks in)."""
    with tempfile.TemporaryDirectory(prefix="cimg-helm-") as home:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "KUBECONFIG": os.path.join(home, "no-kubeconfig"),
            **(env or {}),
        }
        proc = subprocess.run(
            [str(require(tool)), *args], capture_output=True, text=True, env=environ, timeout=60
        )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def values_file(values: dict[str, Any], directory: str) -> str:
    path = os.path.join(directory, "values.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    return path


def template_args(values: dict[str, Any], directory: str, namespace: str = NAMESPACE) -> list[str]:
    return [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        "-f",
        values_file(values, directory),
    ]


@functools.cache
def _render(values_json: str, tool: Path, namespace: str) -> tuple[Manifest, ...]:
    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        out = helm(*template_args(json.loads(values_json), directory, namespace), tool=tool).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(
    values: dict[str, Any] | None = None, *, tool: Path = HELM3, namespace: str = NAMESPACE
) -> list[Manifest]:
    """Every object `helm template` renders (CRDs included), as dicts."""
    return [
        json.loads(json.dumps(doc))  # a private copy: tests may modify it
        for doc in _render(json.dumps(values or {}, sort_keys=True), tool, namespace)
    ]


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(objects: list[Manifest]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def node_daemonset(objects: list[Manifest]) -> Manifest:
    return one(objects, "DaemonSet")


def node_container(objects: list[Manifest], name: str = "agent") -> Manifest:
    pod = node_daemonset(objects)["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    return dict(container)


def container_env(container: Manifest) -> dict[str, str]:
    """Literal env values (downward-API ones as '<fieldRef:...>')."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = f"<fieldRef:{var['valueFrom']['fieldRef']['fieldPath']}>"
    return env


def operator_container(objects: list[Manifest]) -> Manifest:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def env_of(objects: list[Manifest]) -> dict[str, str]:
    """The operator container's literal env values (downward-API ones as '<fieldRef:...>')."""
    env: dict[str, str] = {}
    for var in operator_container(objects)["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = f"<fieldRef:{var['valueFrom']['fieldRef']['fieldPath']}>"
    return env


# Value sets the chart must render into valid objects: the defaults and the ones users pick.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {
        "certManager": {
            "enabled": True,
            "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            "duration": "2160h",
            "renewBefore": "360h",
        }
    },
    "capabilities-only": {"clat": {"sidecar": {"securityMode": "capabilities", "native": "on"}}},
    "label-only": {"webhook": {"labelOnly": True}},
    "node-mode": {"clat": {"mode": "node"}, "node": {"enabled": True}},
    "node-agent-only": {"node": {"enabled": True, "datapath": "userspace"}},
    "node-host-clat": {
        "clat": {"mode": "node", "platPrefix": "2001:db8:64::/96", "mtu": 1400},
        "node": {
            "enabled": True,
            "hostClat": True,
            "socketDir": "/var/run/clat/socket",
            "stateDir": "/var/run/clat/state",
            "dns64Servers": ["2001:db8::53", "2001:db8::54"],
            "reconcileInterval": 10,
            "releaseOnExit": True,
            "port": 9281,
            "hostClatPort": 9280,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge"}],
            "nodeSelector": {"kubernetes.io/os": "linux", "ipv6-only": "true"},
            "priorityClassName": "system-node-critical",
            "podAnnotations": {"example.com/agent": "yes"},
            "podLabels": {"tier": "node"},
            "serviceAccount": {"name": "clat-agent", "annotations": {"example.com/r": "x"}},
        },
        "podMonitor": {"enabled": True},
    },
    "fixed-prefix": {"clat": {"platPrefix": "64:ff9b::/96", "discoverPrefix": False, "mtu": 1400}},
    "excluded-namespaces": {"clat": {"excludeNamespaces": ["legacy", "monitoring"]}},
    "everything": {
        "replicaCount": 3,
        "image": {"repository": "registry.example/clat", "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "regcred"}],
        "fullnameOverride": "clat",
        "commonLabels": {"team": "net"},
        "serviceAccount": {"annotations": {"example.com/role": "clat"}},
        "clat": {
            "platPrefix": "2001:db8:64::/96",
            "restartMissing": True,
            "excludeNamespaces": ["batch"],
            "notReadyWarningSeconds": 300,
            "sidecar": {
                "image": {
                    "repository": "registry.example/clat-sidecar",
                    "tag": "1.2.3",
                    "pullPolicy": "Always",
                },
                "native": "off",
                "resources": {
                    "requests": {"cpu": "20m", "memory": "48Mi"},
                    "limits": {"memory": "128Mi"},
                },
            },
        },
        "logLevel": "debug",
        "webhook": {
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
            "servicePort": 8443,
            "namespaceSelectorExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
        },
        "podAnnotations": {"example.com/scrape": "false"},
        "podLabels": {"tier": "control"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "node-role", "operator": "In", "values": ["infra"]}
                            ]
                        }
                    ]
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
            }
        ],
        "priorityClassName": "system-cluster-critical",
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "15s"},
    },
}
