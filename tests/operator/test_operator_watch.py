"""The operator as a process (kopf's KopfRunner) against kmock's Kubernetes emulator: the watch
side's Events, missing-sidecar detection, the restart setting, the not-ready warning, and
peering (a paused replica still serves the webhook). Every run also checks that the operator
made no API call outside contract.API_CALLS.
"""

from __future__ import annotations

import datetime
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from clat_operator import contract
from clat_operator_harness import (
    Emulator,
    Operator,
    allowed_calls,
    api_calls_made,
    post_review,
    wait_until,
)
from clat_operator_pods import ENABLED, deployment_pod, host_network_pod, job_pod, stored

PREFIX = "2001:db8:64::/96"
PODS = "/api/v1/namespaces/{}/pods"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(version=(1, 30)) as emulator:
        emulator.put_object(
            "v1/namespaces",
            None,
            "apps",
            {"metadata": {"name": "apps", "labels": {"clat.io/enabled": "true"}}},
        )
        yield emulator


def create_pod(
    emulator: Emulator, pod: dict[str, Any], namespace: str = "apps", name: str | None = None
) -> dict[str, Any]:
    body = stored(pod, namespace, name)
    emulator.create(PODS.format(namespace), body)
    return body


def assert_within_contract(emulator: Emulator, operator: Operator) -> None:
    made = api_calls_made(emulator.requests())
    test_calls = {
        ("", "pods", "create"),
        ("", "pods", "patch"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
    }
    assert made - allowed_calls(contract.API_CALLS) - test_calls == set()
    assert operator.log.problems == []


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_event(emulator: Emulator, name: str, reason: str, timeout: float = 10.0) -> dict[str, Any]:
    events = wait_until(lambda: emulator.events_for(name, reason), timeout, f"{reason} on {name}")
    assert len(events) == 1, events
    return events[0]


async def test_injected_pod_gets_an_event_saying_how(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    with Operator(emulator, tmp_path, PLAT_PREFIX=PREFIX) as operator:
        # The real path: the webhook mutates the pod, the API server stores it, the watch sees it.
        url = f"https://localhost:{operator.webhook_port}{contract.WEBHOOK_PATH}"
        review = await post_review(url, deployment_pod(), "shop", operator.ssl_context())
        pod = create_pod(emulator, review.pod, "shop")

        event = one_event(emulator, pod["metadata"]["name"], "ClatInjected")
        assert event["type"] == "Normal"
        assert event["involvedObject"] == {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "namespace": "shop",
            "uid": pod["metadata"]["uid"],
        }
        assert "native sidecar" in event["message"]
        assert f"PLAT prefix {PREFIX} from the cluster setting" in event["message"]
        assert_within_contract(emulator, operator)


async def test_events_go_through_the_kubernetes_client_with_the_login_credentials(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    with Operator(emulator, tmp_path, PLAT_PREFIX=PREFIX) as operator:
        url = f"https://localhost:{operator.webhook_port}{contract.WEBHOOK_PATH}"
        review = await post_review(url, deployment_pod(), "shop", operator.ssl_context())
        pod = create_pod(emulator, review.pod, "shop")
        event = one_event(emulator, pod["metadata"]["name"], "ClatInjected")
        # What kopf.event posted before: the same fields, the same names.
        assert event["metadata"]["name"].startswith("kopf-event-")
        assert event["source"] == {"component": "clat-operator"}
        assert event["reportingComponent"] == "clat-operator"
        posts = [
            r
            for r in emulator.requests()
            if r.url.path == "/api/v1/namespaces/shop/events" and str(r.method.value) == "POST"
        ]
        assert len(posts) == 1
        # kubernetes_asyncio (its generated client's User-Agent), with the kubeconfig's token:
        # the one kopf logged in with.
        headers = {k.lower(): v for k, v in posts[0].headers.items()}
        assert headers["user-agent"].startswith("OpenAPI-Generator/")
        assert headers["authorization"] == "Bearer test-token"
        assert_within_contract(emulator, operator)


def test_missing_sidecar_is_reported_once_with_the_fix(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    # A pod from before the operator existed: the initial listing finds it.
    old = stored(deployment_pod(annotations={}, name="legacy"), "apps", "legacy-7d4b9c6f5d-abcde")
    emulator.put_object("v1/pods", "apps", old["metadata"]["name"], old)
    with Operator(emulator, tmp_path) as operator:
        missing = create_pod(emulator, deployment_pod(annotations={}))  # namespace label opts in
        opted_out = create_pod(emulator, deployment_pod({"clat.io/enabled": "false"}, name="out"))
        host = create_pod(emulator, host_network_pod())
        other_ns = create_pod(emulator, deployment_pod(annotations={}, name="plain"), "plain")

        event = one_event(emulator, missing["metadata"]["name"], "ClatMissing")
        assert event["type"] == "Warning"
        assert "namespace apps label clat.io/enabled=true" in event["message"]
        assert "kubectl rollout restart deployment/web -n apps" in event["message"]
        old_event = one_event(emulator, old["metadata"]["name"], "ClatMissing")
        assert "kubectl rollout restart deployment/legacy -n apps" in old_event["message"]

        # More watch events of the same pod: still one Warning.
        path = f"{PODS.format('apps')}/{missing['metadata']['name']}"
        emulator.patch(path, {"status": {"phase": "Running"}})
        emulator.patch(path, {"metadata": {"labels": {"touched": "yes"}}})
        wait_until(
            lambda: any(
                r.method.value == "PATCH" and r.url.path == path for r in emulator.requests()
            ),
            what="the pod updates",
        )
        for pod in (opted_out, host, other_ns):
            assert emulator.events_for(pod["metadata"]["name"]) == []
        assert len(emulator.events_for(missing["metadata"]["name"], "ClatMissing")) == 1
        assert (
            emulator.get_object("apps/v1/deployments", "apps", "web") is None
        )  # nothing restarted
        assert_within_contract(emulator, operator)


def test_restart_missing_restarts_each_workload_once(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    rs_owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": "d1",
        "controller": True,
    }
    emulator.put_object("apps/v1/deployments", "apps", "web", workload("Deployment", "web"))
    emulator.put_object("apps/v1/statefulsets", "apps", "db", workload("StatefulSet", "db"))
    emulator.put_object(
        "apps/v1/replicasets",
        "apps",
        "web-7d4b9c6f5d",
        {
            "metadata": {
                "name": "web-7d4b9c6f5d",
                "namespace": "apps",
                "ownerReferences": [rs_owner],
            }
        },
    )
    db_pod = stored(deployment_pod(annotations={}, name="db"), "apps", "db-0")
    db_pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "db",
            "uid": "s1",
            "controller": True,
        }
    ]
    db_pod["metadata"]["labels"].pop("pod-template-hash")
    with Operator(emulator, tmp_path, RESTART_MISSING="true") as operator:
        web_a = create_pod(emulator, deployment_pod(annotations={}))
        web_b = create_pod(emulator, deployment_pod(annotations={}))
        emulator.create(PODS.format("apps"), db_pod)
        job = create_pod(emulator, job_pod())

        messages = {
            one_event(emulator, p["metadata"]["name"], "ClatMissing")["message"].rsplit("; ", 1)[1]
            for p in (web_a, web_b)
        }
        assert "restarted deployment/web (restart-missing is on)" in messages
        assert any(m.startswith("deployment/web was restarted at ") for m in messages)
        db_event = one_event(emulator, "db-0", "ClatMissing")
        assert "restarted statefulset/db" in db_event["message"]
        job_event = one_event(emulator, job["metadata"]["name"], "ClatMissing")
        assert "its owner Job/backup-28512345 cannot be restarted" in job_event["message"]

        for plural, name, kind in (
            ("deployments", "web", "Deployment"),
            ("statefulsets", "db", "StatefulSet"),
        ):
            obj = emulator.get_object(f"apps/v1/{plural}", "apps", name)
            assert obj is not None
            stamp = obj["spec"]["template"]["metadata"]["annotations"][
                "kubectl.kubernetes.io/restartedAt"
            ]
            assert datetime.datetime.fromisoformat(stamp) > datetime.datetime.now(
                datetime.UTC
            ) - datetime.timedelta(minutes=1)
            restart = one_event(emulator, name, "ClatRestart")
            assert restart["involvedObject"]["kind"] == kind
        patches = [
            r
            for r in emulator.requests()
            if r.method.value == "PATCH" and r.url.path.endswith("/deployments/web")
        ]
        assert len(patches) == 1
        assert_within_contract(emulator, operator)


def workload(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "apps", "uid": str(uuid.uuid4())},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
    }


def injected_pod(ready: bool, name: str) -> dict[str, Any]:
    pod = deployment_pod(name=name)
    pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED] = (
        '{"mode":"native","platPrefix":null,"prefixSource":"sidecar-discovery"}'
    )
    pod["spec"]["initContainers"] = [{"name": "clat", "image": "x", "restartPolicy": "Always"}]
    status = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}],
        "initContainerStatuses": [
            {
                "name": "clat",
                "ready": ready,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            }
        ],
    }
    return stored(pod, "apps", f"{name}-pod", **status)


