"""KubernetesPodVerifier against kmock's API emulator over HTTP (the real `kubernetes` client)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from clat_node.netns import NamespaceIdentity
from clat_node.protocol import Hello
from clat_node.verify import HandoffRefused, KubernetesPodVerifier
from kubernetes import client

from tests.node.kube import NODE, Emulator

POD_IP = "2001:db8:5::a"
IDENTITY = NamespaceIdentity(device=4, inode=4026532999, ipv6=("2001:db8:5::a", "fd00:1::1"))


@pytest.fixture(scope="module")
def api() -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.namespace("shop")
        emulator.namespace("labelled", labels={"clat.io/enabled": "true"})
        yield emulator


def verifier(api: Emulator, **kwargs: float) -> KubernetesPodVerifier:
    kwargs.setdefault("wait_for_ips", 2.0)
    kwargs.setdefault("poll_interval", 0.1)
    return KubernetesPodVerifier(api.core_v1(), NODE, **kwargs)


def hello_for(pod: dict[str, object], namespace: str = "shop") -> Hello:
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    return Hello(namespace=namespace, name=meta["name"], uid=meta["uid"])


def name() -> str:
    return "web-" + uuid.uuid4().hex[:8]


def test_opted_in_pod_on_this_node_with_the_namespace_address_is_accepted(api: Emulator) -> None:
    pod = api.pod("shop", name(), [POD_IP], annotations={"clat.io/enabled": "true"})
    verified = verifier(api).verify(hello_for(pod), IDENTITY)
    assert verified.uid == pod["metadata"]["uid"]
    assert verified.ipv6 == POD_IP
    assert verified.node == NODE
    assert verified.annotations["clat.io/enabled"] == "true"


def test_namespace_label_opts_in_and_the_pod_annotation_opts_out(api: Emulator) -> None:
    pod = api.pod("labelled", name(), [POD_IP])
    assert verifier(api).verify(hello_for(pod, "labelled"), IDENTITY).ipv6 == POD_IP
    pod = api.pod("labelled", name(), [POD_IP], annotations={"clat.io/enabled": "false"})
    with pytest.raises(HandoffRefused, match="has not opted in"):
        verifier(api).verify(hello_for(pod, "labelled"), IDENTITY)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"node": "node-2"}, r"is not scheduled on this node \(node-1\)"),
        ({"host_network": True}, "uses the host network"),
        ({"annotations": {}}, "has not opted in"),
        ({"ips": ["2001:db8:5::b"]}, "this network namespace is not pod shop/.*'s"),
    ],
)
def test_refused_with_the_reason(api: Emulator, change: dict[str, object], reason: str) -> None:
    settings: dict[str, object] = {"annotations": {"clat.io/enabled": "true"}, "ips": [POD_IP]}
    settings.update(change)
    ips = settings.pop("ips")
    assert isinstance(ips, list)
    pod = api.pod("shop", name(), ips, **settings)  # type: ignore[arg-type]
    with pytest.raises(HandoffRefused, match=reason):
        verifier(api).verify(hello_for(pod), IDENTITY)


def test_unknown_pod_and_a_stale_uid_are_refused(api: Emulator) -> None:
    missing = Hello(namespace="shop", name=name(), uid=str(uuid.uuid4()))
    with pytest.raises(HandoffRefused, match=f"pod shop/{missing.name} does not exist"):
        verifier(api).verify(missing, IDENTITY)
    pod = api.pod("shop", name(), [POD_IP], annotations={"clat.io/enabled": "true"})
    stale = Hello(namespace="shop", name=pod["metadata"]["name"], uid=str(uuid.uuid4()))
    with pytest.raises(HandoffRefused, match="another uid"):
        verifier(api).verify(stale, IDENTITY)


def test_waits_for_the_kubelet_to_report_the_pod_ips(api: Emulator) -> None:
    pod = api.pod("shop", name(), [], annotations={"clat.io/enabled": "true"})

    def kubelet_reports() -> None:
        time.sleep(0.5)
        pod["status"] = {"phase": "Pending", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}]}
        api.put("v1/pods", "shop", pod["metadata"]["name"], pod)

    reporter = threading.Thread(target=kubelet_reports)
    reporter.start()
    started = time.monotonic()
    verified = verifier(api).verify(hello_for(pod), IDENTITY)
    reporter.join()
    assert verified.ipv6 == POD_IP
    assert 0.4 < time.monotonic() - started < 2.0


def test_no_ipv6_pod_ip_ever_is_refused_after_the_wait(api: Emulator) -> None:
    pod = api.pod("shop", name(), ["10.1.2.3"], annotations={"clat.io/enabled": "true"})
    started = time.monotonic()
    with pytest.raises(HandoffRefused, match="reports no IPv6 podIP after 0.5 s"):
        verifier(api, wait_for_ips=0.5).verify(hello_for(pod), IDENTITY)
    assert time.monotonic() - started < 1.5


def test_an_unreachable_api_server_is_one_clear_refusal() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = 0
    api = client.CoreV1Api(client.ApiClient(configuration))
    hello = Hello(namespace="shop", name="web-0", uid=str(uuid.uuid4()))
    with pytest.raises(HandoffRefused) as refused:
        KubernetesPodVerifier(api, NODE, request_timeout=2).verify(hello, IDENTITY)
    text = str(refused.value)
    assert text.startswith("cannot read pod shop/web-0 from the API server:")
    assert "\n" not in text


def test_live_pod_uids_are_the_pods_of_this_node(api: Emulator) -> None:
    here = api.pod("shop", name(), [POD_IP])
    there = api.pod("shop", name(), [POD_IP], node="node-2")
    uids = verifier(api).live_pod_uids()
    assert here["metadata"]["uid"] in uids
    assert there["metadata"]["uid"] not in uids
    api.core_v1().delete_namespaced_pod(here["metadata"]["name"], "shop")
    assert here["metadata"]["uid"] not in verifier(api).live_pod_uids()
