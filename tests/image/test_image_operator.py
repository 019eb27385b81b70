"""The image as the chart runs the operator: non-root uid, read-only root filesystem, no
capabilities, the chart's own settings; its self-check passes and shows the sidecar it injects."""

from __future__ import annotations

import json

import pytest

from tests.chart.chart import env_of, render
from tests.image.podman import IMAGE, OPERATOR_UID, VERSION, podman, require_image

pytestmark = pytest.mark.root

# How the chart's Deployment runs the operator container (securityContext, read-only root).
AS_THE_CHART_RUNS_IT = [
    "--rm",
    "--network",
    "none",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--tmpfs",
    "/tmp",
]


@pytest.fixture(scope="module")
def image() -> str:
    return require_image()


def test_default_user_is_the_non_root_operator(image: str) -> None:
    out = podman("run", *AS_THE_CHART_RUNS_IT, image, "id", "-u").stdout.strip()
    assert out == str(OPERATOR_UID)
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"].split(":")[0] == str(OPERATOR_UID)  # numeric: runAsNonRoot can verify
    assert config["Cmd"] == ["clat-operator", "run"]


def test_operator_help(image: str) -> None:
    proc = podman("run", *AS_THE_CHART_RUNS_IT, image, "clat-operator", "--help")
    assert "usage: clat-operator" in proc.stdout and "check" in proc.stdout
    version = podman("run", *AS_THE_CHART_RUNS_IT, image, "clat-operator", "--version").stdout
    assert version.strip() == f"clat-operator {VERSION}"


def test_operator_self_check_with_the_chart_settings(image: str) -> None:
    """The chart's rendered env, given to the operator in the image: `clat-operator check`."""
    env = env_of(render())
    env["CLAT_OPERATOR_NAMESPACE"] = "clat-system"  # the downward API's value
    flags = [f"--env={name}={value}" for name, value in env.items()]
    proc = podman(
        "run",
        *AS_THE_CHART_RUNS_IT,
        "--user",
        str(OPERATOR_UID),
        *flags,
        image,
        "clat-operator",
        "check",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "settings are valid" in proc.stdout
    sidecar = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert sidecar["name"] == "clat" and sidecar["command"][0] == "clat-translator"
    # Bad settings: a clear message and exit 2, no traceback.
    bad = podman(
        "run",
        *AS_THE_CHART_RUNS_IT,
        "--env=CLAT_OPERATOR_SECURITY_MODE=root",
        image,
        "clat-operator",
        "check",
        check=False,
    )
    assert bad.returncode == 2 and "CLAT_OPERATOR_SECURITY_MODE" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sidecar_command_and_tools(image: str) -> None:
    proc = podman("run", *AS_THE_CHART_RUNS_IT, image, "clat-translator", "--help")
    assert "run" in proc.stdout and "discover" in proc.stdout
    nft = podman("run", *AS_THE_CHART_RUNS_IT, image, "nft", "--version")
    assert nft.stdout.startswith("nftables")
    # netlink is pyroute2: no iproute2 in the image.
    assert (
        podman(
            "run", *AS_THE_CHART_RUNS_IT, image, "sh", "-c", "command -v ip", check=False
        ).returncode
        != 0
    )


def test_labels_and_size(image: str) -> None:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "clat-operator"
    assert len(labels["org.opencontainers.image.revision"]) in (40, 7) or (
        labels["org.opencontainers.image.revision"] == "unknown"
    )
    size_mb = info["Size"] / 1e6
    print(f"\n{IMAGE}: {size_mb:.0f} MB")
    # ~215 MB: the Python client kubernetes_asyncio alone is 47 MB (its generated API and models)
    assert size_mb < 240, f"the image is {size_mb:.0f} MB"
