"""Node mode at admission, over real HTTPS: the unprivileged `clat-handoff` init container
instead of the `clat` sidecar, the cluster setting CLAT_OPERATOR_MODE and the per-pod
`clat.io/mode`.

Two operators against one emulator: one in node mode (classic sidecars only, NATIVE_SIDECAR=off,
so that a Job's pod shows what node mode changes), one in sidecar mode. Every JSONPatch is
applied with `jsonpatch` and the pod validated for Kubernetes 1.29 and the newest schema.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

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

SOCKET_DIR = "/var/run/clat-node-test/socket"
CLUSTER_PREFIX = "2001:db8:64::/96"


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
def node_operator(
    emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    tmp: pathlib.Path = tmp_path_factory.mktemp("node-mode")
    with Operator(
        emulator,
        tmp,
        MODE="node",
        NODE_SOCKET_DIR=SOCKET_DIR,
        NATIVE_SIDECAR="off",
        PLAT_PREFIX=CLUSTER_PREFIX,
    ) as operator:
        yield operator


@pytest.fixture(scope="module")
def sidecar_operator(
    emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    tmp: pathlib.Path = tmp_path_factory.mktemp("sidecar-mode")
    with Operator(emulator, tmp, PLAT_PREFIX=CLUSTER_PREFIX) as operator:
        yield operator


async def admit(
    operator: Operator, pod: dict[str, Any], namespace: str = "shop", **kw: Any
) -> Review:
    url = f"https://localhost:{operator.webhook_port}{contract.WEBHOOK_PATH}"
    return await post_review(url, pod, namespace, operator.ssl_context(), **kw)


def names(review: Review, key: str) -> list[str]:
    return [c["name"] for c in review.pod["spec"].get(key) or []]


def assert_restricted(container: dict[str, Any]) -> None:
    """What the Pod Security Standards' "restricted" level requires of a container (checked on
    the container itself, so that it holds whatever the pod's own securityContext says)."""
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0 and context["runAsGroup"] != 0
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}  # nothing added, not even NET_BIND
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert "ports" not in container and "hostPort" not in json.dumps(container)


async def test_node_mode_injects_the_unprivileged_handoff_first(node_operator: Operator) -> None:
    pod = deployment_pod()
    review = await admit(node_operator, pod)

    assert review.allowed and review.warnings == []
    validate_pod(review.pod)
    # kopf sends the difference: the pod's one volume stays, the socket volume is appended.
    assert {(op["op"], op["path"]) for op in review.patch_ops} == {
        ("add", "/spec/initContainers"),
        ("add", "/spec/volumes/1"),
        ("add", "/metadata/annotations/clat.io~1injected"),
    }
    # No privileged sidecar: the app containers are untouched, one init container is added.
    assert review.pod["spec"]["containers"] == pod["spec"]["containers"]
    assert names(review, "initContainers") == [contract.HANDOFF_CONTAINER_NAME]
    handoff = review.container(contract.HANDOFF_CONTAINER_NAME)
    assert handoff["command"] == ["clat-node", "handoff"]
    assert handoff["image"] == contract.DEFAULT_SIDECAR_IMAGE
    assert "restartPolicy" not in handoff  # an ordinary init container: it ends once IPv4 works
    assert_restricted(handoff)
    assert handoff["resources"] == json.loads(contract.DEFAULT_HANDOFF_RESOURCES)
    assert handoff["env"] == [
        {
            "name": "CLAT_POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        },
        {
            "name": "CLAT_POD_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
        {
            "name": "CLAT_POD_UID",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}},
        },
        {"name": "CLAT_SOCKET", "value": "/run/clat-node/handoff.sock"},
    ]
    # The node's socket directory, read-only: the only hostPath, and the pod's own volumes kept.
    assert handoff["volumeMounts"] == [
        {"name": "clat-handoff-socket", "mountPath": "/run/clat-node", "readOnly": True}
    ]
    assert review.pod["spec"]["volumes"] == [
        *pod["spec"]["volumes"],
        {
            "name": "clat-handoff-socket",
            "hostPath": {"path": SOCKET_DIR, "type": "DirectoryOrCreate"},
        },
    ]
    # Nothing of the host's namespaces is asked for.
    for key in ("hostNetwork", "hostPID", "hostIPC", "securityContext"):
        assert key not in review.pod["spec"]
    record = json.loads(review.pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED])
    assert record["mode"] == "node"
    assert record["platPrefix"] is None and record["prefixSource"] == "node-agent"
    assert "kubectl.kubernetes.io/default-container" not in review.pod["metadata"]["annotations"]


