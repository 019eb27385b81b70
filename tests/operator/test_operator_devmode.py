"""Local development mode against "the API server in KUBECONFIG" (kmock's emulator): a generated
certificate, an operator-managed MutatingWebhookConfiguration that works as registered, and
nothing left behind when the operator stops — also as the real `clat-operator run` process.
"""

from __future__ import annotations

import base64
import os
import pathlib
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from clat_operator import contract, handlers
from clat_operator_harness import (
    Emulator,
    Operator,
    allowed_calls,
    api_calls_made,
    free_port,
    post_review,
    wait_until,
)
from clat_operator_pods import deployment_pod
from cryptography import x509
from kopf.testing import KopfRunner

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VWC = "admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(version=(1, 31)) as emulator:
        yield emulator


def registered(emulator: Emulator) -> dict[str, Any] | None:
    config = emulator.get_object(MWC, None, contract.DEV_WEBHOOK_CONFIGURATION)
    return config if config and config.get("webhooks") else None


async def test_dev_mode_registers_a_working_webhook_and_removes_it(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    with Operator(emulator, tmp_path, WEBHOOK_HOST="127.0.0.1") as operator:
        config = wait_until(lambda: registered(emulator), what="the webhook configuration")
        (webhook,) = config["webhooks"]
        assert (
            webhook["clientConfig"]["url"]
            == f"https://127.0.0.1:{operator.webhook_port}{contract.WEBHOOK_PATH}"
        )
        assert webhook["failurePolicy"] == "Ignore"  # a stopped dev operator must not block pods
        assert webhook["sideEffects"] == "None"
        assert webhook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE"],
                "scope": "*",
            }
        ]
        # The certificate is its own CA, with the host in its subjectAltName.
        ca_pem = base64.b64decode(webhook["clientConfig"]["caBundle"])
        cert = x509.load_pem_x509_certificate(ca_pem)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]

        # Call it exactly as registered, trusting only its caBundle (hostname checked).
        context = ssl.create_default_context(cadata=ca_pem.decode())
        review = await post_review(
            webhook["clientConfig"]["url"], deployment_pod(), "shop", context
        )
        assert review.container()["name"] == "clat"
        assert review.container()["restartPolicy"] == "Always"  # 1.31 → native sidecar

        # A dev operator outranks the cluster's replicas in peering (they pause while it runs).
        peering = emulator.get_object(
            f"{contract.PEERING_API_VERSION}/clusterkopfpeerings", None, contract.PEERING_NAME
        )
        assert peering is not None
        assert [p["priority"] for p in peering["status"].values()] == [handlers.DEV_PRIORITY]
        assert operator.log.problems == []

    assert emulator.get_object(MWC, None, contract.DEV_WEBHOOK_CONFIGURATION) is None
    assert emulator.get_object(VWC, None, contract.DEV_WEBHOOK_CONFIGURATION) is None
    made = api_calls_made(emulator.requests())
    allowed = allowed_calls(contract.API_CALLS + contract.DEV_MODE_API_CALLS)
    assert made - allowed - {("", "pods", "create")} == set()
    assert ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "delete") in made


def test_clat_operator_run_process_stops_cleanly_on_sigterm(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    health, port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(emulator.kubeconfig(tmp_path)),
        "CLAT_OPERATOR_DISCOVER_PREFIX": "false",
    }
    command = [
        sys.executable,
        "-c",
        "import sys; from clat_operator.cli import main; sys.exit(main())",
        "run",
        "--webhook-host",
        "127.0.0.1",
        "--webhook-port",
        str(port),
        "--health-port",
        str(health),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        config = wait_until(
            lambda: registered(emulator) or process.poll() is not None, 20, "the webhook config"
        )
        assert process.poll() is None, process.communicate()[0]
        assert config["webhooks"][0]["clientConfig"]["url"].endswith(
            f":{port}{contract.WEBHOOK_PATH}"
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert emulator.get_object(MWC, None, contract.DEV_WEBHOOK_CONFIGURATION) is None
    assert "removed MutatingWebhookConfiguration" in output
    assert "Traceback" not in output


def test_in_cluster_mode_without_tls_files_stops_with_a_clear_message(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    env = {
        "KUBECONFIG": str(emulator.kubeconfig(tmp_path)),
        "CLAT_OPERATOR_TLS_CERT_FILE": str(tmp_path / "missing.crt"),
        "CLAT_OPERATOR_HEALTH_PORT": str(free_port()),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        runner = KopfRunner(
            ["run", "-A", "-m", "clat_operator.handlers"], reraise=False, timeout=20
        )
        with runner:
            runner._thread.join(20)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert runner.exit_code != 0
    assert f"webhook TLS file {tmp_path / 'missing.crt'} is not readable" in runner.output
