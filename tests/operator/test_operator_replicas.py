"""Two replicas of the operator against one API server: both serve the webhook, one watches;
when that one stops, the other takes over the watch side."""

from __future__ import annotations

import pathlib
import time

from clat_operator import contract
from clat_operator_harness import Emulator, Operator, post_review, wait_until
from clat_operator_pods import ENABLED, deployment_pod, stored

PEERING = f"{contract.PEERING_API_VERSION}/clusterkopfpeerings"


def reported(operator: Operator, pod_name: str) -> bool:
    return f"pod apps/{pod_name}: no clat sidecar" in operator.output


async def test_every_replica_serves_one_watches_and_the_other_takes_over(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Emulator(version=(1, 30)) as emulator:
        emulator.put_object("v1/namespaces", None, "apps", {"metadata": {"name": "apps"}})
        with (
            Operator(emulator, tmp_path / "a") as first,
            Operator(emulator, tmp_path / "b") as second,
        ):
            replicas = (first, second)

            def peers() -> dict:
                peering = emulator.get_object(PEERING, None, contract.PEERING_NAME) or {}
                return peering.get("status") or {}

            wait_until(lambda: len(peers()) == 2, what="both replicas in the peering object")
            time.sleep(1.5)  # both have seen each other: one leads, one is paused

            for replica in replicas:  # both answer admission requests
                url = f"https://localhost:{replica.webhook_port}{contract.WEBHOOK_PATH}"
                review = await post_review(url, deployment_pod(), "shop", replica.ssl_context())
                assert review.container()["name"] == "clat"

            pod = stored(deployment_pod(ENABLED), "apps", "web-7d4b9c6f5d-aaaaa")
            emulator.create("/api/v1/namespaces/apps/pods", pod)
            name = pod["metadata"]["name"]
            wait_until(lambda: emulator.events_for(name, "ClatMissing"), what="the leader's report")
            time.sleep(1.0)
            leaders = [r for r in replicas if reported(r, name)]
            assert len(leaders) == 1, "exactly one replica runs the watch side"
            (leader,) = leaders
            (follower,) = [r for r in replicas if r is not leader]
            assert len(emulator.events_for(name, "ClatMissing")) == 1

            leader.__exit__(None, None, None)  # the leader stops (cleanly)
            wait_until(
                lambda: reported(follower, name), timeout=15, what="the follower taking over"
            )
            assert len(peers()) == 1
            assert follower.log.problems == []
