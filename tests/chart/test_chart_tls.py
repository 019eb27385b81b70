"""The webhook's TLS: the chart-generated CA and certificate are valid for the Service, the
caBundle is their CA, and `helm upgrade` keeps them (lookup of the existing Secret, exercised
with the real helm against a fake API server); or cert-manager issues them."""

from __future__ import annotations

import base64
import datetime
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.chart.chart import (
    HELM3,
    HELM4,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Manifest,
    helm,
    one,
    render,
    template_args,
)
from tests.chart.fake_apiserver import FakeApiServer

HELMS = [pytest.param(HELM3, id="helm3"), pytest.param(HELM4, id="helm4")]


def _tls(objects: list[Manifest]) -> tuple[dict[str, str], str]:
    secret = one(objects, "Secret")
    (webhook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    return secret["data"], webhook["clientConfig"]["caBundle"]


def _cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def _verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )


@pytest.mark.parametrize("tool", HELMS)
def test_generated_certificate_serves_the_webhook_service(tool: Path) -> None:
    objects = render(tool=tool)
    data, ca_bundle = _tls(objects)
    assert one(objects, "Secret")["type"] == "kubernetes.io/tls"
    assert ca_bundle == data["ca.crt"]
    ca, cert = _cert(data["ca.crt"]), _cert(data["tls.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    _verify_signed_by(cert, ca)
    assert cert.issuer == ca.subject
    service = one(objects, "Service")["metadata"]["name"]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The API server calls https://<service>.<namespace>.svc:<port><path>.
    assert f"{service}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3640)  # validityDays 3650
    # The key in the Secret belongs to the certificate.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_validity_days_value() -> None:
    data, _ = _tls(render({"webhook": {"tls": {"validityDays": 30}}}))
    cert = _cert(data["tls.crt"])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=31)


def _render_against(fake: FakeApiServer, tool: Path, values: dict[str, Any]) -> list[Manifest]:
    import yaml

    with tempfile.TemporaryDirectory(prefix="cimg-values-") as directory:
        kubeconfig = fake.kubeconfig(Path(directory))
        out = helm(
            *template_args(values, directory),
            "--dry-run=server",
            "--disable-openapi-validation",
            tool=tool,
            env={"KUBECONFIG": str(kubeconfig)},
        ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _store(fake: FakeApiServer, secret: Manifest) -> None:
    """The Secret as `helm install` leaves it in the cluster (with helm's ownership marks)."""
    annotations = {
        "meta.helm.sh/release-name": RELEASE,
        "meta.helm.sh/release-namespace": NAMESPACE,
    }
    metadata = {**secret["metadata"], "annotations": annotations}
    fake.secrets[(NAMESPACE, secret["metadata"]["name"])] = {**secret, "metadata": metadata}


@pytest.mark.parametrize("tool", HELMS)
def test_upgrade_keeps_the_generated_tls(tool: Path) -> None:
    with FakeApiServer().running() as fake:
        first = _render_against(fake, tool, {})  # install: nothing in the cluster yet
        secret = one(first, "Secret")
        assert any(r.endswith(f"/secrets/{secret['metadata']['name']}") for r in fake.requests)
        _store(fake, secret)
        # upgrade, also with other values: the same CA, certificate and key, the same caBundle.
        for values in ({}, {"replicaCount": 3, "webhook": {"failurePolicy": "Fail"}}):
            data, ca_bundle = _tls(_render_against(fake, tool, values))
            assert data == secret["data"]
            assert ca_bundle == secret["data"]["ca.crt"]
        # A damaged Secret (no key) is replaced by a new CA and certificate.
        broken = {**secret, "data": {k: v for k, v in secret["data"].items() if k != "tls.key"}}
        _store(fake, broken)
        data, ca_bundle = _tls(_render_against(fake, tool, {}))
        assert data["ca.crt"] != secret["data"]["ca.crt"] and set(data) == {
            "ca.crt",
            "tls.crt",
            "tls.key",
        }
        assert ca_bundle == data["ca.crt"]
        # Deleting the Secret renews them (docs/install.md: how to renew).
        fake.secrets.clear()
        data, _ = _tls(_render_against(fake, tool, {}))
        assert data["ca.crt"] != secret["data"]["ca.crt"]


def test_cert_manager_issues_the_certificate() -> None:
    objects = render(VALUE_SETS["cert-manager"])
    mwc = one(objects, "MutatingWebhookConfiguration")
    (webhook,) = mwc["webhooks"]
    assert "caBundle" not in webhook["clientConfig"]  # the cainjector fills it
    serving = next(c for c in objects if c["kind"] == "Certificate" and not c["spec"].get("isCA"))
    namespace, name = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert (namespace, name) == (NAMESPACE, serving["metadata"]["name"])
    volume = next(
        v
        for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "tls"
    )
    assert serving["spec"]["secretName"] == volume["secret"]["secretName"]
    service = one(objects, "Service")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    # The chart's CA chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving cert.
    ca_cert = next(c for c in objects if c["kind"] == "Certificate" and c["spec"].get("isCA"))
    issuers = {i["metadata"]["name"]: i["spec"] for i in objects if i["kind"] == "Issuer"}
    assert issuers[ca_cert["spec"]["issuerRef"]["name"]] == {"selfSigned": {}}
    assert issuers[serving["spec"]["issuerRef"]["name"]] == {
        "ca": {"secretName": ca_cert["spec"]["secretName"]}
    }
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always"
