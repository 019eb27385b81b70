"""The operator's pure parts: annotation values, settings, the decision rules, report texts."""

from __future__ import annotations

import datetime
import ipaddress
import json

import pytest
from clat_operator import config, contract, handlers, injection, reporting, validation
from clat_operator.config import Config, ConfigError
from clat_operator_pods import ENABLED, bare_pod, deployment_pod
from clat_translator.xlat import rfc6052

# ---- annotation values ---------------------------------------------------------------------


@pytest.mark.parametrize("length", rfc6052.PREFIX_LENGTHS)
def test_every_rfc6052_prefix_length_is_accepted(length: int) -> None:
    network = ipaddress.IPv6Network(f"2001:db8::/{length}")
    assert validation.plat_prefix(str(network)) == network


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001:db8::/33", "RFC 6052 allows prefix lengths /32, /40, /48, /56, /64, /96 only"),
        ("2001:db8::/128", "RFC 6052 allows"),
        ("2001:db8::", "with its length"),
        ("2001:db8::1/96", "no bits set after its length"),
        ("64:ff9b:0:0:100::/96", "bits 64-71"),  # u octet set
        ("::ffff:0:0/96", "not mapped"),
        ("fe80::/64", "link-local"),
        ("192.0.2.0/24", "IPv6 prefix"),
        ("", "IPv6 prefix"),
    ],
)
def test_bad_prefixes_are_explained(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validation.plat_prefix(value)


def test_well_known_prefix_is_accepted() -> None:
    assert str(validation.plat_prefix("64:ff9b::/96")) == "64:ff9b::/96"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1260", True),
        ("1500", True),
        ("65515", True),
        ("1259", False),
        ("65516", False),
        ("-1", False),
        ("1e3", False),
        ("", False),
    ],
)
def test_mtu_range(value: str, ok: bool) -> None:
    if ok:
        assert validation.mtu(value) == int(value)
    else:
        with pytest.raises(ValueError, match="from 1260 to 65515"):
            validation.mtu(value)


@pytest.mark.parametrize(
    "value", ["::", "::1", "ff02::1", "fe80::1", "::ffff:192.0.2.1", "192.0.2.1", "2001:db8::/64"]
)
def test_bad_v6_addresses(value: str) -> None:
    with pytest.raises(ValueError, match="allowed"):
        validation.v6_address(value)


def test_v6_address_outside_the_plat_prefix() -> None:
    plat = ipaddress.IPv6Network("64:ff9b::/96")
    assert str(validation.v6_address("fd00:c1a7::1", plat)) == "fd00:c1a7::1"
    with pytest.raises(ValueError, match="inside the PLAT prefix 64:ff9b::/96"):
        validation.v6_address("64:ff9b::c000:201", plat)


@pytest.mark.parametrize("value", ["True", "1", "yes", "enabled", ""])
def test_enabled_takes_only_true_or_false(value: str) -> None:
    with pytest.raises(ValueError, match='"true" or "false"'):
        validation.boolean(value)


# ---- settings ------------------------------------------------------------------------------


def test_defaults_are_the_contract_defaults() -> None:
    assert Config.from_env({}) == Config()
    defaults = Config()
    assert defaults.webhook_port == contract.WEBHOOK_PORT == 9443
    assert defaults.health_port == contract.HEALTH_PORT == 8080
    assert defaults.sidecar_resources == json.loads(contract.DEFAULT_SIDECAR_RESOURCES)
    assert defaults.native_sidecar is config.NativeSidecar.AUTO
    assert defaults.security_mode is config.SecurityMode.PRIVILEGED
    assert not defaults.dev_mode and defaults.discover_prefix and not defaults.restart_missing