async def test_handoff_runs_before_the_pods_own_init_containers(node_operator: Operator) -> None:
    pod = pod_with_init_containers()
    review = await admit(node_operator, pod)

    validate_pod(review.pod)
    assert names(review, "initContainers") == [
        contract.HANDOFF_CONTAINER_NAME,
        "migrate",
        "log-shipper",
        "warm-cache",
    ]
    assert review.pod["spec"]["initContainers"][1:] == pod["spec"]["initContainers"]
    # The pod's restricted-style securityContext is left as it is; the hand-off satisfies it too.
    assert review.pod["spec"]["securityContext"] == pod["spec"]["securityContext"]
    assert_restricted(review.container(contract.HANDOFF_CONTAINER_NAME))


async def test_a_pod_without_volumes_gets_only_the_socket_volume(node_operator: Operator) -> None:
    review = await admit(node_operator, bare_pod("tool", ENABLED), namespace="apps")

    validate_pod(review.pod)
    assert [v["name"] for v in review.pod["spec"]["volumes"]] == ["clat-handoff-socket"]


async def test_node_mode_serves_jobs_without_native_sidecars(
    node_operator: Operator, sidecar_operator: Operator
) -> None:
    """An init container that exits does not keep a Job's pod running: node mode needs no native
    sidecar (this operator has NATIVE_SIDECAR=off, and refuses the same pod in sidecar mode)."""
    node = await admit(node_operator, job_pod(), namespace="batch")
    validate_pod(node.pod)
    assert names(node, "initContainers") == [contract.HANDOFF_CONTAINER_NAME]

    as_sidecar = job_pod()
    as_sidecar["metadata"]["annotations"][contract.ANNOTATION_MODE] = "sidecar"
    refused = await admit(node_operator, as_sidecar, namespace="batch")
    assert refused.allowed and refused.patch_ops == []
    assert any("needs a native sidecar" in w for w in refused.warnings)


async def test_clat_io_mode_overrides_the_cluster_setting(
    node_operator: Operator, sidecar_operator: Operator
) -> None:
    to_sidecar = await admit(node_operator, deployment_pod({**ENABLED, "clat.io/mode": "sidecar"}))
    to_node = await admit(sidecar_operator, deployment_pod({**ENABLED, "clat.io/mode": "node"}))
    default = await admit(sidecar_operator, deployment_pod())

    validate_pod(to_sidecar.pod)
    # The node-mode operator injects classic sidecars (NATIVE_SIDECAR=off) for sidecar pods.
    assert names(to_sidecar, "containers") == ["clat", "app"]
    assert names(to_sidecar, "initContainers") == []
    assert "volumes" not in {op["path"].split("/")[2] for op in to_sidecar.patch_ops}
    validate_pod(to_node.pod)
    assert names(to_node, "initContainers") == [contract.HANDOFF_CONTAINER_NAME]
    assert names(to_node, "containers") == ["app"]
    assert_restricted(to_node.container(contract.HANDOFF_CONTAINER_NAME))
    # The sidecar-mode operator's default is the native sidecar, as before.
    assert names(default, "initContainers") == ["clat"]


