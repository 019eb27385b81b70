"""The Dockerfile and its inputs, without building: hadolint, the pinned dependencies, and
what the build context lets in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.image.podman import REPO

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_is_clean() -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_dependency() -> None:
    """constraints.txt (`make constraints`) must cover pyproject's dependencies, and the pins
    must satisfy them: otherwise the image build resolves something else or fails."""
    import tomllib

    pins = _constraints()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    stale = []
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            stale.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            stale.append(f"{requirement.name}=={pins[name]} does not satisfy {spec}")
    assert not stale, "run `make constraints`: " + "; ".join(stale)
    assert "setuptools" in pins  # the package's own build backend is pinned too


def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=debian:trixie-slim$", text, re.M)
    assert re.findall(r"^FROM \$\{BASE_IMAGE\}", text, re.M), "every stage on the Debian base"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert "-r /src/constraints.txt" in text
    for label in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: nothing enters the build context unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / "Dockerfile").read_text(), re.M))
    sources = {src for group in copied for src in group.split()}
    assert sources <= allowed, f"COPY of paths the context leaves out: {sources - allowed}"
