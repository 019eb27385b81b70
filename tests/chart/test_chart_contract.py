"""The chart and the operator agree: the webhook is called where the operator serves it,
the probes hit its health endpoints, its settings reach it, and RBAC grants exactly the API
calls it makes (clat_operator.contract)."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import pytest
from clat_operator import contract
from clat_operator.config import Config

from tests.chart.chart import (
    CHART,
    NAMESPACE,
    VALUE_SETS,
    Manifest,
    env_of,
    node_daemonset,
    one,
    operator_container,
    render,
)


class ApiCallKey(NamedTuple):
    group: str
    resource: str
    verb: str


def _container_port(objects: list[Manifest], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in operator_container(objects)["ports"]}
    return ports[name]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_webhook_reaches_the_operator(name: str) -> None:
    objects = render(VALUE_SETS[name])
    mwc = one(objects, "MutatingWebhookConfiguration")
    (webhook,) = mwc["webhooks"]
    service_ref = webhook["clientConfig"]["service"]
    service = one(objects, "Service")
    # API server -> Service (name, namespace, port, path) -> container port the operator listens on.
    assert service_ref["name"] == service["metadata"]["name"]
    assert service_ref["namespace"] == service["metadata"]["namespace"] == NAMESPACE
    assert service_ref["path"] == contract.WEBHOOK_PATH
    (port,) = service["spec"]["ports"]
    assert service_ref["port"] == port["port"]
    assert port["targetPort"] == "webhook"
    deployment = one(objects, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert _container_port(objects, "webhook") == contract.WEBHOOK_PORT
    assert env_of(objects)["CLAT_OPERATOR_WEBHOOK_PORT"] == str(contract.WEBHOOK_PORT)
    # What the webhook asks for.
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert 1 <= webhook["timeoutSeconds"] <= 10
    assert webhook["failurePolicy"] == VALUE_SETS[name].get("webhook", {}).get(
        "failurePolicy", "Ignore"
    )
    assert webhook["reinvocationPolicy"] in {"IfNeeded", "Never"}
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
    assert {"kube-system", NAMESPACE} <= set(excluded["values"])
    assert set(VALUE_SETS[name].get("clat", {}).get("excludeNamespaces", [])) <= set(
        excluded["values"]
    )


def test_webhook_defaults() -> None:
    (webhook,) = one(render(), "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["timeoutSeconds"] <= 10
    assert "objectSelector" not in webhook  # annotation and namespace label opt-in work
    assert webhook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", NAMESPACE],
        }
    ]


def test_label_only_selector() -> None:
    (webhook,) = one(render(VALUE_SETS["label-only"]), "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["objectSelector"] == {"matchLabels": {contract.LABEL_ENABLED: "true"}}


def test_excluded_namespaces_reach_webhook_and_operator() -> None:
    objects = render(VALUE_SETS["excluded-namespaces"])
    (webhook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        NAMESPACE,
        "legacy",
        "monitoring",
    ]
    assert env_of(objects)["CLAT_OPERATOR_EXCLUDE_NAMESPACES"] == "legacy,monitoring"
    # A release installed into an excluded namespace is listed once.
    objects = render({"clat": {"excludeNamespaces": ["kube-system", "legacy"]}}, namespace="legacy")
    (webhook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        "legacy",
    ]


def test_extra_namespace_selector_expressions() -> None:
    (webhook,) = one(render(VALUE_SETS["everything"]), "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["namespaceSelector"]["matchExpressions"][1] == {
        "key": "env",
        "operator": "In",
        "values": ["prod"],
    }


def test_probes_hit_the_operator_health_endpoints() -> None:
    objects = render()
    container = operator_container(objects)
    assert _container_port(objects, "health") == contract.HEALTH_PORT
    assert env_of(objects)["CLAT_OPERATOR_HEALTH_PORT"] == str(contract.HEALTH_PORT)
    assert container["livenessProbe"]["httpGet"] == {"path": contract.HEALTH_PATH, "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": contract.READY_PATH, "port": "health"}


# ---- settings ----------------------------------------------------------------------------------

CHART_SETS_NOT = {"CLAT_OPERATOR_WEBHOOK_HOST"}  # local dev mode only


@pytest.mark.parametrize("name", VALUE_SETS)
def test_env_is_exactly_the_operator_settings(name: str) -> None:
    env = env_of(render(VALUE_SETS[name]))
    known = {s.env for s in contract.SETTINGS}
    assert set(env) == known - CHART_SETS_NOT
    assert env["CLAT_OPERATOR_NAMESPACE"] == "<fieldRef:metadata.namespace>"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_accepts_the_rendered_settings(name: str) -> None:
    """The operator's own settings parser reads what the chart renders."""
    env = env_of(render(VALUE_SETS[name]))
    env["CLAT_OPERATOR_NAMESPACE"] = NAMESPACE
    config = Config.from_env(env)
    assert config.namespace == NAMESPACE
    assert config.excluded("kube-system") and config.excluded(NAMESPACE)
    for namespace in VALUE_SETS[name].get("clat", {}).get("excludeNamespaces", []):
        assert config.excluded(namespace)