@pytest.mark.parametrize("value", ["Node", "agent", "", "sidecar,node"])
async def test_invalid_mode_is_refused_naming_it(
    node_operator: Operator, sidecar_operator: Operator, value: str
) -> None:
    for operator in (node_operator, sidecar_operator):
        review = await admit(operator, deployment_pod({**ENABLED, "clat.io/mode": value}))

        assert not review.allowed and review.patch_ops == []
        assert review.response["status"]["code"] == 400
        assert f"annotation clat.io/mode={value!r} is not allowed" in review.message
        assert "allowed: sidecar, node" in review.message
        assert "Traceback" not in review.message


async def test_mode_on_a_pod_that_is_not_opted_in_warns(node_operator: Operator) -> None:
    review = await admit(node_operator, deployment_pod({"clat.io/mode": "node"}), namespace="plain")

    assert review.allowed and review.patch_ops == []
    assert any("clat.io/mode ignored: the pod is not opted in" in w for w in review.warnings)


async def test_per_pod_settings_the_agent_does_not_apply_warn(node_operator: Operator) -> None:
    annotations = {
        **ENABLED,
        "clat.io/plat-prefix": "2001:db8:100::/64",
        "clat.io/mtu": "1400",
        "clat.io/v6-address": "2001:db8:1:2::c1a7",
        "clat.io/datapath": "userspace",
    }
    review = await admit(node_operator, deployment_pod(annotations))

    assert review.allowed
    validate_pod(review.pod)
    (warning,) = review.warnings
    assert warning.startswith(
        "clat.io/plat-prefix, clat.io/mtu, clat.io/v6-address, clat.io/datapath ignored: "
        "in node mode"
    )
    assert 'clat.io/mode: "sidecar"' in warning
    handoff = review.container(contract.HANDOFF_CONTAINER_NAME)
    assert {e["name"] for e in handoff["env"]} == {
        "CLAT_POD_NAMESPACE",
        "CLAT_POD_NAME",
        "CLAT_POD_UID",
        "CLAT_SOCKET",
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [("clat.io/mtu", "99999"), ("clat.io/plat-prefix", "2001:db8::/60")],
)
async def test_invalid_settings_are_refused_in_node_mode_too(
    node_operator: Operator, key: str, value: str
) -> None:
    review = await admit(node_operator, deployment_pod({**ENABLED, key: value}))

    assert not review.allowed and review.patch_ops == []
    assert f"annotation {key}={value!r} is not allowed" in review.message


async def test_node_mode_injection_is_idempotent(
    node_operator: Operator, sidecar_operator: Operator
) -> None:
    first = await admit(node_operator, deployment_pod())
    again = await admit(node_operator, first.pod)  # reinvocationPolicy: IfNeeded
    # Already served the other way: neither mode adds its container beside the other's.
    in_sidecar_cluster = await admit(sidecar_operator, first.pod)
    sidecar_pod = (await admit(sidecar_operator, deployment_pod())).pod
    in_node_cluster = await admit(node_operator, sidecar_pod)
    own = bare_pod("own-handoff", ENABLED, initContainers=[{"name": "clat-handoff", "image": "x"}])
    own_named = await admit(node_operator, own)

    assert first.patch_ops
    for review in (again, in_sidecar_cluster, in_node_cluster, own_named):
        assert review.allowed and review.patch_ops == []


async def test_a_volume_of_the_same_name_is_refused(node_operator: Operator) -> None:
    pod = deployment_pod()
    pod["spec"]["volumes"].append({"name": "clat-handoff-socket", "emptyDir": {}})
    review = await admit(node_operator, pod)

    assert not review.allowed and review.patch_ops == []
    assert "volume named clat-handoff-socket" in review.message


async def test_host_network_pod_is_left_alone_in_node_mode(node_operator: Operator) -> None:
    review = await admit(node_operator, host_network_pod())

    assert review.allowed and review.patch_ops == []
    assert any("clat hand-off not injected" in w and "hostNetwork" in w for w in review.warnings)


async def test_node_mode_dry_run_gets_the_same_patch(node_operator: Operator) -> None:
    real = await admit(node_operator, deployment_pod())
    dry = await admit(node_operator, deployment_pod(), dry_run=True)

    assert dry.patch_ops == real.patch_ops
