"""Why the kernel path cannot run, in one line: missing privileges, a verifier rejection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from clat_translator.bpf import BpfProgram, KernelPathUnavailable

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def test_without_capabilities_the_reason_says_so() -> None:
    """Root with every capability dropped, as a container without CAP_BPF: EPERM, explained."""
    script = (
        "from clat_translator.bpf import BpfProgram, KernelPathUnavailable\n"
        "try:\n    BpfProgram()\nexcept KernelPathUnavailable as e:\n    print(e.reason)\n"
    )
    result = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "operation not permitted" in result.stdout
    assert "CAP_BPF" in result.stdout
    assert result.stdout.count("\n") == 1, "one line"


def test_it_loads_with_cap_bpf_and_without_perfmon() -> None:
    """The capabilities-mode sidecar has CAP_BPF and CAP_NET_ADMIN, not CAP_PERFMON or
    CAP_SYS_ADMIN: the verifier is stricter then (no variable stack offsets, no pointer selects,
    no uninitialised stack reads), and the program must still load."""
    script = "from clat_translator.bpf import BpfProgram\nBpfProgram().close()\nprint('loaded')\n"
    dropped = "-perfmon,-sys_admin"
    result = subprocess.run(
        ["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}", sys.executable]
        + ["-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "loaded\n"


def test_a_verifier_rejection_keeps_the_log(tmp_path: Path) -> None:
    source = tmp_path / "bad.bpf.c"
    source.write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'char LICENSE[] SEC("license") = "Apache-2.0";\n'
        'SEC("tc") int clat_egress(struct __sk_buff *skb)\n'
        "{ return *(int *)(long)skb->data; }  /* no bounds check */\n"
    )
    multiarch = subprocess.run(
        ["clang", "-print-multiarch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{multiarch}", "-c"]
        + [str(source), "-o", str(tmp_path / "bad.bpf.o")],
        check=True,
    )
    with pytest.raises(KernelPathUnavailable) as caught:
        BpfProgram(tmp_path / "bad.bpf.o")
    assert caught.value.reason.startswith("the kernel's verifier rejected the BPF program:")
    assert "\n" not in caught.value.reason
    assert "invalid access to packet" in caught.value.log