def test_settings_from_env() -> None:
    parsed = Config.from_env(
        {
            "CLAT_OPERATOR_NAMESPACE": "clat-system",
            "CLAT_OPERATOR_PLAT_PREFIX": "64:ff9b::/96",
            "CLAT_OPERATOR_MTU": "1400",
            "CLAT_OPERATOR_SECURITY_MODE": "capabilities",
            "CLAT_OPERATOR_NATIVE_SIDECAR": "off",
            "CLAT_OPERATOR_RESTART_MISSING": "true",
            "CLAT_OPERATOR_EXCLUDE_NAMESPACES": " a, b ,,c",
            "CLAT_OPERATOR_NOT_READY_WARNING_SECONDS": "30",
            "CLAT_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
            "CLAT_OPERATOR_LOG_LEVEL": "WARNING",
        }
    )
    assert parsed.plat_prefix == "64:ff9b::/96" and parsed.mtu == 1400
    assert parsed.security_mode is config.SecurityMode.CAPABILITIES
    assert parsed.native_sidecar is config.NativeSidecar.OFF
    assert parsed.restart_missing and parsed.dev_mode
    assert parsed.exclude_namespaces == {"a", "b", "c"}
    assert parsed.not_ready_warning_seconds == 30.0
    assert [parsed.excluded(ns) for ns in ("kube-system", "clat-system", "b", "default")] == [
        True,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("CLAT_OPERATOR_SECURITY_MODE", "root", "use one of privileged, capabilities"),
        ("CLAT_OPERATOR_NATIVE_SIDECAR", "yes", "use one of auto, on, off"),
        ("CLAT_OPERATOR_SIDECAR_IMAGE_PULL_POLICY", "always", "Always, IfNotPresent, Never"),
        ("CLAT_OPERATOR_RESTART_MISSING", "maybe", "true or false"),
        ("CLAT_OPERATOR_PLAT_PREFIX", "64:ff9b::/95", "RFC 6052"),
        ("CLAT_OPERATOR_MTU", "100", "from 1260 to 65515"),
        ("CLAT_OPERATOR_SIDECAR_RESOURCES", "{cpu: 1}", "is not JSON"),
        ("CLAT_OPERATOR_SIDECAR_RESOURCES", '{"cpu": "1"}', "ResourceRequirements"),
        ("CLAT_OPERATOR_SIDECAR_RESOURCES", '{"limits": {"memory": ["1Gi"]}}', "quantities"),
        ("CLAT_OPERATOR_NOT_READY_WARNING_SECONDS", "0", "positive number"),
        ("CLAT_OPERATOR_NOT_READY_WARNING_SECONDS", "nan", "positive number"),
        ("CLAT_OPERATOR_WEBHOOK_PORT", "70000", "TCP port"),
        ("CLAT_OPERATOR_LOG_LEVEL", "verbose", "debug, info, warning, error"),
        ("CLAT_OPERATOR_SIDECAR_IMAGE", "", "not an image reference"),
    ],
)
def test_bad_settings_name_the_variable(env: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=env) as caught:
        Config.from_env({env: value})
    assert message in str(caught.value)


def test_every_contract_setting_has_a_flag() -> None:
    parser = __import__("clat_operator.cli", fromlist=["build_parser"]).build_parser({})
    args = parser.parse_args(["run", *[x for s in contract.SETTINGS for x in (s.flag, s.default)]])
    assert Config.from_args(args) == Config()


# ---- the decision rules (what the webhook and the watch side share) ------------------------

NATIVE = injection.Runtime(native_sidecar=True)


def test_prefix_sources_in_order() -> None:
    discovered = injection.Runtime(native_sidecar=True, discovered_prefix="2001:db8:64::/96")
    annotated = bare_pod("p", {**ENABLED, "clat.io/plat-prefix": "64:ff9b::/96"})
    plain = bare_pod("p", ENABLED)

    def source(pod: dict, cfg: Config, runtime: injection.Runtime) -> tuple[str, str]:
        settings = injection.sidecar_settings(pod, cfg, runtime)
        return settings.plat_prefix, settings.prefix_source

    with_setting = Config(plat_prefix="2001:db8:1::/48")
    assert source(annotated, with_setting, discovered) == ("64:ff9b::/96", "annotation")
    assert source(plain, with_setting, discovered) == ("2001:db8:1::/48", "cluster-setting")
    assert source(plain, Config(), discovered) == ("2001:db8:64::/96", "operator-discovery")
    assert source(plain, Config(), NATIVE) == ("", "sidecar-discovery")


