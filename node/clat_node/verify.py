"""Is this namespace an opted-in pod of this node? Asked before the agent touches it.

Anyone who can reach the socket can hand the agent *some* network namespace and *claim* to be
any pod. The claim is checked against the API server: the named pod must exist with the uid the
hello gives, be scheduled on this node, not use the host network, be opted in, and one of its
IPv6 podIPs must be an address of the handed namespace. Without NET_ADMIN a pod cannot give its
namespace another pod's address, so the address ties the namespace to the pod (see
docs/node-mode.md for what this does not cover).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from clat_node.netns import NamespaceIdentity
from clat_node.protocol import Hello

# The opt-in of the operator (ARCHITECTURE.md): pod annotation or label, else namespace label.
ENABLED = "clat.io/enabled"
TERMINAL_PHASES = ("Succeeded", "Failed")

Pod = Mapping[str, Any]


class HandoffRefused(Exception):
    """The namespace is not served; the text is what the pod's init container prints."""


class ApiError(Exception):
    """The API server could not answer a read; the text says which and why."""


@dataclass(frozen=True)
class VerifiedPod:
    namespace: str
    name: str
    uid: str
    node: str
    ipv6: str  # the podIP found in the namespace
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodVerifier(Protocol):
    async def verify(self, hello: Hello, identity: NamespaceIdentity) -> VerifiedPod:
        """The pod the namespace belongs to, or HandoffRefused saying why not."""
        ...


def _metadata(pod: Pod) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def pod_ipv6_addresses(pod: Pod) -> set[ipaddress.IPv6Address]:
    status = pod.get("status") or {}
    texts = [entry.get("ip", "") for entry in status.get("podIPs") or []]
    texts.append(status.get("podIP") or "")
    found = set()
    for text in texts:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address):
            found.add(address)
    return found


def refusal(pod: Pod, hello: Hello, node: str) -> str | None:
    """Why this pod object is not one the agent may serve for `hello`, or None."""
    meta = _metadata(pod)
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if meta.get("uid") != hello.uid:
        return f"pod {hello.pod} has another uid than the hello says (a pod of the same name?)"
    if spec.get("nodeName") != node:
        return f"pod {hello.pod} is not scheduled on this node ({node})"
    if spec.get("hostNetwork"):
        return f"pod {hello.pod} uses the host network: node mode serves pod namespaces only"
    if meta.get("deletionTimestamp"):
        return f"pod {hello.pod} is being deleted"
    if status.get("phase") in TERMINAL_PHASES:
        return f"pod {hello.pod} has finished ({status['phase']})"
    return None


def opted_in(pod: Pod, namespace_labels: Mapping[str, str] | None) -> bool:
    """The pod's own annotation or label decides; else its namespace's label (only "true")."""
    meta = _metadata(pod)
    for said in (meta.get("annotations") or {}, meta.get("labels") or {}):
        if ENABLED in said:
            return bool(said[ENABLED] == "true")
    return (namespace_labels or {}).get(ENABLED) == "true"


def says_nothing(pod: Pod) -> bool:
    meta = _metadata(pod)
    return all(ENABLED not in (meta.get(k) or {}) for k in ("annotations", "labels"))


def matching_address(pod: Pod, identity: NamespaceIdentity) -> ipaddress.IPv6Address | None:
    ours = {ipaddress.IPv6Address(a) for a in identity.ipv6}
    common = sorted(pod_ipv6_addresses(pod) & ours)
    return common[0] if common else None