def test_not_ready_sidecar_is_warned_about(emulator: Emulator, tmp_path: pathlib.Path) -> None:
    with Operator(emulator, tmp_path, NOT_READY_WARNING_SECONDS="1.5") as operator:
        stuck = injected_pod(ready=False, name="stuck")
        recovers = injected_pod(ready=False, name="recovers")
        emulator.create(PODS.format("apps"), stuck)
        emulator.create(PODS.format("apps"), recovers)
        was_ready = injected_pod(ready=True, name="was-ready")
        emulator.create(PODS.format("apps"), was_ready)
        recovered = {"name": "clat", "ready": True, "restartCount": 3, "state": {"running": {}}}
        emulator.patch(
            f"{PODS.format('apps')}/recovers-pod",
            {"status": {"initContainerStatuses": [recovered]}},
        )
        # Ready once, then not: past its startup window (the kubelet reports later crashes).
        emulator.patch(f"{PODS.format('apps')}/was-ready-pod", {"status": stuck["status"]})

        event = one_event(emulator, "stuck-pod", "ClatNotReady", timeout=10)
        assert event["type"] == "Warning"
        assert "not ready 1s after the pod was scheduled" in event["message"]
        assert "waiting: CrashLoopBackOff (back-off 40s); restarts 3" in event["message"]
        assert "kubectl logs stuck-pod -c clat -n apps" in event["message"]
        time.sleep(0.5)  # the same deadline for all three pods
        assert emulator.events_for("recovers-pod", "ClatNotReady") == []
        assert emulator.events_for("was-ready-pod", "ClatNotReady") == []
        assert_within_contract(emulator, operator)