def test_defaults_equal_the_operator_defaults() -> None:
    """With default values the chart changes no operator default (except where it must)."""
    env = env_of(render())
    must_differ = {
        "CLAT_OPERATOR_NAMESPACE",
        "CLAT_OPERATOR_SIDECAR_IMAGE",
        "CLAT_OPERATOR_SIDECAR_RESOURCES",
    }
    for setting in contract.SETTINGS:
        if setting.env in env and setting.env not in must_differ:
            assert env[setting.env] == setting.default, setting.env
    assert json.loads(env["CLAT_OPERATOR_SIDECAR_RESOURCES"]) == json.loads(
        contract.DEFAULT_SIDECAR_RESOURCES
    )
    # The operator's default sidecar image is "<repository>:<package version>": so is the chart's.
    assert (
        env["CLAT_OPERATOR_SIDECAR_IMAGE"]
        == f"ghcr.io/clat-operator/clat-operator:{_chart_app_version()}"
    )


def _chart_app_version() -> str:
    return str(one(render(), "Deployment")["metadata"]["labels"]["app.kubernetes.io/version"])


def test_values_map_to_settings() -> None:
    env = env_of(render(VALUE_SETS["fixed-prefix"]))
    assert env["CLAT_OPERATOR_PLAT_PREFIX"] == "64:ff9b::/96"
    assert env["CLAT_OPERATOR_DISCOVER_PREFIX"] == "false"
    assert env["CLAT_OPERATOR_MTU"] == "1400"
    env = env_of(render(VALUE_SETS["capabilities-only"]))
    assert env["CLAT_OPERATOR_SECURITY_MODE"] == "capabilities"
    assert env["CLAT_OPERATOR_NATIVE_SIDECAR"] == "on"
    env = env_of(render(VALUE_SETS["everything"]))
    assert env["CLAT_OPERATOR_SIDECAR_IMAGE"] == "registry.example/clat-sidecar:1.2.3"
    assert env["CLAT_OPERATOR_SIDECAR_IMAGE_PULL_POLICY"] == "Always"
    assert env["CLAT_OPERATOR_RESTART_MISSING"] == "true"
    assert env["CLAT_OPERATOR_NOT_READY_WARNING_SECONDS"] == "300"
    assert env["CLAT_OPERATOR_LOG_LEVEL"] == "debug"
    assert json.loads(env["CLAT_OPERATOR_SIDECAR_RESOURCES"]) == {
        "requests": {"cpu": "20m", "memory": "48Mi"},
        "limits": {"memory": "128Mi"},
    }
    # Without its own repository the sidecar uses the operator's image, digest included.
    env = env_of(render({"image": {"repository": "r.example/c", "digest": "sha256:" + "0" * 64}}))
    assert env["CLAT_OPERATOR_SIDECAR_IMAGE"] == "r.example/c@sha256:" + "0" * 64


# ---- RBAC ----------------------------------------------------------------------------------------


def _granted(
    objects: list[Manifest], component: str = "operator"
) -> set[tuple[str, str, str, str]]:
    """(scope, group, resource, verb) for every rule of the chart's roles of one component
    (operator, node-agent)."""
    granted: set[tuple[str, str, str, str]] = set()
    for role in (
        o
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, "system:discovery grants those to everyone"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), (
                            f"wildcard in {role['kind']}: {rule}"
                        )
                        granted.add((role["kind"], group, resource, verb))
    return granted


def _expected(calls: tuple[contract.ApiCall, ...]) -> set[tuple[str, str, str, str]]:
    # The operator works cluster-wide: every call (namespaced resources too) via the ClusterRole.
    return {("ClusterRole", c.group, c.resource, verb) for c in calls for verb in c.verbs}


def test_rbac_is_exactly_the_api_calls() -> None:
    assert _granted(render()) == _expected(contract.BASE_API_CALLS)
    # restartMissing needs the owner lookups and restarts as well: then every API call.
    assert _granted(render({"clat": {"restartMissing": True}})) == _expected(contract.API_CALLS)
    assert set(contract.API_CALLS) == set(
        contract.BASE_API_CALLS + contract.RESTART_MISSING_API_CALLS
    )


