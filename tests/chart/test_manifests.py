"""manifests/ is the chart rendered (kept in sync by `make manifests`), the example is a valid
opted-in workload, and the chart's versions follow the package's."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from clat_operator import contract

from tests.chart.chart import CHART, HELM3, REPO, require

MANIFESTS = REPO / "manifests"


def test_manifests_equal_a_fresh_render(tmp_path: Path) -> None:
    require(HELM3)
    fresh = tmp_path / "clat-operator.yaml"
    proc = subprocess.run(
        ["make", "--no-print-directory", "-s", "manifests", f"MANIFESTS_OUT={fresh}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    committed = (MANIFESTS / "clat-operator.yaml").read_text()
    assert committed == fresh.read_text(), (
        "manifests/clat-operator.yaml is stale: run `make manifests`"
    )


def _docs(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("version", ["1.29.0", "1.34.0", kubernetes_validate.latest_version()])
def test_manifests_are_valid(version: str) -> None:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in _docs(path):
            if doc["apiVersion"].split("/")[0] in ("cert-manager.io",):
                continue  # cert-manager's kinds: checked in test_chart_render
            kubernetes_validate.validate(doc, version, strict=True)


def test_rendered_file_is_self_contained() -> None:
    docs = _docs(MANIFESTS / "clat-operator.yaml")
    kinds = [d["kind"] for d in docs]
    # The namespace first, then the CRD, before anything that lives in them.
    assert kinds[:2] == ["Namespace", "CustomResourceDefinition"]
    namespace = docs[0]["metadata"]["name"]
    assert all(d["metadata"].get("namespace", namespace) == namespace for d in docs)
    assert "Secret" not in kinds, (
        "no private key in a file everyone applies: cert-manager issues it"
    )
    assert "Certificate" in kinds


def test_example_dials_an_ipv4_literal_with_clat() -> None:
    docs = _docs(MANIFESTS / "example-ipv4-literal.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][contract.ANNOTATION_ENABLED] == "true"
    assert template["metadata"]["labels"][contract.LABEL_ENABLED] == "true"
    (app,) = template["spec"]["containers"]
    script = " ".join(app.get("command", []) + app.get("args", []))
    literals = re.findall(r"https?://([0-9.]+)[/:]", script)
    assert literals and all(ipaddress.ip_address(a).version == 4 for a in literals)
    assert contract.SIDECAR_CONTAINER_NAME not in [
        c["name"] for c in template["spec"]["containers"]
    ]


def test_chart_version_follows_the_package() -> None:
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == package, "Chart.yaml version != pyproject.toml version"
    assert chart["appVersion"] == package, "Chart.yaml appVersion != pyproject.toml version"
    assert (
        f"clat-operator {package}:"
        in (MANIFESTS / "clat-operator.yaml").read_text().splitlines()[0]
    )


def _value_paths(schema: dict, prefix: str = "") -> list[str]:  # type: ignore[type-arg]
    """Paths of the chart's values down to the typed leaves (k8s-shaped objects are leaves)."""
    paths = []
    for key, node in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        nested = node.get("additionalProperties") is False and "requests" not in node["properties"]
        if nested and key != "issuerRef" and key != "selector":
            paths += _value_paths(node, f"{path}.")
        elif key != "global":
            paths.append(path)
    return paths


def test_install_docs_list_every_value() -> None:
    import json

    docs = (REPO / "docs" / "install.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = [p for p in _value_paths(schema) if f"`{p}`" not in docs]
    assert not missing, f"docs/install.md does not describe {missing}"
