"""The chart lints, renders valid Kubernetes objects for every value set, and its schema
rejects wrong values before anything reaches a cluster."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.chart import (
    CHART,
    HELM3,
    HELM4,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Manifest,
    helm,
    kinds,
    one,
    render,
    template_args,
)

# Oldest and newest Kubernetes the chart supports (Chart.yaml kubeVersion), and the newest
# schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = sorted({"1.29.0", "1.34.0", kubernetes_validate.latest_version()})

HELMS = [pytest.param(HELM3, id="helm3"), pytest.param(HELM4, id="helm4")]


@pytest.mark.parametrize("tool", HELMS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict(tool: Path, name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        values = Path(directory) / "values.yaml"
        values.write_text(yaml.safe_dump(VALUE_SETS[name]))
        proc = helm(
            "lint",
            "--strict",
            str(CHART),
            "--namespace",
            NAMESPACE,
            "-f",
            str(values),
            tool=tool,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_helm3_and_helm4_render_the_same_objects() -> None:
    def comparable(objects: list[Manifest]) -> list[str]:
        # The generated TLS material differs per render; everything else must not.
        for o in objects:
            if o["kind"] == "Secret":
                o["data"] = dict.fromkeys(o["data"], "<generated>")
            if o["kind"] == "MutatingWebhookConfiguration":
                for webhook in o["webhooks"]:
                    webhook["clientConfig"].pop("caBundle", None)
        return sorted(json.dumps(o, sort_keys=True) for o in objects)

    for name in ("defaults", "everything"):
        assert comparable(render(VALUE_SETS[name], tool=HELM3)) == comparable(
            render(VALUE_SETS[name], tool=HELM4)
        ), name


def _validate_kubernetes(obj: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        first_line = str(e).splitlines()[0]
        pytest.fail(
            f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: "
            f"{first_line}"
        )


# Custom resources: the peering CR against the CRD the chart ships; cert-manager and
# prometheus-operator objects (their CRDs are not available here) against the field names of
# their v1 APIs, which catches misspelt or misplaced keys.
_CERT_MANAGER_FIELDS = {
    "Certificate": {
        "spec": {
            "secretName",
            "secretTemplate",
            "commonName",
            "dnsNames",
            "ipAddresses",
            "uris",
            "emailAddresses",
            "duration",
            "renewBefore",
            "issuerRef",
            "isCA",
            "usages",
            "privateKey",
            "subject",
            "keystores",
            "revisionHistoryLimit",
        },
        "spec.privateKey": {"rotationPolicy", "encoding", "algorithm", "size"},
        "spec.issuerRef": {"name", "kind", "group"},
    },
    "Issuer": {"spec": {"selfSigned", "ca", "acme", "vault", "venafi"}, "spec.ca": {"secretName"}},
    "PodMonitor": {
        "spec": {
            "podMetricsEndpoints",
            "selector",
            "namespaceSelector",
            "jobLabel",
            "podTargetLabels",
            "sampleLimit",
            "targetLimit",
        },
        "spec.namespaceSelector": {"any", "matchNames"},
    },
}
_REQUIRED = {
    "Certificate": {"secretName", "issuerRef"},
    "PodMonitor": {"podMetricsEndpoints", "selector"},
}


def _validate_custom(obj: Manifest, crds: dict[str, Manifest]) -> None:
    kind = obj["kind"]
    if kind in crds:
        schema = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        jsonschema.validate(
            {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}, schema
        )
        return
    assert kind in _CERT_MANAGER_FIELDS, f"no schema for {obj['apiVersion']} {kind}"
    for path, allowed in _CERT_MANAGER_FIELDS[kind].items():
        node: Any = obj
        for key in path.split("."):
            node = node.get(key, {})
        assert set(node) <= allowed, f"{kind}.{path}: unknown fields {set(node) - allowed}"
    assert _REQUIRED.get(kind, set()) <= set(obj["spec"]), f"{kind}: missing required fields"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_objects_are_valid(name: str) -> None:
    objects = render(VALUE_SETS[name])
    crds = {
        c["spec"]["names"]["kind"]: c for c in objects if c["kind"] == "CustomResourceDefinition"
    }
    builtin = [
        o
        for o in objects
        if "." not in o["apiVersion"].split("/")[0] or "k8s.io" in o["apiVersion"]
    ]
    custom = [o for o in objects if o not in builtin]
    assert builtin, "nothing rendered"
    for version in KUBERNETES_VERSIONS:
        for obj in builtin:
            _validate_kubernetes(obj, version)
    for obj in custom:
        _validate_custom(obj, crds)
    # Namespaced objects carry the release namespace explicitly (kubectl apply -f works).
    for obj in objects:
        if obj["kind"] in {
            "Deployment",
            "DaemonSet",
            "Service",
            "ServiceAccount",
            "Secret",
            "PodDisruptionBudget",
            "Certificate",
            "Issuer",
        }:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_default_objects() -> None:
    assert kinds(render()) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ]


def test_value_sets_change_what_they_should() -> None:
    cert_manager = render(VALUE_SETS["cert-manager"])
    assert kinds(cert_manager).count("Certificate") == 2  # the chart's CA and the webhook's
    assert kinds(cert_manager).count("Issuer") == 2
    assert "Secret" not in kinds(cert_manager)  # cert-manager writes it
    own_issuer = render(VALUE_SETS["cert-manager-issuer"])
    assert "Issuer" not in kinds(own_issuer)
    assert one(own_issuer, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    everything = render(VALUE_SETS["everything"])
    assert "PodMonitor" in kinds(everything)
    deployment = one(everything, "Deployment")
    assert deployment["metadata"]["name"] == "clat"
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/clat@sha256:" + "ab" * 32
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    assert all(
        o["metadata"]["labels"]["team"] == "net"
        for o in everything
        if o["kind"] != "CustomResourceDefinition"
    )
    assert one(everything, "PodDisruptionBudget")["spec"] == {
        "selector": deployment["spec"]["selector"],
        "maxUnavailable": "50%",
    }
    no_pdb = render({"podDisruptionBudget": {"enabled": False}})
    assert "PodDisruptionBudget" not in kinds(no_pdb)


# Values the schema must refuse, with a word of helm's message that names the problem.
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key": ({"replicas": 2}, "replicas"),
    "unknown nested key": ({"clat": {"sidecar": {"pullPolicy": "Always"}}}, "pullPolicy"),
    "misspelt key": ({"webhook": {"failurepolicy": "Fail"}}, "failurepolicy"),
    "replicas as a string": ({"replicaCount": "2"}, "replicaCount"),
    "zero replicas": ({"replicaCount": 0}, "replicaCount"),
    "bool as a string": ({"clat": {"restartMissing": "yes"}}, "restartMissing"),
    "bad security mode": ({"clat": {"sidecar": {"securityMode": "root"}}}, "securityMode"),
    "bad native sidecar": ({"clat": {"sidecar": {"native": "true"}}}, "native"),
    "bad failure policy": ({"webhook": {"failurePolicy": "Retry"}}, "failurePolicy"),
    "timeout above 10": ({"webhook": {"timeoutSeconds": 30}}, "timeoutSeconds"),
    "bad reinvocation": ({"webhook": {"reinvocationPolicy": "Always"}}, "reinvocationPolicy"),
    "bad log level": ({"logLevel": "verbose"}, "logLevel"),
    "mtu as a string": ({"clat": {"mtu": "1400"}}, "mtu"),
    "mtu below IPv6 minimum": ({"clat": {"mtu": 576}}, "mtu"),
    "prefix length not RFC 6052": ({"clat": {"platPrefix": "64:ff9b::/80"}}, "platPrefix"),
    "prefix that is IPv4": ({"clat": {"platPrefix": "10.0.0.0/8"}}, "platPrefix"),
    "namespace list as a string": ({"clat": {"excludeNamespaces": "a,b"}}, "excludeNamespaces"),
    "bad namespace name": ({"clat": {"excludeNamespaces": ["Bad_NS"]}}, "excludeNamespaces"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    "bad digest": ({"image": {"digest": "latest"}}, "digest"),
    "bad resources": ({"clat": {"sidecar": {"resources": {"limit": {"memory": "1Gi"}}}}}, "limit"),
    "bad quantity": ({"resources": {"requests": {"cpu": "lots"}}}, "cpu"),
    "issuer without name": (
        {"certManager": {"enabled": True, "issuerRef": {"kind": "Issuer"}}},
        "name",
    ),
    "bad issuer kind": ({"certManager": {"issuerRef": {"name": "x", "kind": "Vault"}}}, "kind"),
    "bad duration": ({"certManager": {"duration": "1 year"}}, "duration"),
    "bad pdb": ({"podDisruptionBudget": {"minAvailable": "half"}}, "minAvailable"),
    "labels not strings": ({"podLabels": {"a": 1}}, "podLabels"),
    "bad selector operator": (
        {"webhook": {"namespaceSelectorExpressions": [{"key": "a", "operator": "Like"}]}},
        "operator",
    ),
}


@pytest.mark.parametrize("tool", HELMS)
@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_rejects(tool: Path, case: str) -> None:
    values, word = BAD_VALUES[case]
    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        proc = helm(*template_args(values, directory), tool=tool, check=False)
    assert proc.returncode != 0, f"accepted: {values}"
    assert "schema" in proc.stderr and word in proc.stderr, proc.stderr


def test_schema_covers_every_value() -> None:
    """Every key in values.yaml is typed by values.schema.json, and every value is documented."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values, schema)

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and node.get("additionalProperties") is False:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}{key} is not in the schema"
                walk(sub, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


def test_every_value_is_commented() -> None:
    """cert-manager's model: a comment above every value (or above the block it belongs to)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = {
        n: len(line) - len(line.lstrip())
        for n, line in enumerate(lines)
        if line.strip() and not line.lstrip().startswith(("#", "-")) and ":" in line
    }

    def documented(n: int) -> bool:
        if n > 0 and lines[n - 1].lstrip().startswith("#"):
            return True
        parents = [p for p in keys if p < n and keys[p] < keys[n]]
        return bool(parents) and documented(max(parents))

    def is_section(n: int) -> bool:
        later = [k for k in keys if k > n]
        return lines[n].rstrip().endswith(":") and bool(later) and keys[min(later)] > keys[n]

    undocumented = [lines[n].strip() for n in keys if not is_section(n) and not documented(n)]
    assert not undocumented, f"values without a comment: {undocumented}"


def test_notes_tell_how_to_opt_in_and_read_logs() -> None:
    # helm 4 renders NOTES.txt offline with a client-side dry run.
    proc = helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", tool=HELM4
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert 'clat.io/enabled: "true"' in notes
    assert "kubectl label namespace NAMESPACE clat.io/enabled=true" in notes
    assert "kubectl logs POD -c clat" in notes
    assert "kube-system, clat-system" in notes
    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        values = Path(directory) / "values.yaml"
        values.write_text(
            yaml.safe_dump({"webhook": {"labelOnly": True}, "certManager": {"enabled": True}})
        )
        notes = helm(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "-f",
            str(values),
            tool=HELM4,
        ).stdout.split("NOTES:", 1)[1]
    assert "the label is required" in notes
    assert "cert-manager" in notes
