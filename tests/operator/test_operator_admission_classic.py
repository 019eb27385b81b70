"""The webhook on an older cluster (API server 1.28: no native sidecars) with the other settings:
capabilities instead of privileged, a custom image, resources and MTU.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest
from clat_operator import contract
from clat_operator_harness import Emulator, Operator, Review, post_review, validate_pod
from clat_operator_pods import deployment_pod, job_pod, pod_with_init_containers

RESOURCES = {
    "requests": {"cpu": "20m", "memory": "48Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    tmp: pathlib.Path = tmp_path_factory.mktemp("classic")
    with (
        Emulator(version=(1, 28)) as emulator,
        Operator(
            emulator,
            tmp,
            SECURITY_MODE="capabilities",
            SIDECAR_IMAGE="registry.example/clat-operator:9.9",
            SIDECAR_IMAGE_PULL_POLICY="Always",
            SIDECAR_RESOURCES=json.dumps(RESOURCES),
            MTU="1380",
        ) as operator,
    ):
        yield operator


async def admit(operator: Operator, pod: dict, namespace: str = "shop") -> Review:
    url = f"https://localhost:{operator.webhook_port}{contract.WEBHOOK_PATH}"
    return await post_review(url, pod, namespace, operator.ssl_context())


async def test_classic_sidecar_is_the_first_container(operator: Operator) -> None:
    pod = deployment_pod()
    review = await admit(operator, pod)

    validate_pod(review.pod)
    names = [c["name"] for c in review.pod["spec"]["containers"]]
    assert names == ["clat", "app"]
    assert "initContainers" not in review.pod["spec"]
    clat = review.container()
    assert "restartPolicy" not in clat and "startupProbe" not in clat
    assert clat["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9180}
    assert clat["command"] == ["clat-translator", "run"]
    # kubectl logs/exec keep choosing the application by default.
    assert review.pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
    record = json.loads(review.pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED])
    assert record["mode"] == "classic"


async def test_settings_shape_the_sidecar(operator: Operator) -> None:
    review = await admit(operator, deployment_pod())

    clat = review.container()
    assert clat["image"] == "registry.example/clat-operator:9.9"
    assert clat["imagePullPolicy"] == "Always"
    assert clat["resources"] == RESOURCES
    assert review.env() == {"CLAT_MTU": "1380"}  # no prefix: the sidecar discovers it
    record = json.loads(review.pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED])
    assert record["prefixSource"] == "sidecar-discovery" and record["platPrefix"] is None


async def test_capabilities_mode_is_not_privileged(operator: Operator) -> None:
    review = await admit(operator, deployment_pod())

    assert review.container()["securityContext"] == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "runAsUser": 0,
        "runAsNonRoot": False,
        # BPF: the kernel data path (--datapath auto, the default) loads a tc program.
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW", "BPF"], "drop": ["ALL"]},
    }
    # /proc/sys is read-only without privileges: the kubelet turns on IPv6 forwarding instead.
    validate_pod(review.pod)
    assert review.pod["spec"]["securityContext"]["sysctls"] == [
        {"name": "net.ipv6.conf.all.forwarding", "value": "1"}
    ]


@pytest.mark.parametrize(
    ("datapath", "capabilities"),
    [
        ("kernel", ["NET_ADMIN", "NET_RAW", "BPF"]),
        ("auto", ["NET_ADMIN", "NET_RAW", "BPF"]),
        ("userspace", ["NET_ADMIN", "NET_RAW"]),  # no BPF program, no CAP_BPF
    ],
)
async def test_datapath_annotation_reaches_the_sidecar_with_what_it_needs(
    operator: Operator, datapath: str, capabilities: list[str]
) -> None:
    pod = deployment_pod({"clat.io/enabled": "true", "clat.io/datapath": datapath})
    review = await admit(operator, pod)

    assert review.env()["CLAT_DATAPATH"] == datapath
    assert review.container()["securityContext"]["capabilities"]["add"] == capabilities
    validate_pod(review.pod)


async def test_capabilities_mode_keeps_the_pods_own_sysctls(operator: Operator) -> None:
    pod = deployment_pod()
    pod["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
    }
    review = await admit(operator, pod)

    validate_pod(review.pod)
    assert review.pod["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "sysctls": [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
            {"name": "net.ipv6.conf.all.forwarding", "value": "1"},
        ],
    }


async def test_capabilities_mode_refuses_a_pod_that_turns_forwarding_off(
    operator: Operator,
) -> None:
    pod = deployment_pod()
    pod["spec"]["securityContext"] = {
        "sysctls": [{"name": "net.ipv6.conf.all.forwarding", "value": "0"}]
    }
    review = await admit(operator, pod)

    assert not review.allowed
    assert "net.ipv6.conf.all.forwarding='0'" in review.message
    assert "needs 1" in review.message


async def test_init_containers_untouched_in_classic_mode(operator: Operator) -> None:
    pod = pod_with_init_containers()
    review = await admit(operator, pod)

    validate_pod(review.pod)
    assert review.pod["spec"]["initContainers"] == pod["spec"]["initContainers"]
    assert review.pod["spec"]["containers"][0]["name"] == "clat"


async def test_existing_default_container_annotation_is_kept(operator: Operator) -> None:
    pod = deployment_pod(
        {"clat.io/enabled": "true", "kubectl.kubernetes.io/default-container": "app"}
    )
    review = await admit(operator, pod)

    assert "/metadata/annotations/kubectl.kubernetes.io~1default-container" not in {
        op["path"] for op in review.patch_ops
    }


async def test_job_pod_without_native_sidecars_is_not_injected(operator: Operator) -> None:
    review = await admit(operator, job_pod(), namespace="batch")

    assert review.allowed and review.patch_ops == []
    assert any("restartPolicy Never needs a native sidecar" in w for w in review.warnings)
