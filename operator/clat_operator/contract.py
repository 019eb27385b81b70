"""What the rest of the project may rely on: ports, paths, names, and every API call.

The Helm chart renders its MutatingWebhookConfiguration, Service, probes and RBAC from
these constants, and its tests import them. They are kept truthful by the operator's tests
(tests/operator): the webhook really answers at WEBHOOK_PATH, health at HEALTH_PATH, and
the operator makes no Kubernetes API call outside API_CALLS (+ DEV_MODE_API_CALLS in dev mode).
"""

from __future__ import annotations

import importlib.metadata
from typing import NamedTuple


class ApiCall(NamedTuple):
    """One kind of Kubernetes API request the operator makes, as RBAC sees it.

    `namespaced` is the scope of the resource. The operator works cluster-wide, so every
    call here is granted through a ClusterRole (+ ClusterRoleBinding), also the namespaced ones.
    """

    group: str  # "" = the core group
    resource: str
    verbs: frozenset[str]
    namespaced: bool


# ---- the admission webhook ---------------------------------------------------------------
# kopf serves each admission handler at "/<handler id>"; the handler id is "inject".
WEBHOOK_HANDLER_ID = "inject"
WEBHOOK_PATH = "/inject"
WEBHOOK_PORT = 9443  # HTTPS, with the chart's tls.crt/tls.key (reloaded when they change)

# ---- health (plain HTTP, all interfaces: IPv6 and IPv4) ----------------------------------
HEALTH_PORT = 8080
HEALTH_PATH = "/healthz"  # liveness: 200 while the operator's event loop runs
READY_PATH = "/readyz"  # readiness: 200 once settings are loaded and the webhook listens

# ---- multiple replicas ---------------------------------------------------------------------
# kopf peering, cluster-wide: a `ClusterKopfPeering` object of this name (CRD
# clusterkopfpeerings.kopf.dev, apiVersion kopf.dev/v1). The chart installs the CRD; the
# operator creates the object itself if it is missing. Every replica serves the webhook; only
# the replica with the highest (random, per start) peering priority runs the watch side.
PEERING_NAME = "clat-operator"
PEERING_CLUSTERWIDE = True
PEERING_CRD = "clusterkopfpeerings.kopf.dev"
PEERING_API_VERSION = "kopf.dev/v1"
PEERING_KIND = "ClusterKopfPeering"

# ---- names on pods and namespaces --------------------------------------------------------
SIDECAR_CONTAINER_NAME = "clat"
ANNOTATION_ENABLED = "clat.io/enabled"
ANNOTATION_PLAT_PREFIX = "clat.io/plat-prefix"
ANNOTATION_MTU = "clat.io/mtu"
ANNOTATION_V6_ADDRESS = "clat.io/v6-address"
ANNOTATION_DATAPATH = "clat.io/datapath"  # the sidecar's --datapath (CLAT_DATAPATH)
ANNOTATION_MODE = "clat.io/mode"  # sidecar | node: overrides CLAT_OPERATOR_MODE for the pod
LABEL_ENABLED = "clat.io/enabled"  # on pods and on namespaces
# Written by the operator on injected pods (JSON: mode, prefix and where it came from).
ANNOTATION_INJECTED = "clat.io/injected"
USER_ANNOTATIONS = (
    ANNOTATION_ENABLED,
    ANNOTATION_PLAT_PREFIX,
    ANNOTATION_MTU,
    ANNOTATION_V6_ADDRESS,
    ANNOTATION_DATAPATH,
    ANNOTATION_MODE,
)
# Per-pod settings the node agent does not apply (it gives every pod of the node the node's
# PLAT prefix, its internal ULA, the route MTU it derives and its own data path): in node mode
# they are checked and then ignored with an admission warning.
NODE_MODE_IGNORED_ANNOTATIONS = (
    ANNOTATION_PLAT_PREFIX,
    ANNOTATION_MTU,
    ANNOTATION_V6_ADDRESS,
    ANNOTATION_DATAPATH,
)