def test_rbac_never_grants_dev_mode_calls() -> None:
    dev = _expected(contract.DEV_MODE_API_CALLS)
    for values in VALUE_SETS.values():
        assert not (_granted(render(values)) & dev)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rbac_is_bound_to_the_operator(name: str) -> None:
    objects = render(VALUE_SETS[name])
    operator_name = one(objects, "Deployment")["metadata"]["name"]
    binding = one(objects, "ClusterRoleBinding", operator_name)
    role = one(objects, "ClusterRole", operator_name)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    accounts = [
        o
        for o in objects
        if o["kind"] == "ServiceAccount"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert [a["metadata"]["name"] for a in accounts] == [pod["serviceAccountName"]]


def test_existing_service_account() -> None:
    objects = render({"serviceAccount": {"create": False, "name": "platform-sa"}})
    assert "ServiceAccount" not in [o["kind"] for o in objects]
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-sa"
    objects = render(
        {"node": {"enabled": True, "serviceAccount": {"create": False, "name": "node-sa"}}}
    )
    assert "ServiceAccount" in [o["kind"] for o in objects]  # the operator's, still created
    binding = one(objects, "ClusterRoleBinding", "clat-operator-node")
    assert binding["subjects"][0]["name"] == "node-sa"
    assert node_daemonset(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "node-sa"


# ---- the operator pod ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_pod_is_hardened(name: str) -> None:
    objects = render(VALUE_SETS[name])
    deployment = one(objects, "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["command"] == ["clat-operator", "run"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The webhook certificate is mounted where the operator reads it.
    env = env_of(objects)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert env["CLAT_OPERATOR_TLS_CERT_FILE"] == f"{mount['mountPath']}/tls.crt"
    assert env["CLAT_OPERATOR_TLS_KEY_FILE"] == f"{mount['mountPath']}/tls.key"
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    secret_names = [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] + [
        o["spec"]["secretName"]
        for o in objects
        if o["kind"] == "Certificate" and not o["spec"].get("isCA")
    ]
    assert secret_names == [volume["secret"]["secretName"]]
    # Replicas spread over nodes; the PDB and the spread select exactly the operator pods.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    if name == "defaults":
        assert deployment["spec"]["replicas"] == 2
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
        assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_peering_matches_the_operator() -> None:
    """The chart ships kopf's peering CRD; the operator creates its ClusterKopfPeering itself
    (so that `kubectl apply` of one file never applies a CR before its CRD is established)."""
    objects = render()
    crd = one(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == contract.PEERING_CRD
    assert contract.PEERING_CLUSTERWIDE and crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == contract.PEERING_KIND
    assert (
        f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
        == contract.PEERING_API_VERSION
    )
    assert contract.PEERING_KIND not in [o["kind"] for o in objects]
    create = ApiCallKey(crd["spec"]["group"], crd["spec"]["names"]["plural"], "create")
    assert create in {
        ApiCallKey(c.group, c.resource, v) for c in contract.API_CALLS for v in c.verbs
    }


def test_pod_monitor_scrapes_the_sidecar() -> None:
    monitor = one(render(VALUE_SETS["everything"]), "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": contract.SIDECAR_PORT_NAME, "path": "/metrics", "interval": "15s"}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # by default every pod is looked at: pods opted in by annotation alone are scraped too
    default = one(render({"podMonitor": {"enabled": True}}), "PodMonitor")
    assert default["spec"]["selector"] == {}


def test_schema_allows_what_the_operator_accepts() -> None:
    """The schema's choices and bounds are the operator's: nothing it allows is refused later
    (a crash-looping operator), nothing the operator offers is refused by the chart."""
    from clat_operator import validation
    from clat_operator.config import ConfigError, NativeSidecar, SecurityMode
    from clat_translator.xlat import rfc6052

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    clat = schema["clat"]["properties"]
    sidecar = clat["sidecar"]["properties"]
    assert set(sidecar["securityMode"]["enum"]) == {m.value for m in SecurityMode}
    assert set(sidecar["native"]["enum"]) == {m.value for m in NativeSidecar}
    assert (clat["mtu"]["minimum"], clat["mtu"]["maximum"]) == (
        validation.MTU_MIN,
        validation.MTU_MAX,
    )
    prefix = re.compile(clat["platPrefix"]["pattern"])
    for length in range(0, 129):
        example = f"2001:db8::/{length}"
        assert bool(prefix.match(example)) == (length in rfc6052.PREFIX_LENGTHS), example

    base = env_of(render())
    base["CLAT_OPERATOR_NAMESPACE"] = NAMESPACE
    choices = {
        "CLAT_OPERATOR_LOG_LEVEL": schema["logLevel"]["enum"],
        "CLAT_OPERATOR_SIDECAR_IMAGE_PULL_POLICY": sidecar["image"]["properties"]["pullPolicy"][
            "enum"
        ],
        "CLAT_OPERATOR_MTU": [str(validation.MTU_MIN), str(validation.MTU_MAX)],
        "CLAT_OPERATOR_PLAT_PREFIX": ["64:ff9b::/96", "2001:db8:64::/96", "2001:db8::/32"],
    }
    for env, values in choices.items():
        for value in values:
            Config.from_env({**base, env: value})  # raises ConfigError if refused
    for env, value in (("CLAT_OPERATOR_LOG_LEVEL", "verbose"), ("CLAT_OPERATOR_MTU", "576")):
        with pytest.raises(ConfigError):
            Config.from_env({**base, env: value})
