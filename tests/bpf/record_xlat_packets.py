"""A pytest plugin: records every packet the tests it runs hand to `Translator.translate`.

`pytest tests/xlat -p tests.bpf.record_xlat_packets` with CLAT_RECORD_PACKETS=FILE appends each
input packet, hex, one a line: the RFC-section packets of tests/xlat, for the differential test.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from clat_translator.xlat import Translator


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("CLAT_RECORD_PACKETS")
    if not path:
        return
    out = open(path, "a")  # noqa: SIM115 - closed by pytest_unconfigure
    config.stash[_OUT] = out
    original = Translator.translate

    def recording(self: Translator, packet: Any) -> Any:
        if isinstance(packet, bytes | bytearray | memoryview):
            out.write(bytes(packet).hex() + "\n")
        return original(self, packet)

    Translator.translate = recording  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    out = config.stash.get(_OUT, None)
    if out is not None:
        out.close()


_OUT = pytest.StashKey[Any]()