# ---- node mode: the init container that hands the pod's network namespace to clat-node -----
HANDOFF_CONTAINER_NAME = "clat-handoff"
HANDOFF_VOLUME_NAME = "clat-handoff-socket"
# Where the init container sees the agent's socket directory (read-only); the socket in it is
# clat-node's default (clat_node.protocol.DEFAULT_SOCKET; the seam test holds them equal).
HANDOFF_SOCKET_MOUNT = "/run/clat-node"
HANDOFF_SOCKET = f"{HANDOFF_SOCKET_MOUNT}/handoff.sock"
# The node's directory holding the agent's socket (a hostPath; the chart's node.socketDir).
DEFAULT_NODE_SOCKET_DIR = "/run/clat-node/socket"
# Any non-root uid works: connect(2) needs only the socket's mode (0666), no capability.
HANDOFF_UID = 65534
DEFAULT_HANDOFF_RESOURCES = '{"requests":{"cpu":"10m","memory":"16Mi"},"limits":{"memory":"64Mi"}}'

# The sidecar's HTTP port (clat-translator's default --listen [::]:9180; /healthz, /readyz,
# /metrics) and the name the injected container gives it (the chart's PodMonitor scrapes it by
# name: the port moves up from 9180 when an application container already uses it).
SIDECAR_HTTP_PORT = 9180
SIDECAR_PORT_NAME = "clat-http"

# Dev mode only (`--webhook-host`): the MutatingWebhookConfiguration the operator manages.
DEV_WEBHOOK_CONFIGURATION = "clat-operator-dev.clat.io"

# ---- every Kubernetes API call ---------------------------------------------------------------
_ = frozenset

# Needed in the cluster whatever the settings are.
BASE_API_CALLS: tuple[ApiCall, ...] = (
    ApiCall("", "pods", _({"get", "list", "watch"}), namespaced=True),  # watch side
    ApiCall("", "namespaces", _({"get"}), namespaced=False),  # namespace opt-in label
    ApiCall("", "events", _({"create"}), namespaced=True),  # reporting
    ApiCall("kopf.dev", "clusterkopfpeerings", _({"list", "watch", "patch", "create"}), False),
)
# Needed only with CLAT_OPERATOR_RESTART_MISSING=true (owner lookup and rollout restart).
RESTART_MISSING_API_CALLS: tuple[ApiCall, ...] = (
    ApiCall("apps", "replicasets", _({"get"}), namespaced=True),
    ApiCall("apps", "deployments", _({"get", "patch"}), namespaced=True),
    ApiCall("apps", "statefulsets", _({"get", "patch"}), namespaced=True),
    ApiCall("apps", "daemonsets", _({"get", "patch"}), namespaced=True),
)
# Every call of the operator running in the cluster (what the chart's ClusterRole grants).
API_CALLS: tuple[ApiCall, ...] = BASE_API_CALLS + RESTART_MISSING_API_CALLS

# The node agent (clat-node agent, node/clat_node/verify.py): reads the pod named in a hand-off
# and its namespace's labels, and lists the pods of its node (fieldSelector spec.nodeName) to
# release the ones that are gone. It watches nothing. The chart's node ClusterRole grants these.
NODE_API_CALLS: tuple[ApiCall, ...] = (
    ApiCall("", "pods", _({"get", "list"}), namespaced=True),
    ApiCall("", "namespaces", _({"get"}), namespaced=False),
)

# Only in local dev mode (with the developer's own kubeconfig): never granted by the chart.
# (kopf's managed mode also creates an empty ValidatingWebhookConfiguration of the same name.)
DEV_MODE_API_CALLS: tuple[ApiCall, ...] = (
    ApiCall(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        _({"create", "patch", "delete"}),
        namespaced=False,
    ),
    ApiCall(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        _({"create", "patch", "delete"}),
        namespaced=False,
    ),
)

# Non-resource URLs read with GET (discovery and the server version for the native-sidecar
# decision). The default `system:discovery` ClusterRole grants them to every account.
NON_RESOURCE_URLS: tuple[str, ...] = ("/version", "/api", "/api/*", "/apis", "/apis/*")


# ---- settings (docs/operator.md "Settings"): env name, flag, default ---------------------
class Setting(NamedTuple):
    env: str
    flag: str
    default: str
    help: str


def _version() -> str:
    try:
        return importlib.metadata.version("clat-operator")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


