"""Node mode in the chart: the clat-node DaemonSet, its RBAC (exactly contract.NODE_API_CALLS),
the seams agent <-> operator (the socket directory) and chart <-> agent (its flags read by
clat-node's own parser), the host CLAT, and the render refusing node mode without the agent."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from clat_node import cli as node_cli
from clat_operator import contract
from clat_operator.config import ClatMode, Config, ConfigError
from clat_translator import cli as translator_cli

from tests.chart.chart import (
    CHART,
    HELM3,
    HELM4,
    NAMESPACE,
    VALUE_SETS,
    Manifest,
    container_env,
    env_of,
    helm,
    kinds,
    node_container,
    node_daemonset,
    one,
    render,
    template_args,
)

HELMS = [pytest.param(HELM3, id="helm3"), pytest.param(HELM4, id="helm4")]
NODE_SETS = [name for name, values in VALUE_SETS.items() if values.get("node", {}).get("enabled")]


def _pod(objects: list[Manifest]) -> dict[str, Any]:
    return dict(node_daemonset(objects)["spec"]["template"]["spec"])


def _mounts(container: Manifest) -> dict[str, Manifest]:
    return {m["name"]: m for m in container["volumeMounts"]}


def _host_paths(objects: list[Manifest]) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in _pod(objects)["volumes"]}


def test_node_mode_is_off_by_default() -> None:
    objects = render()
    assert "DaemonSet" not in kinds(objects)
    assert env_of(objects)["CLAT_OPERATOR_MODE"] == "sidecar"
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRole"] == [
        "clat-operator"
    ]


@pytest.mark.parametrize("name", NODE_SETS)
def test_agent_daemonset(name: str) -> None:
    values = VALUE_SETS[name]
    objects = render(values)
    daemonset = node_daemonset(objects)
    assert daemonset["metadata"]["namespace"] == NAMESPACE
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "node-agent"
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    # The operator's Deployment and Service never select the agents, and the reverse.
    operator_selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert operator_selector != selector
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    agent = node_container(objects)
    assert agent["command"] == ["clat-node", "agent"]
    env = container_env(agent)
    assert env["CLAT_NODE_NAME"] == "<fieldRef:spec.nodeName>"
    # Privileged (setns, bind mounts, TUN, nftables, BPF); the state dir with Bidirectional
    # propagation so the namespaces it bind-mounts outlive the container.
    assert agent["securityContext"]["privileged"] is True
    mounts = _mounts(agent)
    assert mounts["state"]["mountPropagation"] == "Bidirectional"
    assert env["CLAT_STATE_DIR"] == mounts["state"]["mountPath"]
    assert os.path.dirname(env["CLAT_SOCKET"]) == mounts["socket"]["mountPath"]
    node = values["node"]
    assert _host_paths(objects) == {
        "state": node.get("stateDir", "/run/clat-node/state"),
        "socket": node.get("socketDir", "/run/clat-node/socket"),
    }
    # Probes and metrics on the port the agent listens on.
    (port,) = agent["ports"]
    assert env["CLAT_LISTEN"] == f"[::]:{port['containerPort']}"
    assert port["containerPort"] == node.get("port", 9181)
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert agent["resources"]["requests"] and agent["resources"]["limits"]["memory"]
    # The same image as the injected containers (which carry clat-node handoff).
    assert agent["image"] == env_of(objects)["CLAT_OPERATOR_SIDECAR_IMAGE"]


@pytest.mark.parametrize("name", NODE_SETS)
def test_agent_and_injected_pods_meet_at_the_same_socket(name: str) -> None:
    """The socket the agent binds (its hostPath + file name) is the one the operator's init
    containers dial (CLAT_OPERATOR_NODE_SOCKET_DIR as hostPath + contract.HANDOFF_SOCKET)."""
    objects = render(VALUE_SETS[name])
    agent_socket = container_env(node_container(objects))["CLAT_SOCKET"]
    socket_dir = env_of(objects)["CLAT_OPERATOR_NODE_SOCKET_DIR"]
    assert _host_paths(objects)["socket"] == socket_dir
    assert os.path.basename(agent_socket) == os.path.basename(contract.HANDOFF_SOCKET)
    config = Config.from_env({**env_of(objects), "CLAT_OPERATOR_NAMESPACE": NAMESPACE})
    assert config.node_socket_dir == socket_dir
    # The agent's state is not in the directory that node-mode pods mount.
    state = _host_paths(objects)["state"]
    assert not (state + "/").startswith(socket_dir + "/")
    assert not (socket_dir + "/").startswith(state + "/")


@pytest.mark.parametrize("name", NODE_SETS)
def test_clat_node_reads_the_rendered_flags(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's env, with the downward API filled in, parses with clat-node's own parser."""
    objects = render(VALUE_SETS[name])
    agent = node_container(objects)
    for key in [k for k in list(os.environ) if k.startswith(node_cli.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in container_env(agent).items():
        monkeypatch.setenv(key, "node-a" if value == "<fieldRef:spec.nodeName>" else value)

    args = node_cli.build_parser().parse_args(agent["command"][1:])

    node = VALUE_SETS[name]["node"]
    assert args.command == "agent" and args.node_name == "node-a"
    assert args.socket == "/run/clat-node/socket/handoff.sock"
    assert args.state_dir == "/run/clat-node/state"
    assert args.datapath == node.get("datapath", "auto")
    assert args.reconcile_interval == node.get("reconcileInterval", 30)
    assert args.release_on_exit is node.get("releaseOnExit", False)
    assert args.plat_prefix == (VALUE_SETS[name].get("clat", {}).get("platPrefix") or None)
    assert args.dns64_env == node.get("dns64Servers", [])


def test_agent_rbac_is_exactly_its_api_calls() -> None:
    objects = render(VALUE_SETS["node-mode"])
    role = one(objects, "ClusterRole", "clat-operator-node")
    granted = {
        (rule_group, resource, verb)
        for rule in role["rules"]
        for rule_group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {(c.group, c.resource, v) for c in contract.NODE_API_CALLS for v in c.verbs}
    assert not any("*" in item for item in granted)
    binding = one(objects, "ClusterRoleBinding", "clat-operator-node")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = _pod(objects)["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert one(objects, "ServiceAccount", account)["metadata"]["namespace"] == NAMESPACE
    # The operator's own role is unchanged by node mode.
    operator_role = one(objects, "ClusterRole", "clat-operator")
    assert operator_role["rules"] == one(render(), "ClusterRole")["rules"]


def test_no_host_network_without_the_host_clat() -> None:
    pod = _pod(render(VALUE_SETS["node-mode"]))
    assert "hostNetwork" not in pod and "dnsPolicy" not in pod
    assert [c["name"] for c in pod["containers"]] == ["agent"]
    # Every node by default: node-mode pods find an agent wherever they run.
    assert pod["tolerations"] == [{"operator": "Exists"}]


def test_host_clat(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(VALUE_SETS["node-host-clat"])
    pod = _pod(objects)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    host = node_container(objects, "host-clat")
    assert host["command"] == ["clat-translator", "run"]
    assert host["securityContext"]["privileged"] is True
    env = container_env(host)
    # Its own device and nftables table: nothing of the host's own is touched.
    assert env["CLAT_TUN"] == "clat-host" and env["CLAT_NFT_TABLE"] == "clat_host"
    (port,) = host["ports"]
    assert port["containerPort"] == 9280 and env["CLAT_LISTEN"] == "[::]:9280"
    assert host["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    # Two listeners in one network namespace (the host's): on different ports.
    assert port["containerPort"] != node_container(objects)["ports"][0]["containerPort"]
    for key in [k for k in list(os.environ) if k.startswith(translator_cli.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = translator_cli.build_parser().parse_args(host["command"][1:])
    assert args.tun == "clat-host" and args.mtu == 1400
    assert args.plat_prefix == "2001:db8:64::/96"
    assert [str(s) for s in args.dns64_server] == ["2001:db8::53", "2001:db8::54"]
    # The agent's pods and the host CLAT are both scraped.
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    node_monitor = one(monitors, "PodMonitor", "clat-operator-node")
    assert [e["port"] for e in node_monitor["spec"]["podMetricsEndpoints"]] == [
        "metrics",
        "host-clat-http",
    ]
    assert node_monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert (
        node_monitor["spec"]["selector"]["matchLabels"]
        == node_daemonset(objects)["spec"]["selector"]["matchLabels"]
    )


def test_values_reach_the_daemonset() -> None:
    objects = render(VALUE_SETS["node-host-clat"])
    daemonset = node_daemonset(objects)
    pod = _pod(objects)
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "10%"}
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "ipv6-only": "true"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "edge"}]
    assert daemonset["spec"]["template"]["metadata"]["annotations"] == {"example.com/agent": "yes"}
    assert daemonset["spec"]["template"]["metadata"]["labels"]["tier"] == "node"
    assert pod["serviceAccountName"] == "clat-agent"
    account = one(objects, "ServiceAccount", "clat-agent")
    assert account["metadata"]["annotations"] == {"example.com/r": "x"}


@pytest.mark.parametrize("tool", HELMS)
@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"clat": {"mode": "node"}}, "clat.mode=node needs node.enabled=true"),
        ({"node": {"hostClat": True}}, "node.hostClat=true needs node.enabled=true"),
    ],
)
def test_node_mode_without_the_agent_fails_the_render(
    tool: Path, values: dict[str, Any], words: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        proc = helm(*template_args(values, directory), tool=tool, check=False)
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr


BAD_NODE_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "bad mode": ({"clat": {"mode": "agent"}}, "mode"),
    "bad datapath": ({"node": {"datapath": "ebpf"}}, "datapath"),
    "relative socket dir": ({"node": {"socketDir": "run/clat"}}, "socketDir"),
    "socket dir with ..": ({"node": {"socketDir": "/run/../etc"}}, "socketDir"),
    "socket dir /": ({"node": {"socketDir": "/"}}, "socketDir"),
    "state dir trailing /": ({"node": {"stateDir": "/run/clat/"}}, "stateDir"),
    "port 0": ({"node": {"port": 0}}, "port"),
    "zero reconcile": ({"node": {"reconcileInterval": 0}}, "reconcileInterval"),
    "hostClat as a string": ({"node": {"hostClat": "yes"}}, "hostClat"),
    "bad toleration": ({"node": {"tolerations": [{"operator": "Any"}]}}, "operator"),
    "bad update strategy": ({"node": {"updateStrategy": {"type": "Recreate"}}}, "type"),
    "dns server not an address": ({"node": {"dns64Servers": ["dns.example"]}}, "dns64Servers"),
    "unknown node key": ({"node": {"hostNetwork": True}}, "hostNetwork"),
}


@pytest.mark.parametrize("tool", HELMS)
@pytest.mark.parametrize("case", BAD_NODE_VALUES)
def test_schema_rejects_bad_node_values(tool: Path, case: str) -> None:
    values, word = BAD_NODE_VALUES[case]
    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        proc = helm(*template_args(values, directory), tool=tool, check=False)
    assert proc.returncode != 0, f"accepted: {values}"
    assert "schema" in proc.stderr and word in proc.stderr, proc.stderr


def test_schema_allows_what_the_operator_accepts() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert set(schema["clat"]["properties"]["mode"]["enum"]) == {m.value for m in ClatMode}
    assert set(schema["node"]["properties"]["datapath"]["enum"]) == set(node_cli.DATAPATHS)
    directory = schema["node"]["properties"]["socketDir"]
    base = {**env_of(render()), "CLAT_OPERATOR_NAMESPACE": NAMESPACE}
    for path in ("/run/clat-node/socket", "/var/run/x", "/a", "/run/.clat", "/run/clat..d", "/"):
        try:
            jsonschema.validate(path, directory)
            schema_ok = True
        except jsonschema.ValidationError:
            schema_ok = False
        try:
            Config.from_env({**base, "CLAT_OPERATOR_NODE_SOCKET_DIR": path})
            operator_ok = True
        except ConfigError:
            operator_ok = False
        assert schema_ok == operator_ok, path
