"""docs/operator.md keeps up with the code: every setting (env, flag, default), every Event."""

from __future__ import annotations

import pathlib
import re

from clat_operator import contract

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "operator.md"


def rows() -> dict[str, list[str]]:
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `CLAT_OPERATOR_"):
            table[cells[0].strip("`")] = cells
    return table


def test_settings_table_matches_the_contract() -> None:
    table = rows()
    assert set(table) == {s.env for s in contract.SETTINGS}
    for setting in contract.SETTINGS:
        env, flag, default = table[setting.env][:3]
        assert flag == f"`{setting.flag}`"
        if setting.env != "CLAT_OPERATOR_SIDECAR_IMAGE":  # documented with <version>
            assert default == f"`{setting.default}`", setting.env


def test_every_event_reason_is_documented() -> None:
    source = (pathlib.Path(contract.__file__).parent / "reporting.py").read_text()
    reasons = set(re.findall(r'"(Clat[A-Z][A-Za-z]+)"', source))
    assert reasons == {"ClatInjected", "ClatMissing", "ClatRestart", "ClatNotReady"}
    doc = DOC.read_text()
    for reason in reasons:
        assert f"| `{reason}` |" in doc