def test_a_prefix_the_operator_discovered_is_only_a_hint_for_the_sidecar() -> None:
    """Given prefixes are final (CLAT_PLAT_PREFIX); a discovered one is re-checked by the
    sidecar (CLAT_PLAT_PREFIX_HINT), which may later find the DNS64 moved elsewhere."""
    discovered = injection.Runtime(native_sidecar=True, discovered_prefix="2001:db8:64::/96")

    def env(cfg: Config) -> list[dict[str, str]]:
        plan = injection.plan(bare_pod("p", ENABLED), "default", None, cfg, discovered)
        assert plan.inject and plan.init_containers is not None
        return list(plan.init_containers[0]["env"])

    assert env(Config()) == [{"name": "CLAT_PLAT_PREFIX_HINT", "value": "2001:db8:64::/96"}]
    fixed = Config(plat_prefix="2001:db8:1::/48")
    assert env(fixed) == [{"name": "CLAT_PLAT_PREFIX", "value": "2001:db8:1::/48"}]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"metadata": {"annotations": {**ENABLED, "kubernetes.io/config.mirror": "x"}}},
            "static pods",
        ),
        ({"spec": {"os": {"name": "windows"}}}, "Windows"),
        ({"spec": {"hostNetwork": True}}, "hostNetwork"),
    ],
)
def test_ineligible_pods(change: dict, reason: str) -> None:
    pod = bare_pod("p", ENABLED)
    for key, value in change.items():
        pod[key].update(value)
    plan = injection.plan(pod, "default", None, Config(), NATIVE)
    assert not plan.inject and reason in plan.reason


def test_no_free_port_is_refused() -> None:
    ports = [
        {"containerPort": p}
        for p in range(contract.SIDECAR_HTTP_PORT, contract.SIDECAR_HTTP_PORT + 20)
    ]
    pod = bare_pod("p", ENABLED, containers=[{"name": "app", "image": "x", "ports": ports}])
    with pytest.raises(injection.InvalidAnnotations, match="no free port"):
        injection.plan(pod, "default", None, Config(), NATIVE)


def test_namespace_label_values_other_than_true_do_not_opt_in() -> None:
    for value in ("false", "yes", "True"):
        plan = injection.plan(bare_pod("p"), "ns", {"clat.io/enabled": value}, Config(), NATIVE)
        assert not plan.inject


@pytest.mark.parametrize(
    ("version", "parsed"),
    [
        ({"major": "1", "minor": "29"}, (1, 29)),
        ({"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"}, (1, 30)),
        ({"gitVersion": "v1.28.9+k3s1"}, (1, 28)),
        ({"major": "", "minor": ""}, None),
    ],
)
def test_api_server_version(version: dict, parsed: tuple[int, int] | None) -> None:
    assert handlers.parse_version(version) == parsed


# ---- report texts ----------------------------------------------------------------------------


def test_workload_hint_names_the_deployment_of_a_replicaset_pod() -> None:
    assert reporting.workload_hint(deployment_pod()) == ("Deployment", "web")
    orphan = deployment_pod()
    orphan["metadata"]["labels"].pop("pod-template-hash")
    assert reporting.workload_hint(orphan) == ("ReplicaSet", "web-7d4b9c6f5d")
    assert reporting.workload_hint(bare_pod("p")) is None


def test_state_text() -> None:
    waiting = {"state": {"waiting": {"reason": "ImagePullBackOff"}}, "restartCount": 0}
    ended = {"state": {"terminated": {"reason": "Error", "exitCode": 2}}, "restartCount": 5}
    running = {"state": {"running": {}}, "restartCount": 1}
    assert reporting.state_text(waiting) == "waiting: ImagePullBackOff; restarts 0"
    assert reporting.state_text(ended) == "terminated: Error, exit code 2; restarts 5"
    assert reporting.state_text(running) == "running, /readyz not passing; restarts 1"
    assert reporting.state_text(None) == "no status reported yet"


def test_scheduled_at() -> None:
    pod = {
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-01-02T03:04:05Z",
                }
            ]
        }
    }
    assert reporting.scheduled_at(pod) == datetime.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC
    )
    pod["status"]["conditions"][0]["status"] = "False"
    assert reporting.scheduled_at(pod) is None
