"""The bounded fuzz runs of `make test`: each target ~25 s of coverage-guided fuzzing (atheris)
from the committed corpus. `make fuzz` runs them longer (FUZZ_SECONDS)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("CLAT_FUZZ_SECONDS", "25"))


@pytest.mark.parametrize("target", ["translate", "offload"])
def test_fuzz_finds_nothing(target: str, tmp_path: Path) -> None:
    # New inputs go to tmp_path (libFuzzer writes into the first corpus directory); the
    # committed corpus is read only. A finding leaves its input in tmp_path as crash-*.
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_xlat.py"),
            target,
            f"-max_total_time={SECONDS}",
            "-timeout=10",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path),
            str(HERE / "corpus" / target),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert run.returncode == 0 and not crashes, (crashes, run.stderr[-4000:])
    assert "Done " in run.stderr, run.stderr[-2000:]
