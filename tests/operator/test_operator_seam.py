"""The operator -> sidecar seam: the CLAT_* environment the operator renders is read by the
sidecar's own argument parser (clat_translator.cli) into the settings the operator meant."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from clat_node import cli as node_cli
from clat_node import protocol as node_protocol
from clat_operator import contract, injection, validation
from clat_operator.config import ClatMode, Config, SecurityMode
from clat_operator_pods import deployment_pod
from clat_translator import cli
from clat_translator.runner import RunSettings

EVERY_ANNOTATION = {
    contract.ANNOTATION_ENABLED: "true",
    contract.ANNOTATION_PLAT_PREFIX: "2001:db8:64::/96",
    contract.ANNOTATION_MTU: "1400",
    contract.ANNOTATION_V6_ADDRESS: "2001:db8:aa::c1a7",
    contract.ANNOTATION_DATAPATH: "kernel",
    contract.ANNOTATION_MODE: "sidecar",
}


def test_every_annotation_is_covered_here() -> None:
    assert set(EVERY_ANNOTATION) == set(contract.USER_ANNOTATIONS)


def sidecar_of(pod: dict[str, Any], runtime: injection.Runtime, **config: Any) -> dict[str, Any]:
    plan = injection.plan(pod, "shop", None, Config(**config), runtime)
    assert plan.inject, plan.reason
    containers = plan.init_containers if plan.native else plan.containers
    assert containers is not None
    (sidecar,) = [c for c in containers if c["name"] == contract.SIDECAR_CONTAINER_NAME]
    return sidecar


def parsed_by_the_sidecar(sidecar: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> RunSettings:
    """What `clat-translator run` would run with, given the container's command and env."""
    for key in [k for k in list(os.environ) if k.startswith(cli.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for variable in sidecar.get("env") or []:
        monkeypatch.setenv(variable["name"], variable["value"])
    assert sidecar["command"][0] == "clat-translator"
    return cli.run_settings(cli.build_parser().parse_args(sidecar["command"][1:]))


def test_a_pod_with_every_annotation_gets_what_it_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = deployment_pod(dict(EVERY_ANNOTATION))
    # An application on the sidecar's port: the sidecar moves up and is told so (CLAT_LISTEN).
    pod["spec"]["containers"][0]["ports"].append(
        {"name": "metrics", "containerPort": contract.SIDECAR_HTTP_PORT, "protocol": "TCP"}
    )
    sidecar = sidecar_of(pod, injection.Runtime(native_sidecar=True))
    rendered = {v["name"] for v in sidecar["env"]}
    assert rendered == {
        "CLAT_PLAT_PREFIX",
        "CLAT_MTU",
        "CLAT_CLAT_V6",
        "CLAT_DATAPATH",
        "CLAT_LISTEN",
    }

    settings = parsed_by_the_sidecar(sidecar, monkeypatch)

    assert settings == dataclasses.replace(
        RunSettings(),
        plat_prefix="2001:db8:64::/96",
        mtu=1400,
        clat_v6="2001:db8:aa::c1a7",
        datapath="kernel",
        listen=f"[::]:{contract.SIDECAR_HTTP_PORT + 1}",
    )
    port = sidecar["ports"][0]["containerPort"]
    assert settings.listen == f"[::]:{port}"  # the probes ask where the sidecar listens


def test_cluster_defaults_and_the_operators_discovered_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = injection.Runtime(native_sidecar=False, discovered_prefix="2001:db8:6464::/64")
    sidecar = sidecar_of(deployment_pod(), runtime, mtu=1380)

    settings = parsed_by_the_sidecar(sidecar, monkeypatch)

    # Discovered by the operator: only a hint, which the sidecar re-checks itself.
    assert settings == dataclasses.replace(
        RunSettings(), plat_prefix_hint="2001:db8:6464::/64", mtu=1380
    )


def test_nothing_set_means_the_sidecars_own_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    sidecar = sidecar_of(deployment_pod(), injection.Runtime(native_sidecar=True))
    assert "env" not in sidecar
    assert parsed_by_the_sidecar(sidecar, monkeypatch) == RunSettings()


@pytest.mark.parametrize("datapath", validation.DATAPATH_VALUES)
def test_every_datapath_the_operator_admits_the_sidecar_accepts(
    datapath: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert validation.DATAPATH_VALUES == cli.DATAPATHS
    pod = deployment_pod({contract.ANNOTATION_ENABLED: "true", "clat.io/datapath": datapath})
    sidecar = sidecar_of(
        pod, injection.Runtime(native_sidecar=True), security_mode=SecurityMode.CAPABILITIES
    )
    assert parsed_by_the_sidecar(sidecar, monkeypatch).datapath == datapath
    capabilities = sidecar["securityContext"]["capabilities"]["add"]
    assert ("BPF" in capabilities) == (datapath != "userspace")


@pytest.mark.parametrize(
    "prefix", ["2001:db8::/32", "2001:db8:100::/40", "64:ff9b::/96", "fd00:64::/64"]
)
def test_every_prefix_the_operator_admits_the_sidecar_accepts(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = deployment_pod({contract.ANNOTATION_ENABLED: "true", "clat.io/plat-prefix": prefix})
    sidecar = sidecar_of(pod, injection.Runtime(native_sidecar=True))
    assert parsed_by_the_sidecar(sidecar, monkeypatch).plat_prefix == prefix


# ---- node mode: the operator -> `clat-node handoff` seam ----------------------------------


def test_the_handoff_container_is_read_by_clat_node_handoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The init container's command and environment, with the downward API's values filled in
    as the kubelet does, parse into the hand-off the agent expects, on the agent's socket."""
    plan = injection.plan(
        deployment_pod(), "shop", None, Config(mode=ClatMode.NODE), injection.Runtime(False)
    )
    assert plan.init_containers is not None
    handoff = plan.init_containers[0]
    assert handoff["name"] == contract.HANDOFF_CONTAINER_NAME
    downward = {
        "metadata.namespace": "shop",
        "metadata.name": "web-0",
        "metadata.uid": "0b9c6f5d-7d4b-4c1a-9e3f-5a2b1c0d9e8f",
    }
    for key in [k for k in list(os.environ) if k.startswith(node_cli.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for variable in handoff["env"]:
        value = variable.get("value")
        if value is None:
            value = downward[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        monkeypatch.setenv(variable["name"], value)
    assert handoff["command"][0] == "clat-node"

    args = node_cli.build_parser().parse_args(handoff["command"][1:])

    assert args.command == "handoff"
    assert (args.pod_namespace, args.pod_name, args.pod_uid) == (
        "shop",
        "web-0",
        downward["metadata.uid"],
    )
    # The socket the init container dials is clat-node's default, in the mounted directory.
    assert args.socket == contract.HANDOFF_SOCKET == node_protocol.DEFAULT_SOCKET
    (mount,) = handoff["volumeMounts"]
    assert args.socket == f"{mount['mountPath']}/handoff.sock" and mount["readOnly"] is True
    node_protocol.Hello(namespace="shop", name="web-0", uid=args.pod_uid)  # a valid hello


def test_the_mode_values_are_the_configs() -> None:
    assert tuple(m.value for m in ClatMode) == validation.MODE_VALUES
