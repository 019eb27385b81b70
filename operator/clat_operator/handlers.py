"""The kopf operator: settings in one startup hook, then small handlers.

- `inject`: the mutating admission webhook for pod CREATE (every replica serves it).
- `report`: the watch side on pods (only the peering leader runs it; kopf pauses the others).

Run by `clat-operator run`, or by kopf itself: `kopf run -A -m clat_operator.handlers`
(then the settings come from the CLAT_OPERATOR_* environment only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import pathlib
import random
import re
import tempfile
from collections.abc import Mapping
from typing import Any

import kopf

from clat_operator import certs, contract, discovery, injection, kube, reporting
from clat_operator.config import ClatMode, Config, ConfigError, NativeSidecar
from clat_operator.health import HealthServer
from clat_operator.webhook import ClatWebhookServer

logger = logging.getLogger("clat_operator")

# Native sidecars (KEP-753): beta and on by default from Kubernetes 1.29.
NATIVE_SIDECAR_SINCE = (1, 29)
# In-cluster replicas take a random peering priority: the highest one leads the watch side.
# A dev-mode operator outranks them all, so the cluster's replicas pause while it runs.
_CLUSTER_PRIORITIES = (1, 2**30)
DEV_PRIORITY = 2**31 - 1
# How long an admission request waits for the operator's initialization (webhook timeout <= 10s).
ADMISSION_WAIT = 3.0


@dataclasses.dataclass
class State:
    """Everything one operator instance holds (in kopf's memo, so several can share a process)."""

    config: Config
    settings: kopf.OperatorSettings
    api: kube.Kube
    namespaces: kube.NamespaceLabels
    events: kube.EventPoster
    reporter: reporting.Reporter
    server: ClatWebhookServer
    health: HealthServer | None = None
    certs_dir: tempfile.TemporaryDirectory[str] | None = None
    runtime: injection.Runtime | None = None
    initialized: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    init_task: asyncio.Task[None] | None = None

    def missing_for_readiness(self) -> str | None:
        if self.runtime is None:
            return "the API server version and PLAT prefix discovery"
        return None if self.server.listening.is_set() else "the webhook server to listen"

    async def initialize(self) -> None:
        """What needs the API: kopf logs in only after the startup handlers, so it runs here."""
        native = await _native_sidecars(self.api, self.config)
        discovered = ""
        if not self.config.plat_prefix and self.config.discover_prefix:
            try:
                discovered = await discovery.discover_plat_prefix()
            except Exception:  # never worth failing for: the sidecars discover it themselves
                logger.exception("PLAT prefix discovery failed; the sidecars will discover it")
        self.runtime = self.reporter.runtime = injection.Runtime(native, discovered)
        self.initialized.set()
        logger.info(
            f"sidecars: {'native (init container)' if native else 'classic (container)'}; "
            f"cluster PLAT prefix: {self.config.plat_prefix or discovered or 'by each sidecar'}"
        )
        await _ensure_peering_object(self.api, self.settings)

    async def wait_runtime(self, timeout: float) -> injection.Runtime | None:
        try:
            await asyncio.wait_for(self.initialized.wait(), timeout)
        except TimeoutError:
            return None
        return self.runtime


# ---- login and settings ------------------------------------------------------------------


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The service account in the cluster; KUBECONFIG (or ~/.kube/config) elsewhere."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.get("config")
    if not isinstance(config, Config):
        try:
            config = Config.from_env(os.environ)
        except ConfigError as e:
            raise kopf.PermanentError(str(e)) from None
    logging.getLogger("clat_operator").setLevel(config.log_level)
    if config.log_level > logging.DEBUG:
        # kopf logs every handled watch event and aiohttp every webhook call at INFO:
        # at cluster scale that is a line per pod event. Problems are still logged.
        for noisy in ("kopf.objects", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    # Only the operator's own Events reach the API; kopf's handler logs stay in the pod log.
    settings.posting.reporting_component = "clat-operator"
    settings.posting.level = logging.CRITICAL
    # Read the API's resources once at start; no watching of CRDs or namespaces (less RBAC).
    settings.scanning.disabled = True
    # Watches end and restart regularly, so a silently dead connection is noticed (kopf's
    # defaults wait forever); plain requests give up after 30 s (kopf then retries).
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 30
    _configure_peering(settings, config)

    try:
        api = await kube.Kube.connect()
    except kube.ConnectionSetupError as e:
        raise kopf.PermanentError(str(e)) from None
    certs_dir: tempfile.TemporaryDirectory[str] | None = None
    if config.dev_mode:
        certs_dir = tempfile.TemporaryDirectory(prefix="clat-operator-")
        certfile, pkeyfile = certs.write_self_signed(
            pathlib.Path(certs_dir.name), [config.webhook_host]
        )
        server = ClatWebhookServer(
            # An address is listened on as given; a name (host.docker.internal, ...) may not
            # resolve locally: then listen everywhere and only advertise the name.
            addr=config.webhook_host if _is_address(config.webhook_host) else None,
            host=config.webhook_host,
            port=config.webhook_port,
            certfile=certfile,
            pkeyfile=pkeyfile,
        )
        settings.admission.managed = contract.DEV_WEBHOOK_CONFIGURATION
        logger.info(
            f"dev mode: webhook at https://{config.webhook_host}:{config.webhook_port}"
            f"{contract.WEBHOOK_PATH}, "
            f"MutatingWebhookConfiguration {contract.DEV_WEBHOOK_CONFIGURATION}"
        )
    else:
        for path in (config.tls_cert_file, config.tls_key_file):
            if not os.access(path, os.R_OK):
                raise kopf.PermanentError(
                    f"webhook TLS file {path} is not readable: in the cluster the chart mounts it; "
                    f"for local development use --webhook-host 127.0.0.1"
                )
        server = ClatWebhookServer(
            addr=None,  # every address, IPv6 and IPv4
            port=config.webhook_port,
            certfile=config.tls_cert_file,
            pkeyfile=config.tls_key_file,
        )
        settings.admission.managed = None  # the chart owns the MutatingWebhookConfiguration
    settings.admission.server = server

    namespaces = kube.NamespaceLabels(api)
    events = kube.EventPoster(api, settings.posting)
    state = State(
        config=config,
        settings=settings,
        api=api,
        namespaces=namespaces,
        events=events,
        reporter=reporting.Reporter(config, api, namespaces, events),
        server=server,
        certs_dir=certs_dir,
    )
    state.health = HealthServer(config.health_port, state.missing_for_readiness)
    await state.health.start()
    state.init_task = asyncio.create_task(state.initialize(), name="clat-operator initialization")
    memo["clat"] = state
    logger.info(f"clat-operator {contract.VERSION} starting: {config.describe()}")


def _configure_peering(settings: kopf.OperatorSettings, config: Config) -> None:
    settings.peering.name = contract.PEERING_NAME
    settings.peering.clusterwide = contract.PEERING_CLUSTERWIDE
    if settings.peering.standalone:
        return  # `kopf run --standalone`: one operator, no peering at all
    if config.dev_mode:
        settings.peering.priority = DEV_PRIORITY
        settings.peering.mandatory = False  # a dev cluster may lack the peering CRD
    else:
        settings.peering.priority = random.randint(*_CLUSTER_PRIORITIES)
        # Paused until peering says this replica leads: no burst of duplicate Events at start.
        settings.peering.mandatory = True


async def _native_sidecars(api: kube.Kube, config: Config) -> bool:
    if config.native_sidecar is not NativeSidecar.AUTO:
        return config.native_sidecar is NativeSidecar.ON
    try:
        # A blip at start must not mean classic sidecars until the next restart: retry ~15 s.
        version = await api.get("/version", timeout=5.0, retries=(1.0, 2.0, 4.0, 8.0))
    except kube.FAILURES as e:
        logger.warning(f"API server version unknown ({e}): injecting classic sidecars")
        return False
    parsed = parse_version(version)
    if parsed is None:
        logger.warning(f"API server version {version!r} not understood: injecting classic sidecars")
        return False
    logger.info(f"API server {version.get('gitVersion', '')} ({parsed[0]}.{parsed[1]})")
    return parsed >= NATIVE_SIDECAR_SINCE


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_version(version: Mapping[str, Any]) -> tuple[int, int] | None:
    """(major, minor) from /version; minor may carry a suffix ("29+" on some providers)."""
    major = re.match(r"\d+", str(version.get("major", "")))
    minor = re.match(r"\d+", str(version.get("minor", "")))
    if major and minor:
        return int(major.group()), int(minor.group())
    git = re.match(r"v(\d+)\.(\d+)", str(version.get("gitVersion", "")))
    return (int(git.group(1)), int(git.group(2))) if git else None


async def _ensure_peering_object(api: kube.Kube, settings: kopf.OperatorSettings) -> None:
    if settings.peering.standalone:
        return
    body = {
        "apiVersion": contract.PEERING_API_VERSION,
        "kind": contract.PEERING_KIND,
        "metadata": {"name": contract.PEERING_NAME},
    }
    try:
        await api.create(kube.group_path(contract.PEERING_API_VERSION, "clusterkopfpeerings"), body)
        logger.info(f"created {contract.PEERING_KIND} {contract.PEERING_NAME}")
    except kube.Conflict:
        pass  # exists: the usual case
    except kube.NotFound:
        if settings.peering.mandatory:
            logger.error(
                f"CRD {contract.PEERING_CRD} is missing: the watch side (Events, restarts) stays "
                f"paused until it exists; the webhook works. Install the chart's CRDs."
            )
        else:
            logger.info(f"CRD {contract.PEERING_CRD} absent: running without peering")
    except kube.FAILURES as e:
        logger.error(
            f"could not create {contract.PEERING_KIND} {contract.PEERING_NAME} ({e}): until it "
            f"exists the watch side stays paused; the webhook works"
        )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state = memo.get("clat")
    if not isinstance(state, State):
        return
    if state.init_task is not None:
        state.init_task.cancel()
    state.reporter.close()
    if state.health is not None:
        await state.health.stop()
    if state.config.dev_mode:
        # kopf has emptied its webhooks already; remove the configuration objects themselves.
        # (Its managed mode makes an empty ValidatingWebhookConfiguration of the same name too.)
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            name = contract.DEV_WEBHOOK_CONFIGURATION
            path = kube.group_path("admissionregistration.k8s.io/v1", f"{kind.lower()}s", name=name)
            try:
                await state.api.delete(path)
                logger.info(f"removed {kind} {name}")
            except kube.NotFound:
                pass
            except kube.FAILURES as e:
                logger.warning(f"could not remove {kind} {name}: {e}")
    await state.events.flush()
    await state.api.close()
    if state.certs_dir is not None:
        state.certs_dir.cleanup()


# ---- admission -------------------------------------------------------------------------------


@kopf.on.mutate(
    "v1", "pods", id=contract.WEBHOOK_HANDLER_ID, operations=["CREATE"], ignore_failures=True
)
async def inject(
    body: kopf.Body,
    patch: kopf.Patch,
    warnings: list[str],
    memo: kopf.Memo,
    dryrun: bool,
    **_: Any,
) -> None:
    state: State = memo["clat"]
    namespace = body.metadata.namespace or ""
    name = body.metadata.name or f"{body.metadata.get('generateName', '')}<generated>"
    try:
        plan = await _plan(state, body, namespace, warnings)
    except injection.InvalidAnnotations as e:
        logger.info(f"pod {namespace}/{name} refused: {e}")
        raise kopf.AdmissionError(f"clat-operator: {e}", code=400) from None
    except Exception:
        # A bug here must not turn into "no pod can be created": admit it as it is.
        logger.exception(
            f"pod {namespace}/{name}: admission failed; admitted without the clat sidecar"
        )
        warnings.append(
            "clat-operator: internal error, the pod was admitted without the clat sidecar"
        )
        patch.clear()
        return
    warnings.extend(plan.warnings)
    if not plan.inject:
        logger.debug(f"pod {namespace}/{name}: no injection ({plan.reason})")
        return
    if plan.init_containers is not None:
        patch.spec["initContainers"] = plan.init_containers
    if plan.containers is not None:
        patch.spec["containers"] = plan.containers
    if plan.pod_sysctls is not None:
        patch.spec["securityContext"] = {"sysctls": plan.pod_sysctls}
    if plan.volumes is not None:
        patch.spec["volumes"] = plan.volumes
    for key, value in plan.annotations.items():
        patch.metadata.annotations[key] = value
    assert plan.settings is not None
    dry = " [dry run]" if dryrun else ""
    if plan.mode is ClatMode.NODE:
        logger.info(
            f"pod {namespace}/{name}: inject {contract.HANDOFF_CONTAINER_NAME} (node mode; "
            f"{plan.reason}; prefix by the node agent){dry}"
        )
        return
    logger.info(
        f"pod {namespace}/{name}: inject clat ({'native' if plan.native else 'classic'}; "
        f"{plan.reason}; prefix {plan.settings.plat_prefix or 'by sidecar'} "
        f"from {plan.settings.prefix_source}){dry}"
    )


async def _plan(
    state: State, pod: Mapping[str, Any], namespace: str, warnings: list[str]
) -> injection.Plan:
    if not namespace:
        return injection.Plan(False, "no namespace in the admission request")
    runtime = await state.wait_runtime(timeout=ADMISSION_WAIT)
    if runtime is None:
        warnings.append(
            "clat-operator is still starting: the pod is admitted without the clat sidecar"
        )
        return injection.Plan(False, "operator still starting")
    labels: Mapping[str, str] | None = None
    if not state.config.excluded(namespace) and injection.pod_choice(pod)[0] is None:
        try:
            labels = await state.namespaces.get(namespace)
        except kube.FAILURES as e:
            warnings.append(
                f"clat-operator could not read the labels of namespace {namespace} ({e}); "
                f"the pod is admitted without the clat sidecar"
            )
            return injection.Plan(False, f"namespace {namespace} unreadable")
    return injection.plan(pod, namespace, labels, state.config, runtime)


# ---- watching ----------------------------------------------------------------------------


@kopf.on.event("v1", "pods")
async def report(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    state = memo.get("clat")
    if isinstance(state, State) and await state.wait_runtime(timeout=60.0) is not None:
        await state.reporter.on_pod(type, body)
