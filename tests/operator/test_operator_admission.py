"""The admission webhook over real HTTPS, as the API server calls it in a cluster.

The operator runs in its in-cluster mode (the chart's certificate files, no webhook
configuration of its own) against kmock's emulator, whose /version says 1.30, so it injects
native sidecars. Every answer's JSONPatch is applied with `jsonpatch` and the result is
validated against the Pod schema of Kubernetes 1.29 and of the newest version
kubernetes-validate ships.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import kmock
import pytest
from clat_operator import contract
from clat_operator_harness import Emulator, Operator, Review, post_review, validate_pod
from clat_operator_pods import (
    ENABLED,
    bare_pod,
    deployment_pod,
    host_network_pod,
    job_pod,
    pod_with_init_containers,
)

CLUSTER_PREFIX = "2001:db8:64::/96"
DEFAULT_RESOURCES = json.loads(contract.DEFAULT_SIDECAR_RESOURCES)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(version=(1, 30)) as emulator:
        emulator.put_object(
            "v1/namespaces",
            None,
            "apps",
            {"metadata": {"name": "apps", "labels": {"clat.io/enabled": "true"}}},
        )
        emulator.put_object(
            "v1/namespaces", None, "plain", {"metadata": {"name": "plain", "labels": {"team": "a"}}}
        )
        yield emulator


@pytest.fixture(scope="module")
def operator(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    tmp: pathlib.Path = tmp_path_factory.mktemp("admission")
    with Operator(
        emulator,
        tmp,
        PLAT_PREFIX=CLUSTER_PREFIX,
        NAMESPACE="clat-system",
        EXCLUDE_NAMESPACES="legacy, batch-old",
    ) as operator:
        yield operator


async def admit(
    operator: Operator, pod: dict, namespace: str = "default", host: str = "localhost", **kw
) -> Review:
    host = f"[{host}]" if ":" in host else host
    url = f"https://{host}:{operator.webhook_port}{contract.WEBHOOK_PATH}"
    return await post_review(url, pod, namespace, operator.ssl_context(), **kw)


def op_paths(review: Review) -> set[str]:
    return {op["path"] for op in review.patch_ops}


async def test_deployment_pod_gets_a_native_sidecar(operator: Operator) -> None:
    pod = deployment_pod()
    review = await admit(operator, pod, namespace="shop")

    assert review.allowed and review.warnings == []
    validate_pod(review.pod)
    # Only two things change: the init containers and two annotations.
    assert op_paths(review) == {"/spec/initContainers", "/metadata/annotations/clat.io~1injected"}
    assert review.pod["spec"]["containers"] == pod["spec"]["containers"]
    clat = review.pod["spec"]["initContainers"][0]
    assert clat["name"] == "clat"
    assert clat["command"] == ["clat-translator", "run"]
    assert clat["image"] == contract.DEFAULT_SIDECAR_IMAGE
    assert clat["imagePullPolicy"] == "IfNotPresent"
    assert clat["restartPolicy"] == "Always"  # native sidecar (KEP-753)
    assert clat["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 9180}
    assert clat["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9180}
    assert clat["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9180}
    assert clat["ports"] == [{"name": "clat-http", "containerPort": 9180, "protocol": "TCP"}]
    assert clat["securityContext"] == {"privileged": True, "runAsUser": 0, "runAsNonRoot": False}
    assert clat["resources"] == DEFAULT_RESOURCES
    assert review.env() == {"CLAT_PLAT_PREFIX": CLUSTER_PREFIX}
    record = json.loads(review.pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED])
    assert record["mode"] == "native"
    assert record["platPrefix"] == CLUSTER_PREFIX
    assert record["prefixSource"] == "cluster-setting"


async def test_existing_init_containers_run_after_clat_in_their_order(operator: Operator) -> None:
    pod = pod_with_init_containers()
    review = await admit(operator, pod, namespace="shop")

    validate_pod(review.pod)
    names = [c["name"] for c in review.pod["spec"]["initContainers"]]
    assert names == ["clat", "migrate", "log-shipper", "warm-cache"]
    assert review.pod["spec"]["initContainers"][1:] == pod["spec"]["initContainers"]
    # The pod stays non-root; only the clat container runs as root (it creates a TUN).
    assert review.pod["spec"]["securityContext"] == pod["spec"]["securityContext"]
    assert review.container()["securityContext"]["runAsNonRoot"] is False
    assert review.container()["securityContext"]["runAsUser"] == 0
    app = review.container("app")
    assert app["resources"] == pod["spec"]["containers"][0]["resources"]
    assert app["readinessProbe"] == pod["spec"]["containers"][0]["readinessProbe"]


async def test_per_pod_annotations_reach_the_sidecar_environment(operator: Operator) -> None:
    pod = deployment_pod(
        {
            "clat.io/enabled": "true",
            "clat.io/plat-prefix": "2001:db8:100::/64",
            "clat.io/mtu": "1400",
            "clat.io/v6-address": "2001:db8:1:2::c1a7",
        }
    )
    review = await admit(operator, pod, namespace="shop")

    validate_pod(review.pod)
    assert review.env() == {
        "CLAT_PLAT_PREFIX": "2001:db8:100::/64",
        "CLAT_MTU": "1400",
        "CLAT_CLAT_V6": "2001:db8:1:2::c1a7",
    }
    record = json.loads(review.pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED])
    assert record["prefixSource"] == "annotation"


@pytest.mark.parametrize(
    ("key", "value", "allowed_text"),
    [
        ("clat.io/plat-prefix", "2001:db8::/60", "/32, /40, /48, /56, /64, /96"),
        ("clat.io/plat-prefix", "10.64.0.0/16", "IPv6 prefix"),
        ("clat.io/plat-prefix", "64:ff9b::1/96", "no bits set after its length"),
        ("clat.io/plat-prefix", "2001:db8:0:0:ff00::/96", "bits 64-71"),
        ("clat.io/mtu", "1200", "from 1260 to 65515"),
        ("clat.io/mtu", "jumbo", "from 1260 to 65515"),
        ("clat.io/v6-address", "2001:db8::/64", "one IPv6 address"),
        ("clat.io/v6-address", "fe80::1", "global or unique-local unicast"),
        ("clat.io/v6-address", "2001:db8:64::5", f"inside the PLAT prefix {CLUSTER_PREFIX}"),
        ("clat.io/enabled", "yes", 'allowed: "true" or "false"'),
        ("clat.io/datapath", "ebpf", "allowed: auto, kernel, userspace"),
    ],
)
async def test_invalid_annotation_is_refused_naming_it(
    operator: Operator, key: str, value: str, allowed_text: str
) -> None:
    annotations = {"clat.io/enabled": "true", key: value}
    review = await admit(operator, deployment_pod(annotations), namespace="shop")

    assert not review.allowed
    assert review.patch_ops == []
    assert review.response["status"]["code"] == 400
    assert f"{key}={value!r}" in review.message
    assert allowed_text in review.message
    assert "Traceback" not in review.message


async def test_all_invalid_annotations_are_named_at_once(operator: Operator) -> None:
    annotations = {
        "clat.io/enabled": "true",
        "clat.io/mtu": "99999",
        "clat.io/plat-prefix": "nonsense",
    }
    review = await admit(operator, deployment_pod(annotations), namespace="shop")

    assert not review.allowed
    assert "clat.io/mtu='99999'" in review.message
    assert "clat.io/plat-prefix='nonsense'" in review.message


async def test_enabled_label_and_annotation_must_agree(operator: Operator) -> None:
    pod = deployment_pod()
    pod["metadata"]["labels"]["clat.io/enabled"] = "false"
    review = await admit(operator, pod, namespace="shop")

    assert not review.allowed
    assert "disagree" in review.message


async def test_unknown_clat_annotation_gives_a_warning(operator: Operator) -> None:
    pod = deployment_pod({"clat.io/enabled": "true", "clat.io/prefix": "64:ff9b::/96"})
    review = await admit(operator, pod, namespace="shop")

    assert review.allowed
    assert review.container()["name"] == "clat"
    assert len(review.warnings) == 1
    assert "clat.io/prefix" in review.warnings[0] and "clat.io/plat-prefix" in review.warnings[0]


async def test_host_network_pod_is_left_alone_with_a_warning(operator: Operator) -> None:
    review = await admit(operator, host_network_pod(), namespace="shop")

    assert review.allowed and review.patch_ops == []
    assert any("hostNetwork" in w for w in review.warnings)


async def test_namespace_label_opts_pods_in_unless_they_opt_out(operator: Operator) -> None:
    opted_in = await admit(operator, deployment_pod(annotations={}), namespace="apps")
    opted_out = await admit(
        operator, deployment_pod({"clat.io/enabled": "false"}), namespace="apps"
    )
    plain = await admit(operator, deployment_pod(annotations={}), namespace="plain")

    validate_pod(opted_in.pod)
    assert opted_in.container()["name"] == "clat"
    assert opted_out.allowed and opted_out.patch_ops == [] and opted_out.warnings == []
    assert plain.allowed and plain.patch_ops == [] and plain.warnings == []


async def test_pod_label_opts_in(operator: Operator) -> None:
    pod = deployment_pod(annotations={})
    pod["metadata"]["labels"]["clat.io/enabled"] = "true"
    review = await admit(operator, pod, namespace="plain")

    validate_pod(review.pod)
    assert review.container()["name"] == "clat"


async def test_settings_annotations_on_a_pod_that_is_not_opted_in_warn(operator: Operator) -> None:
    review = await admit(operator, deployment_pod({"clat.io/mtu": "1400"}), namespace="plain")

    assert review.allowed and review.patch_ops == []
    assert any("clat.io/mtu ignored" in w for w in review.warnings)


async def test_namespace_labels_are_read_once_and_cached(
    operator: Operator, emulator: Emulator
) -> None:
    def reads() -> int:
        return sum(1 for r in emulator.requests() if r.url.path == "/api/v1/namespaces/plain")

    await admit(operator, deployment_pod(annotations={}), namespace="plain")
    before = reads()
    for _ in range(3):
        await admit(operator, deployment_pod(annotations={}), namespace="plain")
    assert before >= 1
    assert reads() == before


@pytest.mark.parametrize("namespace", ["kube-system", "clat-system", "legacy", "batch-old"])
async def test_excluded_namespaces_are_never_injected(operator: Operator, namespace: str) -> None:
    review = await admit(operator, deployment_pod(), namespace=namespace)

    assert review.allowed and review.patch_ops == [] and review.warnings == []


async def test_injection_is_idempotent(operator: Operator) -> None:
    first = await admit(operator, deployment_pod(), namespace="shop")
    again = await admit(operator, first.pod, namespace="shop")  # e.g. reinvocationPolicy: IfNeeded
    named_clat = await admit(
        operator, bare_pod("own-clat", ENABLED, containers=[{"name": "clat", "image": "x"}])
    )

    assert first.patch_ops
    assert again.allowed and again.patch_ops == []
    assert named_clat.allowed and named_clat.patch_ops == []


async def test_dry_run_gets_the_same_patch(operator: Operator) -> None:
    real = await admit(operator, deployment_pod(), namespace="shop")
    dry = await admit(operator, deployment_pod(), namespace="shop", dry_run=True)

    assert dry.patch_ops == real.patch_ops


async def test_sidecar_moves_off_a_port_the_app_uses(operator: Operator) -> None:
    pod = deployment_pod()
    pod["spec"]["containers"][0]["ports"].append({"name": "metrics", "containerPort": 9180})
    review = await admit(operator, pod, namespace="shop")

    validate_pod(review.pod)
    clat = review.container()
    assert clat["ports"][0]["containerPort"] == 9181
    assert clat["startupProbe"]["httpGet"]["port"] == 9181
    assert review.env()["CLAT_LISTEN"] == "[::]:9181"


async def test_job_pods_get_a_native_sidecar(operator: Operator) -> None:
    review = await admit(operator, job_pod(), namespace="batch")

    validate_pod(review.pod)
    assert review.container()["restartPolicy"] == "Always"


async def test_webhook_is_served_only_at_the_contract_path(operator: Operator) -> None:
    served = await admit(operator, deployment_pod(), namespace="shop")
    other = await post_review(
        f"https://localhost:{operator.webhook_port}/",
        deployment_pod(),
        "shop",
        operator.ssl_context(),
    )

    assert served.patch_ops
    assert other.allowed and other.patch_ops == []  # no handler there: kopf admits untouched


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_webhook_answers_on_ipv6_and_ipv4(operator: Operator, host: str) -> None:
    review = await admit(operator, deployment_pod(), namespace="shop", host=host)

    assert review.container()["name"] == "clat"


def test_health_endpoints(operator: Operator) -> None:
    assert operator.health(contract.HEALTH_PATH) == 200
    assert operator.health(contract.READY_PATH) == 200
    assert operator.health("/nothing") == 404


def test_in_cluster_mode_manages_no_webhook_configuration(
    operator: Operator, emulator: Emulator
) -> None:
    touched = {
        r.resource.plural
        for r in emulator.requests()
        if r.resource is not None and r.resource.group == "admissionregistration.k8s.io"
        if r.resource.plural is not None  # not discovery
    }
    assert touched == set()


async def test_unreadable_namespace_admits_the_pod_untouched_with_a_warning(
    operator: Operator, emulator: Emulator
) -> None:
    async def break_namespace(k8s: kmock.KubernetesEmulator) -> None:
        k8s["get /api/v1/namespaces/broken"] ** 10 << 500  # over the harness namespace reader

    emulator.call(break_namespace)
    review = await admit(operator, deployment_pod(annotations={}), namespace="broken")

    assert review.allowed and review.patch_ops == []
    assert len(review.warnings) == 1
    assert "could not read the labels of namespace broken" in review.warnings[0]
    assert "admitted without the clat sidecar" in review.warnings[0]
