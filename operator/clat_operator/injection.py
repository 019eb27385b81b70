"""Which pods get a CLAT, and what exactly is added to them. Pure: no I/O, no kopf.

Sidecar mode adds the `clat` container; node mode adds the unprivileged `clat-handoff` init
container that hands the pod's network namespace to the node's clat-node agent.

The admission webhook applies `plan()` to a pod being created; the watch side asks the same
questions of running pods, so both always agree on "this pod should have a sidecar".
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from clat_operator import contract, validation
from clat_operator.config import ClatMode, Config, SecurityMode

Pod = Mapping[str, Any]
T = TypeVar("T")

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# If an application already declares the sidecar's port, the sidecar moves up to this range.
_SPARE_PORTS = range(contract.SIDECAR_HTTP_PORT + 1, contract.SIDECAR_HTTP_PORT + 20)


class InvalidAnnotations(ValueError):
    """clat.io/ annotations or labels with values the operator refuses (all problems at once)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


class PrefixSource(enum.StrEnum):
    ANNOTATION = "annotation"  # clat.io/plat-prefix on the pod
    CLUSTER_SETTING = "cluster-setting"  # CLAT_OPERATOR_PLAT_PREFIX
    OPERATOR_DISCOVERY = "operator-discovery"  # RFC 7050 by the operator at its start
    SIDECAR_DISCOVERY = "sidecar-discovery"  # none given: the sidecar finds it (RFC 8781/7050)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What the operator learned at start: native sidecars usable, the discovered PLAT prefix."""

    native_sidecar: bool
    discovered_prefix: str = ""


@dataclasses.dataclass(frozen=True)
class SidecarSettings:
    plat_prefix: str
    prefix_source: PrefixSource
    mtu: int | None
    v6_address: str | None
    datapath: str | None = None  # None: the sidecar's default (auto)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The answer for one pod: inject or not (and why), warnings for the user, the changes."""

    inject: bool
    reason: str
    warnings: tuple[str, ...] = ()
    native: bool = False
    mode: ClatMode = ClatMode.SIDECAR
    settings: SidecarSettings | None = None
    # Merge-patch style changes: whole lists replaced, annotations added.
    containers: list[dict[str, Any]] | None = None
    init_containers: list[dict[str, Any]] | None = None
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    # The pod's whole securityContext.sysctls list when the sidecar needs one added.
    pod_sysctls: list[dict[str, str]] | None = None
    # The pod's whole volumes list when one is added (node mode: the socket directory).
    volumes: list[dict[str, Any]] | None = None


# Without privileges /proc/sys is read-only in the container, so in capabilities mode the
# kubelet sets what the sidecar cannot: IPv6 forwarding in the pod's netns (translated packets
# come in on the TUN and leave on eth0). Not a "safe" sysctl: the kubelet must allow it
# (--allowed-unsafe-sysctls=net.ipv6.conf.all.forwarding).
CAPABILITIES_MODE_SYSCTLS = {"net.ipv6.conf.all.forwarding": "1"}


# ---- reading the pod ---------------------------------------------------------------------


def meta(pod: Pod) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def spec(pod: Pod) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def pod_annotations(pod: Pod) -> Mapping[str, str]:
    return meta(pod).get("annotations") or {}


def pod_labels(pod: Pod) -> Mapping[str, str]:
    return meta(pod).get("labels") or {}


CLAT_CONTAINER_NAMES = (contract.SIDECAR_CONTAINER_NAME, contract.HANDOFF_CONTAINER_NAME)


def clat_container_name(pod: Pod) -> str | None:
    """`clat` or `clat-handoff` if the pod has one (in either list), else None."""
    for key in ("initContainers", "containers"):
        for c in spec(pod).get(key) or []:
            if c.get("name") in CLAT_CONTAINER_NAMES:
                return str(c["name"])
    return None


def has_sidecar(pod: Pod) -> bool:
    """A container named `clat` or `clat-handoff` anywhere means "already done" (idempotent
    re-admission, in either mode)."""
    return clat_container_name(pod) is not None


def pod_mode(pod: Pod, config: Config) -> tuple[ClatMode, str]:
    """The pod's clat.io/mode, else the cluster's CLAT_OPERATOR_MODE, and which one decided.

    Raises InvalidAnnotations for a value other than sidecar or node."""
    notes = pod_annotations(pod)
    if contract.ANNOTATION_MODE not in notes:
        return config.mode, "cluster setting"
    raw = notes[contract.ANNOTATION_MODE]
    try:
        return ClatMode(validation.mode(raw)), f"annotation {contract.ANNOTATION_MODE}"
    except ValueError as e:
        raise InvalidAnnotations([_bad(contract.ANNOTATION_MODE, raw, e)]) from None


