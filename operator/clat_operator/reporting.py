"""The watch side: what happened to opted-in pods, told through Kubernetes Events.

- `ClatInjected` (Normal): a new pod came up with the sidecar (native or classic, prefix source).
- `ClatMissing` (Warning): an opted-in pod has no sidecar (created while the webhook was not
  reachable, or before the operator existed), with how to fix it; with restart-missing the
  operator restarts the owning Deployment/StatefulSet/DaemonSet itself (`ClatRestart` on it).
- `ClatNotReady` (Warning): `clat` is still not ready N seconds after the pod was scheduled.

Only the peering leader runs this (kopf pauses the watch on the other replicas). What was
reported is remembered in memory, per operator process.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from clat_operator import contract, injection, kube
from clat_operator.config import ClatMode, Config
from clat_operator.injection import Pod, Runtime

logger = logging.getLogger(__name__)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# A workload restarted for a missing sidecar is not restarted again this soon: if its new pods
# lack the sidecar too, the webhook is not working and restarting again would not help.
RESTART_COOLDOWN = datetime.timedelta(minutes=10)

# (kind, apiVersion, plural) of the owners the operator can restart.
_RESTARTABLE = {
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
}

# post(object body, event type, reason, message): kube.EventPoster in the operator.
Post = Callable[[Mapping[str, Any], str, str, str], None]


def pod_ref(pod: Pod) -> dict[str, Any]:
    """A body an Event can reference (list items may lack apiVersion/kind)."""
    m = injection.meta(pod)
    metadata = {"name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid")}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


def describe(pod: Pod) -> str:
    m = injection.meta(pod)
    return f"{m.get('namespace')}/{m.get('name')}"


def clat_status(pod: Pod) -> Mapping[str, Any] | None:
    """The status of the pod's `clat` sidecar or `clat-handoff` init container."""
    name = injection.clat_container_name(pod) or contract.SIDECAR_CONTAINER_NAME
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for item in status.get(key) or []:
            if item.get("name") == name:
                return dict(item)
    return None


def clat_done(status: Mapping[str, Any] | None) -> bool:
    """The CLAT works: the sidecar is ready, or the hand-off init container ended with 0 (its
    exit 0 means the node agent said IPv4 works; an init container that ended is never "ready").
    """
    if status is None:
        return False
    if status.get("name") == contract.HANDOFF_CONTAINER_NAME:
        ended = (status.get("state") or {}).get("terminated") or {}
        return ended.get("exitCode") == 0
    return bool(status.get("ready"))


def scheduled_at(pod: Pod) -> datetime.datetime | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            return _parse_time(condition.get("lastTransitionTime"))
    return None


def state_text(status: Mapping[str, Any] | None) -> str:
    if status is None:
        return "no status reported yet"
    state = status.get("state") or {}
    restarts = status.get("restartCount", 0)
    if "waiting" in state:
        waiting = state["waiting"] or {}
        text = f"waiting: {waiting.get('reason', '?')}"
        if waiting.get("message"):
            text += f" ({waiting['message']})"
    elif "terminated" in state:
        ended = state["terminated"] or {}
        text = f"terminated: {ended.get('reason', '?')}, exit code {ended.get('exitCode', '?')}"
    elif status.get("name") == contract.HANDOFF_CONTAINER_NAME:
        text = "running, waiting for the node agent's answer"
    else:
        text = "running, /readyz not passing"
    return f"{text}; restarts {restarts}"


