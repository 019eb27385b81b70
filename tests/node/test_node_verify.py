"""KubernetesPodVerifier against kmock's API emulator over HTTP (the real `kubernetes_asyncio`
client)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from clat_node.netns import NamespaceIdentity
from clat_node.protocol import Hello
from clat_node.verify import HandoffRefused, KubernetesPodVerifier
from kubernetes_asyncio import client

from tests.node.kube import NODE, Emulator

Maker = Callable[..., KubernetesPodVerifier]

POD_IP = "2001:db8:5::a"
IDENTITY = NamespaceIdentity(device=4, inode=4026532999, ipv6=("2001:db8:5::a", "fd00:1::1"))


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.namespace("shop")
        emulator.namespace("labelled", labels={"clat.io/enabled": "true"})
        yield emulator


@pytest.fixture
async def verifiers(api: Emulator) -> AsyncIterator[list[KubernetesPodVerifier]]:
    made: list[KubernetesPodVerifier] = []
    yield made
    for one in made:
        await one.close()


@pytest.fixture
def verifier(api: Emulator, verifiers: list[KubernetesPodVerifier]) -> Maker:
    def make(**kwargs: float) -> KubernetesPodVerifier:
        kwargs.setdefault("wait_for_ips", 2.0)
        kwargs.setdefault("poll_interval", 0.1)
        made = KubernetesPodVerifier(api.core_v1(), NODE, **kwargs)
        verifiers.append(made)
        return made

    return make


def hello_for(pod: dict[str, object], namespace: str = "shop") -> Hello:
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    return Hello(namespace=namespace, name=meta["name"], uid=meta["uid"])


def name() -> str:
    return "web-" + uuid.uuid4().hex[:8]


async def test_opted_in_pod_on_this_node_with_the_namespace_address_is_accepted(
    api: Emulator, verifier: Maker
) -> None:
    pod = api.pod("shop", name(), [POD_IP], annotations={"clat.io/enabled": "true"})
    verified = await verifier().verify(hello_for(pod), IDENTITY)
    assert verified.uid == pod["metadata"]["uid"]
    assert verified.ipv6 == POD_IP
    assert verified.node == NODE
    assert verified.annotations["clat.io/enabled"] == "true"


async def test_namespace_label_opts_in_and_the_pod_annotation_opts_out(
    api: Emulator, verifier: Maker
) -> None:
    pod = api.pod("labelled", name(), [POD_IP])
    assert (await verifier().verify(hello_for(pod, "labelled"), IDENTITY)).ipv6 == POD_IP
    pod = api.pod("labelled", name(), [POD_IP], annotations={"clat.io/enabled": "false"})
    with pytest.raises(HandoffRefused, match="has not opted in"):
        await verifier().verify(hello_for(pod, "labelled"), IDENTITY)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"node": "node-2"}, r"is not scheduled on this node \(node-1\)"),
        ({"host_network": True}, "uses the host network"),
        ({"annotations": {}}, "has not opted in"),
        ({"ips": ["2001:db8:5::b"]}, "this network namespace is not pod shop/.*'s"),
    ],
)
async def test_refused_with_the_reason(
    api: Emulator, verifier: Maker, change: dict[str, object], reason: str
) -> None:
    settings: dict[str, object] = {"annotations": {"clat.io/enabled": "true"}, "ips": [POD_IP]}
    settings.update(change)
    ips = settings.pop("ips")
    assert isinstance(ips, list)
    pod = api.pod("shop", name(), ips, **settings)  # type: ignore[arg-type]
    with pytest.raises(HandoffRefused, match=reason):
        await verifier().verify(hello_for(pod), IDENTITY)


async def test_unknown_pod_and_a_stale_uid_are_refused(api: Emulator, verifier: Maker) -> None:
    missing = Hello(namespace="shop", name=name(), uid=str(uuid.uuid4()))
    with pytest.raises(HandoffRefused, match=f"pod shop/{missing.name} does not exist"):
        await verifier().verify(missing, IDENTITY)
    pod = api.pod("shop", name(), [POD_IP], annotations={"clat.io/enabled": "true"})
    stale = Hello(namespace="shop", name=pod["metadata"]["name"], uid=str(uuid.uuid4()))
    with pytest.raises(HandoffRefused, match="another uid"):
        await verifier().verify(stale, IDENTITY)


async def test_waits_for_the_kubelet_to_report_the_pod_ips(api: Emulator, verifier: Maker) -> None:
    pod = api.pod("shop", name(), [], annotations={"clat.io/enabled": "true"})

    async def kubelet_reports() -> None:
        await asyncio.sleep(0.5)
        pod["status"] = {"phase": "Pending", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}]}
        await asyncio.to_thread(api.put, "v1/pods", "shop", pod["metadata"]["name"], pod)

    reporter = asyncio.create_task(kubelet_reports())
    started = time.monotonic()
    verified = await verifier().verify(hello_for(pod), IDENTITY)
    await reporter
    assert verified.ipv6 == POD_IP
    assert 0.4 < time.monotonic() - started < 2.0


async def test_no_ipv6_pod_ip_ever_is_refused_after_the_wait(
    api: Emulator, verifier: Maker
) -> None:
    pod = api.pod("shop", name(), ["10.1.2.3"], annotations={"clat.io/enabled": "true"})
    started = time.monotonic()
    with pytest.raises(HandoffRefused, match="reports no IPv6 podIP after 0.5 s"):
        await verifier(wait_for_ips=0.5).verify(hello_for(pod), IDENTITY)
    assert time.monotonic() - started < 1.5


async def test_an_unreachable_api_server_is_one_clear_refusal(
    verifiers: list[KubernetesPodVerifier],
) -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = 0
    api = client.CoreV1Api(client.ApiClient(configuration))
    verifiers.append(KubernetesPodVerifier(api, NODE, request_timeout=2))
    hello = Hello(namespace="shop", name="web-0", uid=str(uuid.uuid4()))
    with pytest.raises(HandoffRefused) as refused:
        await verifiers[-1].verify(hello, IDENTITY)
    text = str(refused.value)
    assert text.startswith("cannot read pod shop/web-0 from the API server:")
    assert "\n" not in text


async def test_live_pod_uids_are_the_pods_of_this_node(api: Emulator, verifier: Maker) -> None:
    here = api.pod("shop", name(), [POD_IP])
    there = api.pod("shop", name(), [POD_IP], node="node-2")
    uids = await verifier().live_pod_uids()
    assert here["metadata"]["uid"] in uids
    assert there["metadata"]["uid"] not in uids
    await asyncio.to_thread(api.delete_pod, "shop", here["metadata"]["name"])
    assert here["metadata"]["uid"] not in await verifier().live_pod_uids()