def pod_choice(pod: Pod) -> tuple[bool | None, str]:
    """The pod's own opt-in/opt-out (annotation or label), or None if it says nothing.

    Raises InvalidAnnotations for values other than "true"/"false", or when the annotation and
    the label disagree.
    """
    problems: list[str] = []
    said: dict[str, bool] = {}
    for where, values in (("annotation", pod_annotations(pod)), ("label", pod_labels(pod))):
        key = contract.ANNOTATION_ENABLED if where == "annotation" else contract.LABEL_ENABLED
        if key in values:
            try:
                said[where] = validation.boolean(values[key])
            except ValueError as e:
                problems.append(f"{where} {key}={values[key]!r} is not allowed: {e}")
    if problems:
        raise InvalidAnnotations(problems)
    if len(set(said.values())) > 1:
        raise InvalidAnnotations(
            [
                f"annotation {contract.ANNOTATION_ENABLED}={_s(said['annotation'])} and label "
                f"{contract.LABEL_ENABLED}={_s(said['label'])} disagree: set one, or both alike"
            ]
        )
    for where, value in said.items():
        return value, f"pod {where} {contract.ANNOTATION_ENABLED}={_s(value)}"
    return None, ""


def namespace_choice(
    namespace: str, namespace_labels: Mapping[str, str] | None
) -> tuple[bool, str]:
    value = (namespace_labels or {}).get(contract.LABEL_ENABLED)
    if value == "true":
        return True, f"namespace {namespace} label {contract.LABEL_ENABLED}=true"
    return False, f"namespace {namespace} has no label {contract.LABEL_ENABLED}=true"


def unknown_annotation_warnings(pod: Pod) -> list[str]:
    known = set(contract.USER_ANNOTATIONS) | {contract.ANNOTATION_INJECTED}
    unknown = sorted(k for k in pod_annotations(pod) if k.startswith("clat.io/") and k not in known)
    return [
        f"{key} is not a clat.io annotation this operator knows (known: "
        f"{', '.join(contract.USER_ANNOTATIONS)}); it is ignored"
        for key in unknown
    ]


def ineligible(pod: Pod, namespace: str, config: Config, native: bool) -> str | None:
    """Why a pod can never get the sidecar, whatever it asks for (None: it can).

    `native`: the injected container runs before the app and ends or restarts on its own (a
    native sidecar, or node mode's init container, which exits once IPv4 works)."""
    if config.excluded(namespace):
        return f"namespace {namespace} is excluded"
    if spec(pod).get("hostNetwork"):
        return "hostNetwork pods share the node's network, a CLAT there would change the node"
    if MIRROR_ANNOTATION in pod_annotations(pod):
        return "static pods run from the node's own manifest files, which the webhook cannot change"
    if (spec(pod).get("os") or {}).get("name") == "windows":
        return "Windows pods are not supported"
    if not native and spec(pod).get("restartPolicy") in ("Never", "OnFailure"):
        return (
            f"restartPolicy {spec(pod)['restartPolicy']} needs a native sidecar (Kubernetes "
            ">= 1.29): a classic clat container would keep the pod from ever completing"
        )
    return None


def sidecar_settings(pod: Pod, config: Config, runtime: Runtime) -> SidecarSettings:
    """The per-pod settings from clat.io/ annotations, else the cluster defaults."""
    notes = pod_annotations(pod)
    problems: list[str] = []
    prefix_network: ipaddress.IPv6Network | None = None

    source = PrefixSource.SIDECAR_DISCOVERY
    prefix = ""
    if contract.ANNOTATION_PLAT_PREFIX in notes:
        raw = notes[contract.ANNOTATION_PLAT_PREFIX]
        try:
            prefix_network = validation.plat_prefix(raw)
            prefix, source = str(prefix_network), PrefixSource.ANNOTATION
        except ValueError as e:
            problems.append(_bad(contract.ANNOTATION_PLAT_PREFIX, raw, e))
    elif config.plat_prefix:
        prefix, source = config.plat_prefix, PrefixSource.CLUSTER_SETTING
    elif runtime.discovered_prefix:
        prefix, source = runtime.discovered_prefix, PrefixSource.OPERATOR_DISCOVERY
    if prefix and prefix_network is None:
        prefix_network = ipaddress.IPv6Network(prefix)

    def checked(annotation: str, parse: Callable[[str], T]) -> T | None:
        """The annotation's parsed value, None when absent; a bad value joins `problems`."""
        if annotation not in notes:
            return None
        try:
            return parse(notes[annotation])
        except ValueError as e:
            problems.append(_bad(annotation, notes[annotation], e))
            return None

    mtu = checked(contract.ANNOTATION_MTU, validation.mtu)
    if mtu is None:
        mtu = config.mtu
    v6 = checked(
        contract.ANNOTATION_V6_ADDRESS, lambda raw: str(validation.v6_address(raw, prefix_network))
    )
    datapath = checked(contract.ANNOTATION_DATAPATH, validation.datapath)

    if problems:
        raise InvalidAnnotations(problems)
    return SidecarSettings(
        plat_prefix=prefix, prefix_source=source, mtu=mtu, v6_address=v6, datapath=datapath
    )