VERSION = _version()
DEFAULT_SIDECAR_IMAGE = f"ghcr.io/clat-operator/clat-operator:{VERSION}"
DEFAULT_SIDECAR_RESOURCES = '{"requests":{"cpu":"10m","memory":"32Mi"},"limits":{"memory":"96Mi"}}'

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "CLAT_OPERATOR_NAMESPACE",
        "--namespace",
        "",
        "the operator's own namespace (downward API): never injected",
    ),
    Setting(
        "CLAT_OPERATOR_MODE",
        "--mode",
        "sidecar",
        "how opted-in pods get their CLAT: sidecar (a clat container), or node (the node's "
        "clat-node agent, handed the pod's namespace by an unprivileged init container); "
        "a pod overrides it with clat.io/mode",
    ),
    Setting(
        "CLAT_OPERATOR_NODE_SOCKET_DIR",
        "--node-socket-dir",
        DEFAULT_NODE_SOCKET_DIR,
        "node mode: the node's directory with clat-node's hand-off socket (a hostPath the "
        "init container mounts read-only)",
    ),
    Setting(
        "CLAT_OPERATOR_SIDECAR_IMAGE",
        "--sidecar-image",
        DEFAULT_SIDECAR_IMAGE,
        "image of the injected clat container (this release's image by default)",
    ),
    Setting(
        "CLAT_OPERATOR_SIDECAR_IMAGE_PULL_POLICY",
        "--sidecar-image-pull-policy",
        "IfNotPresent",
        "imagePullPolicy of the clat container: Always, IfNotPresent or Never",
    ),
    Setting(
        "CLAT_OPERATOR_PLAT_PREFIX",
        "--plat-prefix",
        "",
        "cluster default PLAT prefix (RFC 6052 length /32../96); empty = discover",
    ),
    Setting(
        "CLAT_OPERATOR_DISCOVER_PREFIX",
        "--discover-prefix",
        "true",
        "with no --plat-prefix: RFC 7050 once against cluster DNS, the result goes to sidecars",
    ),
    Setting(
        "CLAT_OPERATOR_MTU",
        "--mtu",
        "",
        "cluster default IPv4 route MTU of the clat device; empty = uplink MTU - 20",
    ),
    Setting(
        "CLAT_OPERATOR_SECURITY_MODE",
        "--security-mode",
        "privileged",
        "privileged, or capabilities (NET_ADMIN+NET_RAW+BPF only; the node must provide "
        "/dev/net/tun)",
    ),
    Setting(
        "CLAT_OPERATOR_NATIVE_SIDECAR",
        "--native-sidecar",
        "auto",
        "auto (native when the API server is >= 1.29), on, off",
    ),
    Setting(
        "CLAT_OPERATOR_SIDECAR_RESOURCES",
        "--sidecar-resources",
        DEFAULT_SIDECAR_RESOURCES,
        "JSON ResourceRequirements of the clat container",
    ),
    Setting(
        "CLAT_OPERATOR_RESTART_MISSING",
        "--restart-missing",
        "false",
        "restart the owning Deployment/StatefulSet/DaemonSet of pods missing the sidecar",
    ),
    Setting(
        "CLAT_OPERATOR_EXCLUDE_NAMESPACES",
        "--exclude-namespaces",
        "",
        "comma-separated namespaces never injected (kube-system and the own namespace always are)",
    ),
    Setting(
        "CLAT_OPERATOR_NOT_READY_WARNING_SECONDS",
        "--not-ready-warning-seconds",
        "120",
        "Warning Event when clat is not ready this long after the pod was scheduled",
    ),
    Setting(
        "CLAT_OPERATOR_WEBHOOK_PORT",
        "--webhook-port",
        str(WEBHOOK_PORT),
        "HTTPS port of the admission webhook",
    ),
    Setting(
        "CLAT_OPERATOR_WEBHOOK_HOST",
        "--webhook-host",
        "",
        "local dev mode only: generated certificate and an operator-managed webhook configuration",
    ),
    Setting(
        "CLAT_OPERATOR_TLS_CERT_FILE",
        "--tls-cert-file",
        "/etc/clat-operator/tls/tls.crt",
        "in-cluster: the webhook certificate the chart mounts (reloaded on change)",
    ),
    Setting(
        "CLAT_OPERATOR_TLS_KEY_FILE",
        "--tls-key-file",
        "/etc/clat-operator/tls/tls.key",
        "in-cluster: its private key",
    ),
    Setting(
        "CLAT_OPERATOR_HEALTH_PORT",
        "--health-port",
        str(HEALTH_PORT),
        "plain HTTP port of /healthz and /readyz",
    ),
    Setting("CLAT_OPERATOR_LOG_LEVEL", "--log-level", "info", "debug, info, warning or error"),
)
