"""The operator's own servers: the webhook's TLS (certificate files, rotation without a restart,
the namespace from the AdmissionReview) and the health endpoints on both address families."""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from typing import Any

import aiohttp
import pytest
from clat_operator import certs, contract
from clat_operator.health import HealthServer
from clat_operator.webhook import ClatWebhookServer
from clat_operator_harness import admission_review, free_port
from clat_operator_pods import deployment_pod
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def test_self_signed_certificate_is_its_own_ca_for_its_hosts() -> None:
    cert_pem, key_pem = certs.self_signed(["127.0.0.1", "clat-operator.clat-system.svc"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["clat-operator.clat-system.svc"]
    assert b"PRIVATE KEY" in key_pem


def test_key_file_is_private(tmp_path: pathlib.Path) -> None:
    _, key = certs.write_self_signed(tmp_path, ["localhost"])
    assert key.stat().st_mode & 0o777 == 0o600


async def serve(server: ClatWebhookServer, seen: list[Any]) -> asyncio.Task[None]:
    async def fn(request: Any, **kwargs: Any) -> Any:
        seen.append(request)
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": True},
        }

    async def run() -> None:
        async for _ in server(fn):
            pass

    task = asyncio.create_task(run())
    await asyncio.wait_for(server.listening.wait(), 5)
    return task


async def peer_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return bytes(der)


async def test_rotated_certificate_files_are_served_without_a_restart(
    tmp_path: pathlib.Path,
) -> None:
    cert_file, key_file = certs.write_self_signed(tmp_path, ["127.0.0.1"])
    port = free_port()
    server = ClatWebhookServer(
        port=port, certfile=cert_file, pkeyfile=key_file, file_check_interval=0.1
    )
    task = await serve(server, [])
    try:
        first = await peer_certificate(port)
        certs.write_self_signed(
            tmp_path, ["127.0.0.1"]
        )  # cert-manager / the chart renews the Secret
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                if await peer_certificate(port) != first:
                    break
            except OSError:
                pass  # between the old listener and the new one
        else:
            pytest.fail("the renewed certificate was never served")
        new = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(Encoding.DER)
        assert await peer_certificate(port) == new
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_namespace_of_the_request_is_given_to_the_pod(tmp_path: pathlib.Path) -> None:
    cert_file, key_file = certs.write_self_signed(tmp_path, ["127.0.0.1"])
    port = free_port()
    seen: list[Any] = []
    task = await serve(ClatWebhookServer(port=port, certfile=cert_file, pkeyfile=key_file), seen)
    try:
        context = ssl.create_default_context(cafile=str(cert_file))
        review = admission_review(deployment_pod(), "shop")
        assert "namespace" not in review["request"]["object"]["metadata"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"https://127.0.0.1:{port}{contract.WEBHOOK_PATH}", json=review, ssl=context
            ) as response,
        ):
            assert response.status == 200
        assert seen[0]["request"]["object"]["metadata"]["namespace"] == "shop"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_health_on_both_families(host: str) -> None:
    state: dict[str, str | None] = {"missing": "the webhook server to listen"}
    port = free_port()
    health = HealthServer(port, lambda: state["missing"])
    await health.start()
    try:
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url + contract.HEALTH_PATH) as response:
                assert response.status == 200
            async with session.get(url + contract.READY_PATH) as response:
                assert response.status == 503
                assert (await response.json())["waiting for"] == "the webhook server to listen"
            state["missing"] = None
            async with session.get(url + contract.READY_PATH) as response:
                assert response.status == 200
    finally:
        await health.stop()