async def test_paused_replica_still_serves_the_webhook(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    # Another replica with a higher peering priority is alive: this one must pause its watch side.
    leader = {
        "priority": 2**31 - 1,
        "lifetime": 60,
        "lastseen": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    peering = {
        "apiVersion": contract.PEERING_API_VERSION,
        "kind": contract.PEERING_KIND,
        "metadata": {"name": contract.PEERING_NAME},
        "status": {"other-replica": leader},
    }
    emulator.put_object(
        f"{contract.PEERING_API_VERSION}/clusterkopfpeerings", None, contract.PEERING_NAME, peering
    )
    path = f"/apis/{contract.PEERING_API_VERSION}/clusterkopfpeerings/{contract.PEERING_NAME}"

    def pods_watched() -> bool:
        return any(
            r.resource is not None and r.resource.plural == "pods" and r.method.value == "GET"
            for r in emulator.requests()
        )

    with Operator(emulator, tmp_path) as operator:
        # It takes part in peering (keep-alive in the peering object) ...
        wait_until(
            lambda: any(
                r.method.value == "PATCH" and r.url.path == path for r in emulator.requests()
            ),
            what="a peering keep-alive",
        )
        pod = create_pod(emulator, deployment_pod(ENABLED))

        url = f"https://localhost:{operator.webhook_port}{contract.WEBHOOK_PATH}"
        review = await post_review(url, deployment_pod(), "shop", operator.ssl_context())
        assert review.container()["name"] == "clat"  # ... admission works while paused ...
        time.sleep(1.0)
        assert not pods_watched()  # ... the watch side does not even list pods
        assert emulator.events_for(pod["metadata"]["name"]) == []

        # The other replica goes away: this one takes over and catches up.
        emulator.patch(path, {"status": {"other-replica": None}})
        one_event(emulator, pod["metadata"]["name"], "ClatMissing")
        assert pods_watched()
        assert_within_contract(emulator, operator)


# ---- node mode ------------------------------------------------------------------------------


def handoff_pod(name: str, state: dict[str, Any]) -> dict[str, Any]:
    pod = deployment_pod(name=name)
    pod["metadata"]["annotations"][contract.ANNOTATION_INJECTED] = (
        '{"mode":"node","platPrefix":null,"prefixSource":"node-agent"}'
    )
    pod["spec"]["initContainers"] = [{"name": contract.HANDOFF_CONTAINER_NAME, "image": "x"}]
    status = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}],
        "initContainerStatuses": [
            {
                "name": contract.HANDOFF_CONTAINER_NAME,
                "ready": False,  # what the kubelet reports for an init container, also when done
                "restartCount": 0,
                "state": state,
            }
        ],
    }
    return stored(pod, "apps", f"{name}-pod", **status)


async def test_node_mode_pods_are_reported_like_sidecar_pods(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    with Operator(emulator, tmp_path, MODE="node", NOT_READY_WARNING_SECONDS="1.5") as operator:
        url = f"https://localhost:{operator.webhook_port}{contract.WEBHOOK_PATH}"
        review = await post_review(url, deployment_pod(), "shop", operator.ssl_context())
        injected = create_pod(emulator, review.pod, "shop")
        missing = create_pod(emulator, deployment_pod(annotations={}, name="late"))
        stuck = handoff_pod("stuck", {"running": {"startedAt": now()}})
        done = handoff_pod(
            "done", {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now()}}
        )
        failed = handoff_pod(
            "failed", {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now()}}
        )
        for pod in (stuck, done, failed):
            emulator.create(PODS.format("apps"), pod)

        event = one_event(emulator, injected["metadata"]["name"], "ClatInjected")
        assert "node mode: clat-handoff init container injected" in event["message"]
        event = one_event(emulator, missing["metadata"]["name"], "ClatMissing")
        assert "running without the clat-handoff init container (node mode)" in event["message"]
        assert "kubectl rollout restart deployment/late -n apps" in event["message"]
        event = one_event(emulator, "stuck-pod", "ClatNotReady")
        assert "clat-handoff (node mode) has not handed over" in event["message"]
        assert "running, waiting for the node agent's answer" in event["message"]
        assert "kubectl logs stuck-pod -c clat-handoff -n apps" in event["message"]
        event = one_event(emulator, "failed-pod", "ClatNotReady")
        assert "terminated: Error, exit code 1" in event["message"]
        time.sleep(0.5)  # the same deadline for all of them
        assert emulator.events_for("done-pod", "ClatNotReady") == []
        assert_within_contract(emulator, operator)
