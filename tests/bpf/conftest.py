"""Fixtures of the kernel data path's tests: the compiled program, loaded once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from clat_translator.bpf import BpfProgram
from clat_translator.bpf.loader import OBJECT_PATH


@pytest.fixture(scope="session")
def program() -> Iterator[BpfProgram]:
    if os.geteuid() != 0:
        pytest.fail("the BPF tests need root (BPF_PROG_TEST_RUN, CAP_BPF)")
    assert OBJECT_PATH.is_file(), f"{OBJECT_PATH} missing: `make bpf` builds it"
    with BpfProgram() as loaded:
        yield loaded
