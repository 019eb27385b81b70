"""The sidecar runs in every opted-in pod: what it imports is memory every pod pays."""

import ast
import pathlib
import subprocess
import sys

PROBE = """
import sys
import clat_translator.runner
print("ndb" if "pyroute2.ndb" in sys.modules else "rtnl only")
from pyroute2 import NetNS, IPRoute  # other users of pyroute2 still get the whole package
from pyroute2 import config
print(NetNS.__name__, IPRoute.__name__, config.__name__)
"""


def test_the_sidecar_loads_pyroute2s_rtnl_only_and_leaves_the_package_whole() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["rtnl only", "NetNS IPRoute pyroute2.config"]


# ---- the dependency rules (ARCHITECTURE.md "Layout") ---------------------------------------

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRANSLATOR = ROOT / "translator" / "clat_translator"
OPERATOR = ROOT / "operator" / "clat_operator"


def imported_modules(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in one file; relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = package.split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if node.module is None or node.level:
                # `from . import rfc6052`: each name may be a module of the package
                found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, module))
    return found


def files_of(directory: pathlib.Path, package: str) -> list[tuple[pathlib.Path, str]]:
    out = []
    for path in sorted(directory.rglob("*.py")):
        relative = path.relative_to(directory).with_suffix("")
        parts = [package, *relative.parts]
        if parts[-1] == "__init__":
            parts.pop()  # a package's own __init__: relative imports start at the package
        else:
            parts.pop()  # a module: relative imports start at its package
        out.append((path, ".".join(parts)))
    return out


def test_the_core_imports_only_the_standard_library() -> None:
    stdlib = sys.stdlib_module_names | {"__future__"}
    bad = []
    for path, package in files_of(TRANSLATOR / "xlat", "clat_translator.xlat"):
        for line, module in imported_modules(path, package):
            top = module.split(".")[0]
            inside = module == "clat_translator.xlat" or module.startswith("clat_translator.xlat.")
            if top not in stdlib and not inside:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert bad == []


def test_the_translator_never_imports_the_operator() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path, package in files_of(TRANSLATOR, "clat_translator")
        for line, module in imported_modules(path, package)
        if module.split(".")[0] == "clat_operator"
    ]
    assert bad == []


def test_the_operator_imports_only_the_translators_pure_core() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path, package in files_of(OPERATOR, "clat_operator")
        for line, module in imported_modules(path, package)
        if module.split(".")[0] == "clat_translator"
        and not (module == "clat_translator.xlat" or module.startswith("clat_translator.xlat."))
    ]
    assert bad == []
    # And at run time: importing every operator module loads nothing else of the translator
    # (clat_translator's own __init__ included: it must stay empty of imports).
    modules = [f"clat_operator.{p.stem}" for p in sorted(OPERATOR.glob("*.py"))]
    probe = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print('\\n'.join(sorted(n for n in sys.modules if n.startswith('clat_translator'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "clat_translator.xlat.rfc6052" in loaded
    assert [
        m for m in loaded if m != "clat_translator" and not m.startswith("clat_translator.xlat")
    ] == []


def test_the_import_walk_sees_relative_and_absolute_imports(tmp_path: pathlib.Path) -> None:
    # The checks above are only as good as this walk: it must resolve what a module imports.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, dns.resolver\nfrom . import rfc6052\nfrom ..runner import Sidecar\n"
        "from clat_operator import kube\n"
    )
    assert imported_modules(sample, "clat_translator.xlat") == [
        (1, "os"),
        (1, "dns.resolver"),
        (2, "clat_translator.xlat.rfc6052"),
        (3, "clat_translator.runner.Sidecar"),
        (4, "clat_operator"),
    ]