# ---- building the sidecar ------------------------------------------------------------------


def sidecar_container(
    settings: SidecarSettings, config: Config, native: bool, port: int
) -> dict[str, Any]:
    env = []
    if settings.plat_prefix:
        # What the operator discovered itself is only a head start: the sidecar re-checks it.
        hinted = settings.prefix_source is PrefixSource.OPERATOR_DISCOVERY
        name = "CLAT_PLAT_PREFIX_HINT" if hinted else "CLAT_PLAT_PREFIX"
        env.append({"name": name, "value": settings.plat_prefix})
    if settings.mtu is not None:
        env.append({"name": "CLAT_MTU", "value": str(settings.mtu)})
    if settings.v6_address:
        env.append({"name": "CLAT_CLAT_V6", "value": settings.v6_address})
    if settings.datapath is not None:
        env.append({"name": "CLAT_DATAPATH", "value": settings.datapath})
    if port != contract.SIDECAR_HTTP_PORT:
        env.append({"name": "CLAT_LISTEN", "value": f"[::]:{port}"})

    def http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}}

    container: dict[str, Any] = {
        "name": contract.SIDECAR_CONTAINER_NAME,
        "image": config.sidecar_image,
        "imagePullPolicy": config.sidecar_image_pull_policy,
        "command": ["clat-translator", "run"],
        "ports": [{"name": contract.SIDECAR_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "resources": json.loads(json.dumps(config.sidecar_resources)),
        "securityContext": security_context(config.security_mode, settings.datapath),
        # /readyz is 200 once IPv4 is translated (or the sidecar stood down on a dual-stack pod).
        "readinessProbe": http("/readyz") | {"periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": http("/healthz")
        | {"periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env:
        container["env"] = env
    if native:
        # Native sidecar (KEP-753): started before the app containers, which wait for this probe.
        container["restartPolicy"] = "Always"
        container["startupProbe"] = http("/readyz") | {"periodSeconds": 1, "failureThreshold": 120}
    return container


def security_context(mode: SecurityMode, datapath: str | None = None) -> dict[str, Any]:
    # Root inside the container even when the image (or the pod) defaults to non-root: creating
    # the TUN, addresses, routes and the nftables table needs uid 0 with NET_ADMIN.
    base: dict[str, Any] = {"runAsUser": 0, "runAsNonRoot": False}
    if mode is SecurityMode.PRIVILEGED:
        return base | {"privileged": True}
    capabilities = ["NET_ADMIN", "NET_RAW"]
    if datapath != "userspace":
        # The kernel data path: loading a tc program takes CAP_BPF, attaching it CAP_NET_ADMIN
        # (Linux >= 5.8). clat.bpf.c is written for the verifier without CAP_PERFMON.
        capabilities.append("BPF")
    return base | {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": capabilities, "drop": ["ALL"]},
    }


def handoff_container(config: Config) -> dict[str, Any]:
    """Node mode's init container: `clat-node handoff`, with no privilege at all.

    It passes the pod's own network namespace to the agent over the socket and exits 0 once
    the agent answers that IPv4 works, so the app containers (and later init containers) start
    only then. Every field the Pod Security Standards' "restricted" level asks of a container is
    set here, whatever the pod says; only the hostPath volume is outside that level.
    """

    def field(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    return {
        "name": contract.HANDOFF_CONTAINER_NAME,
        "image": config.sidecar_image,
        "imagePullPolicy": config.sidecar_image_pull_policy,
        "command": ["clat-node", "handoff"],
        "env": [
            {"name": "CLAT_POD_NAMESPACE"} | field("metadata.namespace"),
            {"name": "CLAT_POD_NAME"} | field("metadata.name"),
            {"name": "CLAT_POD_UID"} | field("metadata.uid"),
            {"name": "CLAT_SOCKET", "value": contract.HANDOFF_SOCKET},
        ],
        "resources": json.loads(contract.DEFAULT_HANDOFF_RESOURCES),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": contract.HANDOFF_UID,
            "runAsGroup": contract.HANDOFF_UID,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {
                "name": contract.HANDOFF_VOLUME_NAME,
                "mountPath": contract.HANDOFF_SOCKET_MOUNT,
                "readOnly": True,
            }
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def handoff_volume(config: Config) -> dict[str, Any]:
    # DirectoryOrCreate: a pod that comes before the node's agent starts (and waits for it,
    # saying so in its log) instead of hanging in ContainerCreating on a failed mount.
    return {
        "name": contract.HANDOFF_VOLUME_NAME,
        "hostPath": {"path": config.node_socket_dir, "type": "DirectoryOrCreate"},
    }


def node_mode_warnings(pod: Pod) -> list[str]:
    given = [k for k in contract.NODE_MODE_IGNORED_ANNOTATIONS if k in pod_annotations(pod)]
    if not given:
        return []
    return [
        f"{', '.join(given)} ignored: in node mode the node's clat-node agent gives every pod "
        f"its node's PLAT prefix, MTU, internal CLAT address and data path (set "
        f'{contract.ANNOTATION_MODE}: "sidecar" for per-pod settings)'
    ]


def own_sysctls(pod: Pod) -> list[dict[str, str]]:
    """The sysctls the pod itself asks for (securityContext.sysctls)."""
    return list((spec(pod).get("securityContext") or {}).get("sysctls") or [])


def pod_sysctls(pod: Pod, mode: SecurityMode) -> list[dict[str, str]] | None:
    """The pod's sysctls with the ones the sidecar needs added; None when nothing changes."""
    if mode is SecurityMode.PRIVILEGED:
        return None
    current = own_sysctls(pod)
    names = {item.get("name") for item in current}
    missing = [
        {"name": name, "value": value}
        for name, value in CAPABILITIES_MODE_SYSCTLS.items()
        if name not in names
    ]
    return [*current, *missing] if missing else None


def conflicting_sysctls(pod: Pod, mode: SecurityMode) -> list[str]:
    """Sysctls the pod sets to a value the capabilities-mode sidecar cannot work with."""
    if mode is SecurityMode.PRIVILEGED:
        return []
    return [
        f"securityContext.sysctls sets {item.get('name')}={item.get('value')!r}, the clat "
        f"sidecar in capabilities mode needs {CAPABILITIES_MODE_SYSCTLS[item['name']]}"
        for item in own_sysctls(pod)
        if item.get("name") in CAPABILITIES_MODE_SYSCTLS
        and str(item.get("value")) != CAPABILITIES_MODE_SYSCTLS[item["name"]]
    ]


def free_port(pod: Pod) -> int | None:
    used: set[object] = {
        p.get("containerPort")
        for key in ("initContainers", "containers")
        for c in spec(pod).get(key) or []
        for p in c.get("ports") or []
    }
    return next((p for p in (contract.SIDECAR_HTTP_PORT, *_SPARE_PORTS) if p not in used), None)


def injected_annotation(
    settings: SidecarSettings, native: bool, config: Config, mode: ClatMode = ClatMode.SIDECAR
) -> str:
    node = mode is ClatMode.NODE
    return json.dumps(
        {
            "mode": "node" if node else "native" if native else "classic",
            # In node mode the agent's prefix applies, which the operator does not know.
            "platPrefix": None if node else settings.plat_prefix or None,
            "prefixSource": "node-agent" if node else str(settings.prefix_source),
            "image": config.sidecar_image,
            "operator": contract.VERSION,
        },
        separators=(",", ":"),
    )


def read_injected(pod: Pod) -> dict[str, Any]:
    """The operator's record on an injected pod ({} if absent or unreadable)."""
    try:
        value = json.loads(pod_annotations(pod).get(contract.ANNOTATION_INJECTED, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- the whole decision --------------------------------------------------------------------


def opted_in(
    pod: Pod, namespace: str, namespace_labels: Mapping[str, str] | None
) -> tuple[bool, str]:
    """Opt-in from the pod itself, else from its namespace label (raises InvalidAnnotations)."""
    choice, why = pod_choice(pod)
    if choice is not None:
        return choice, why
    return namespace_choice(namespace, namespace_labels)


def plan(
    pod: Pod,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    config: Config,
    runtime: Runtime,
) -> Plan:
    """Decide for a pod being created, and build the changes. Raises InvalidAnnotations.

    `namespace_labels` is only consulted when the pod itself says nothing.
    """
    native = runtime.native_sidecar
    if config.excluded(namespace):
        return Plan(False, f"namespace {namespace} is excluded")
    warnings = unknown_annotation_warnings(pod)
    wanted, why = opted_in(pod, namespace, namespace_labels)
    if not wanted:
        settings_given = sorted(
            k for k in contract.USER_ANNOTATIONS[1:] if k in pod_annotations(pod)
        )
        if settings_given:
            warnings.append(f"{', '.join(settings_given)} ignored: the pod is not opted in ({why})")
        return Plan(False, why, tuple(warnings))
    existing = clat_container_name(pod)
    if existing is not None:
        return Plan(False, f"the pod already has a {existing} container", tuple(warnings))
    mode, mode_from = pod_mode(pod, config)
    node = mode is ClatMode.NODE
    reason = ineligible(pod, namespace, config, native or node)
    if reason is not None:
        warnings.append(f"clat {'hand-off' if node else 'sidecar'} not injected: {reason}")
        return Plan(False, reason, tuple(warnings))
    # Checked in both modes: a bad value is refused the same way whichever mode serves the pod.
    settings = sidecar_settings(pod, config, runtime)
    if node:
        return _node_plan(pod, config, settings, f"{why}; node mode from the {mode_from}", warnings)
    conflicts = conflicting_sysctls(pod, config.security_mode)
    if conflicts:
        raise InvalidAnnotations(conflicts)
    sysctls = pod_sysctls(pod, config.security_mode)
    port = free_port(pod)
    if port is None:
        raise InvalidAnnotations(
            [
                f"no free port for the clat sidecar in "
                f"{contract.SIDECAR_HTTP_PORT}-{_SPARE_PORTS[-1]}"
            ]
        )
    sidecar = sidecar_container(settings, config, native, port)
    new_annotations = {contract.ANNOTATION_INJECTED: injected_annotation(settings, native, config)}
    containers = [dict(c) for c in spec(pod).get("containers") or []]
    init_containers = [dict(c) for c in spec(pod).get("initContainers") or []]
    if native:
        # First: ordinary init containers after it already have IPv4 (they run one by one).
        return Plan(
            True,
            why,
            tuple(warnings),
            native=True,
            settings=settings,
            init_containers=[sidecar, *init_containers],
            annotations=new_annotations,
            pod_sysctls=sysctls,
        )
    # Classic: first in the list so the kubelet starts it first; keep `kubectl logs/exec`
    # pointing at the application as before.
    if containers and DEFAULT_CONTAINER_ANNOTATION not in pod_annotations(pod):
        new_annotations[DEFAULT_CONTAINER_ANNOTATION] = str(containers[0].get("name"))
    return Plan(
        True,
        why,
        tuple(warnings),
        native=False,
        settings=settings,
        containers=[sidecar, *containers],
        annotations=new_annotations,
        pod_sysctls=sysctls,
    )


def _node_plan(
    pod: Pod, config: Config, settings: SidecarSettings, why: str, warnings: list[str]
) -> Plan:
    volumes = [dict(v) for v in spec(pod).get("volumes") or []]
    if any(v.get("name") == contract.HANDOFF_VOLUME_NAME for v in volumes):
        raise InvalidAnnotations(
            [
                f"the pod already has a volume named {contract.HANDOFF_VOLUME_NAME}, which node "
                f"mode needs for the clat-node socket: rename it"
            ]
        )
    init_containers = [dict(c) for c in spec(pod).get("initContainers") or []]
    return Plan(
        True,
        why,
        (*warnings, *node_mode_warnings(pod)),
        native=False,
        mode=ClatMode.NODE,
        settings=settings,
        # First: ordinary init containers after it, and the app, already have IPv4.
        init_containers=[handoff_container(config), *init_containers],
        annotations={
            contract.ANNOTATION_INJECTED: injected_annotation(
                settings, False, config, ClatMode.NODE
            )
        },
        volumes=[*volumes, handoff_volume(config)],
    )


def _bad(key: str, value: str, error: ValueError) -> str:
    return f"annotation {key}={value!r} is not allowed: {error}"


def _s(value: bool) -> str:
    return "true" if value else "false"