class KubernetesPodVerifier:
    """PodVerifier against the API server, through `kubernetes_asyncio` (the operator's client).

    Needs RBAC `get` on pods and namespaces (namespaces only for the namespace-label opt-in),
    and `list` on pods for `live_pod_uids`.
    """

    def __init__(
        self,
        api: Any,  # kubernetes_asyncio.client.CoreV1Api
        node_name: str,
        wait_for_ips: float = 30.0,
        poll_interval: float = 0.5,
        request_timeout: float = 10.0,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.wait_for_ips = wait_for_ips
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout

    @classmethod
    async def from_environment(cls, node_name: str, **kwargs: Any) -> KubernetesPodVerifier:
        """In a pod: its service account; elsewhere: KUBECONFIG / ~/.kube/config."""
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
        return cls(client.CoreV1Api(client.ApiClient(configuration)), node_name, **kwargs)

    async def close(self) -> None:
        """Close the client's HTTP session (its connections)."""
        await self.api.api_client.close()

    async def _get(self, call: Any, *args: Any, what: str, **kwargs: Any) -> dict[str, Any] | None:
        """One API read as plain JSON; None for 404; ApiError when the API cannot answer."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            response = await call(
                *args, _preload_content=False, _request_timeout=self.request_timeout, **kwargs
            )
            # Unloaded, the client leaves the status to us (it raises only when it loads).
            async with response:
                status, reason = response.status, response.reason
                raw = await response.read()
        except ApiException as exc:
            status, reason, raw = exc.status, exc.reason, b"{}"
        except Exception as exc:  # aiohttp's connection errors, timeouts: one line
            detail = str(exc) or type(exc).__name__
            raise ApiError(f"cannot read {what} from the API server: {detail}") from None
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise ApiError(f"the API server refused to read {what}: {status} {reason}")
        try:
            body: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise ApiError(f"cannot read {what} from the API server: {exc}") from None
        return body

    async def _read_pod(self, hello: Hello) -> dict[str, Any]:
        pod = await self._get(
            self.api.read_namespaced_pod, hello.name, hello.namespace, what=f"pod {hello.pod}"
        )
        if pod is None:
            raise HandoffRefused(f"pod {hello.pod} does not exist")
        return pod

    async def verify(self, hello: Hello, identity: NamespaceIdentity) -> VerifiedPod:
        try:
            return await self._verify(hello, identity)
        except ApiError as exc:
            raise HandoffRefused(str(exc)) from None

    async def _verify(self, hello: Hello, identity: NamespaceIdentity) -> VerifiedPod:
        deadline = time.monotonic() + self.wait_for_ips
        pod = await self._read_pod(hello)
        why = refusal(pod, hello, self.node_name)
        if why:
            raise HandoffRefused(why)
        labels: Mapping[str, str] | None = None
        if says_nothing(pod):
            namespace = await self._get(
                self.api.read_namespace, hello.namespace, what=f"namespace {hello.namespace}"
            )
            labels = _metadata(namespace or {}).get("labels") or {}
        if not opted_in(pod, labels):
            raise HandoffRefused(
                f"pod {hello.pod} has not opted in ({ENABLED}: pod annotation, or namespace label)"
            )
        # The kubelet reports podIPs a moment after the sandbox exists, and the init container
        # may be quicker: wait for them, but only while the pod reports no IPv6 address at all.
        while not pod_ipv6_addresses(pod):
            if time.monotonic() + self.poll_interval > deadline:
                raise HandoffRefused(
                    f"pod {hello.pod} reports no IPv6 podIP after {self.wait_for_ips:g} s"
                )
            await asyncio.sleep(self.poll_interval)
            pod = await self._read_pod(hello)
            why = refusal(pod, hello, self.node_name)
            if why:
                raise HandoffRefused(why)
        address = matching_address(pod, identity)
        if address is None:
            ours = ", ".join(identity.ipv6) or "none"
            raise HandoffRefused(
                f"this network namespace is not pod {hello.pod}'s: none of its IPv6 addresses "
                f"({ours}) is an IP of that pod"
            )
        return VerifiedPod(
            namespace=hello.namespace,
            name=hello.name,
            uid=hello.uid,
            node=self.node_name,
            ipv6=str(address),
            annotations=dict(_metadata(pod).get("annotations") or {}),
        )

    async def live_pod_uids(self) -> set[str]:
        """The uids of the pods the API has on this node (to release the ones that are gone).

        ApiError when the API cannot answer: then nothing may be released."""
        listing = await self._get(
            self.api.list_pod_for_all_namespaces,
            what=f"the pods of node {self.node_name}",
            field_selector=f"spec.nodeName={self.node_name}",
        )
        if listing is None:
            raise ApiError(f"the API server has no pod list for node {self.node_name}")
        # A pod being deleted still runs its containers: it stays served until it is gone.
        return {
            str(_metadata(pod).get("uid"))
            for pod in listing.get("items") or []
            if (pod.get("spec") or {}).get("nodeName") == self.node_name
        }
