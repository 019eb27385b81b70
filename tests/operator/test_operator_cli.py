"""`clat-operator` as the image runs it: the console script, as a plain (non-root) process."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from clat_operator import contract

SCRIPT = pathlib.Path(sys.executable).parent / "clat-operator"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLAT_OPERATOR_")}
    environment.update(env)
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=environment, timeout=60
    )


def test_help_lists_the_commands_and_every_setting() -> None:
    top = run("--help")
    assert top.returncode == 0
    assert "run" in top.stdout and "check" in top.stdout
    sub = run("run", "--help")
    assert sub.returncode == 0
    for setting in contract.SETTINGS:
        assert setting.flag in sub.stdout and setting.env in sub.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"clat-operator {contract.VERSION}"


def test_check_renders_the_sidecar_an_opted_in_pod_gets() -> None:
    result = run(
        "check", "--plat-prefix", "64:ff9b::/96", CLAT_OPERATOR_SECURITY_MODE="capabilities"
    )

    assert result.returncode == 0, result.stderr
    assert "settings are valid" in result.stdout
    sidecar = json.loads(result.stdout[result.stdout.index("{") :])
    assert sidecar["name"] == "clat" and sidecar["command"] == ["clat-translator", "run"]
    assert sidecar["env"] == [{"name": "CLAT_PLAT_PREFIX", "value": "64:ff9b::/96"}]
    assert sidecar["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW", "BPF"]


def test_check_in_dev_mode_makes_a_certificate() -> None:
    result = run("check", "--webhook-host", "127.0.0.1", "--native-sidecar", "off")
    assert result.returncode == 0, result.stderr
    assert "a certificate for 127.0.0.1 can be generated" in result.stdout
    assert '"restartPolicy"' not in result.stdout  # classic container


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["check", "--mtu", "9"], {}, "CLAT_OPERATOR_MTU='9'"),
        (["run"], {"CLAT_OPERATOR_NATIVE_SIDECAR": "always"}, "use one of auto, on, off"),
        (["run", "--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["run"], {}, "webhook TLS file /etc/clat-operator/tls/tls.crt is not readable"),
    ],
)
def test_bad_settings_exit_2_with_one_clear_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