def controller_of(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def workload_hint(pod: Pod) -> tuple[str, str] | None:
    """(kind, name) of the workload to restart, without API calls (for the advice text)."""
    owner = controller_of(pod)
    if owner is None:
        return None
    kind, name = str(owner.get("kind")), str(owner.get("name"))
    if kind == "ReplicaSet":
        # A Deployment names its ReplicaSets <deployment>-<pod-template-hash>.
        template_hash = injection.pod_labels(pod).get("pod-template-hash")
        if template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name.removesuffix(f"-{template_hash}")
    return kind, name


class Reporter:
    def __init__(
        self,
        config: Config,
        api: kube.Kube,
        namespaces: kube.NamespaceLabels,
        post: Post,
    ) -> None:
        self.config = config
        self.runtime = Runtime(native_sidecar=False)  # replaced once the operator knows
        self.api = api
        self.namespaces = namespaces
        self.post = post
        self.announced: set[str] = set()
        self.missing_reported: set[str] = set()
        self.not_ready_warned: set[str] = set()
        self.ready_once: set[str] = set()  # the startup window is over for these
        self.pending: dict[str, asyncio.Task[None]] = {}
        self._owner_locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    def forget(self, uid: str) -> None:
        self.announced.discard(uid)
        self.missing_reported.discard(uid)
        self.not_ready_warned.discard(uid)
        self.ready_once.discard(uid)
        task = self.pending.pop(uid, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        for task in self.pending.values():
            task.cancel()
        self.pending.clear()

    async def on_pod(self, event_type: str | None, pod: Pod) -> None:
        """One watch event. `event_type` None means the initial listing (kopf's convention)."""
        m = injection.meta(pod)
        uid = str(m.get("uid") or "")
        if not uid:
            return
        phase = (pod.get("status") or {}).get("phase")
        if (
            event_type == "DELETED"
            or m.get("deletionTimestamp")
            or phase in ("Succeeded", "Failed")
        ):
            self.forget(uid)
            return
        if injection.has_sidecar(pod):
            if not injection.read_injected(pod):
                return  # a container named clat that this operator did not add
            if event_type == "ADDED" and uid not in self.announced:
                self.announce(pod)
            self.track_readiness(pod)
        elif uid not in self.missing_reported:
            await self.check_missing(pod)

    # ---- injected ----------------------------------------------------------------------

    def announce(self, pod: Pod) -> None:
        record = injection.read_injected(pod)
        self.announced.add(str(injection.meta(pod).get("uid")))
        if record.get("mode") == "node":
            self.post(
                pod_ref(pod),
                "Normal",
                "ClatInjected",
                f"node mode: {contract.HANDOFF_CONTAINER_NAME} init container injected; the "
                f"clat-node agent of the pod's node serves it (its PLAT prefix)",
            )
            logger.info(f"pod {describe(pod)}: clat injected in node mode")
            return
        mode = (
            "a native sidecar (init container)" if record.get("mode") == "native" else "a container"
        )
        prefix = record.get("platPrefix")
        source = str(record.get("prefixSource", ""))
        if prefix:
            where = f"PLAT prefix {prefix} from the {source.replace('-', ' ')}"
        else:
            where = "PLAT prefix: discovered by the sidecar (RFC 8781 / RFC 7050)"
        self.post(
            pod_ref(pod), "Normal", "ClatInjected", f"clat sidecar injected as {mode}; {where}"
        )
        logger.info(
            f"pod {describe(pod)}: clat injected as {record.get('mode')}, "
            f"prefix {prefix or 'by sidecar'}"
        )

    # ---- missing -----------------------------------------------------------------------

    async def check_missing(self, pod: Pod) -> None:
        namespace = str(injection.meta(pod).get("namespace") or "")
        if self.config.excluded(namespace):
            return
        try:
            choice, why = injection.pod_choice(pod)
        except injection.InvalidAnnotations:
            return  # bad values: the webhook refuses such pods; this one came another way
        if choice is None:
            try:
                labels = await self.namespaces.get(namespace)
            except kube.FAILURES as e:
                logger.warning(
                    f"pod {describe(pod)}: labels of namespace {namespace} unreadable: {e}"
                )
                return  # the next event of the pod retries
            choice, why = injection.namespace_choice(namespace, labels)
        if not choice:
            return
        try:
            mode = injection.pod_mode(pod, self.config)[0]
        except injection.InvalidAnnotations:
            return  # as above
        node = mode is ClatMode.NODE
        if injection.ineligible(pod, namespace, self.config, self.runtime.native_sidecar or node):
            return
        self.missing_reported.add(str(injection.meta(pod).get("uid")))
        if self.config.restart_missing:
            action = await self.restart_owner(pod)
        else:
            action = self.advice(pod)
        missing = (
            f"the {contract.HANDOFF_CONTAINER_NAME} init container (node mode)"
            if node
            else "the clat sidecar"
        )
        message = (
            f"opted in to CLAT ({why}) but running without {missing}: it was created "
            f"while the clat-operator webhook was not reachable, or before the operator was "
            f"installed; {action}"
        )
        self.post(pod_ref(pod), "Warning", "ClatMissing", message)
        logger.warning(
            f"pod {describe(pod)}: no {'clat-handoff' if node else 'clat sidecar'}; {action}"
        )

    def advice(self, pod: Pod) -> str:
        namespace = injection.meta(pod).get("namespace")
        hint = workload_hint(pod)
        if hint is not None and hint[0] in _RESTARTABLE:
            kind, name = hint
            command = f"kubectl rollout restart {kind.lower()}/{name} -n {namespace}"
            return f"restart the workload: {command}"
        if hint is not None:
            return f"recreate the pod (its owner {hint[0]}/{hint[1]} has no rollout restart)"
        return "delete and recreate the pod"

    async def restart_owner(self, pod: Pod) -> str:
        namespace = str(injection.meta(pod).get("namespace"))
        try:
            target = await self._restart_target(pod, namespace)
        except kube.FAILURES as e:
            return f"could not find its workload ({e}); {self.advice(pod)}"
        if isinstance(target, str):
            return target
        kind, name = target
        group_version, plural = _RESTARTABLE[kind]
        path = kube.group_path(group_version, plural, namespace, name)
        lock = self._owner_locks.setdefault((namespace, plural, name), asyncio.Lock())
        async with lock:
            try:
                owner = await self.api.get(path)
                template_notes = ((owner.get("spec") or {}).get("template") or {}).get(
                    "metadata"
                ) or {}
                last = _parse_time(((template_notes.get("annotations")) or {}).get(RESTARTED_AT))
                now = datetime.datetime.now(datetime.UTC)
                if last is not None and now - last < RESTART_COOLDOWN:
                    minutes = int(RESTART_COOLDOWN.total_seconds() // 60)
                    return (
                        f"{kind.lower()}/{name} was restarted at {last.isoformat()}, not again "
                        f"within {minutes} minutes (if its new pods lack the sidecar too, "
                        f"check the webhook)"
                    )
                stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
                patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
                await self.api.merge_patch(path, patch)
            except kube.FAILURES as e:
                return f"restarting {kind.lower()}/{name} failed ({e}); {self.advice(pod)}"
        owner_body = {
            "apiVersion": group_version,
            "kind": kind,
            "metadata": dict(owner.get("metadata") or {}),
        }
        self.post(
            owner_body,
            "Normal",
            "ClatRestart",
            f"restarted so that its pods get the clat sidecar "
            f"(pod {injection.meta(pod).get('name')} had none)",
        )
        logger.info(
            f"{kind.lower()} {namespace}/{name}: restarted for pod {describe(pod)} without clat"
        )
        return f"restarted {kind.lower()}/{name} (restart-missing is on)"

    async def _restart_target(self, pod: Pod, namespace: str) -> tuple[str, str] | str:
        """(kind, name) of the restartable owner, or why there is none."""
        owner = controller_of(pod)
        if owner is None:
            return "it has no owning workload: delete and recreate the pod"
        kind, name = str(owner.get("kind")), str(owner.get("name"))
        if kind == "ReplicaSet":
            replicaset = await self.api.get(
                kube.group_path("apps/v1", "replicasets", namespace, name)
            )
            parent = controller_of(replicaset)
            if parent is None or parent.get("kind") != "Deployment":
                return f"its ReplicaSet {name} has no Deployment to restart: recreate the pod"
            return "Deployment", str(parent.get("name"))
        if kind in _RESTARTABLE:
            return kind, name
        return f"its owner {kind}/{name} cannot be restarted by the operator: recreate the pod"

    # ---- not ready ---------------------------------------------------------------------

    def track_readiness(self, pod: Pod) -> None:
        """Warn once if clat does not get ready in its startup window (later crashes: the
        kubelet's own BackOff Events tell)."""
        uid = str(injection.meta(pod).get("uid"))
        status = clat_status(pod)
        if clat_done(status):
            self.ready_once.add(uid)
            task = self.pending.pop(uid, None)
            if task is not None:
                task.cancel()
            return
        if uid in self.not_ready_warned or uid in self.pending or uid in self.ready_once:
            return
        started = scheduled_at(pod)
        if started is None:
            return  # not on a node yet: the scheduler reports that itself
        elapsed = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        delay = max(0.0, self.config.not_ready_warning_seconds - elapsed)
        self.pending[uid] = asyncio.create_task(self._warn_if_still_not_ready(pod, delay))

    async def _warn_if_still_not_ready(self, pod: Pod, delay: float) -> None:
        m = injection.meta(pod)
        uid, namespace, name = str(m.get("uid")), str(m.get("namespace")), str(m.get("name"))
        try:
            await asyncio.sleep(delay)
            # Read it again: the watch may have been paused (another replica leads now).
            try:
                fresh = await self.api.get(kube.core_path("pods", namespace, name))
            except kube.NotFound:
                return
            except kube.FAILURES as e:
                logger.warning(
                    f"pod {namespace}/{name}: could not re-read it for the readiness check: {e}"
                )
                fresh = pod
            if injection.meta(fresh).get("uid") != uid or (fresh.get("status") or {}).get(
                "phase"
            ) in (
                "Succeeded",
                "Failed",
            ):
                return
            status = clat_status(fresh)
            if clat_done(status):
                return
            self.not_ready_warned.add(uid)
            seconds = int(self.config.not_ready_warning_seconds)
            container = injection.clat_container_name(fresh) or contract.SIDECAR_CONTAINER_NAME
            what = (
                f"{container} (node mode) has not handed over to the node's clat-node agent"
                if container == contract.HANDOFF_CONTAINER_NAME
                else "clat sidecar not ready"
            )
            message = (
                f"{what} {seconds}s after the pod was scheduled "
                f"({state_text(status)}); IPv4 does not work in this pod yet. "
                f"See: kubectl logs {name} -c {container} -n {namespace}"
            )
            self.post(pod_ref(fresh), "Warning", "ClatNotReady", message)
            logger.warning(
                f"pod {namespace}/{name}: clat not ready after {seconds}s ({state_text(status)})"
            )
        finally:
            if self.pending.get(uid) is asyncio.current_task():
                del self.pending[uid]


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
