"""The project's image under podman, configured as `make image` builds it (runc, ulimits)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = os.environ.get("CLAT_IMAGE", f"localhost/clat-operator:{VERSION}")
CONTAINERS_CONF = REPO / ".build" / "containers.conf"
OPERATOR_UID = 65532


def podman(
    *args: str, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
    )
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def podman_popen(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["podman", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        )


def require_image() -> str:
    """The image `make image` built; a skip outside CI when it is not there (an error in CI)."""
    problem = None
    if os.geteuid() != 0:
        problem = "podman tests run as root (CI does)"
    elif shutil.which("podman") is None or not CONTAINERS_CONF.is_file():
        problem = "podman or .build/containers.conf is missing: run `make image`"
    elif podman("image", "exists", IMAGE, check=False).returncode != 0:
        problem = f"{IMAGE} is not built: run `make image`"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return IMAGE
