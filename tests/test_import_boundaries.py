"""Who may import whom (ARCHITECTURE.md): ``models`` nothing of ours, ``edge`` and ``cloud`` only ``models``,
``simulators`` only ``models``. A gateway installs ``.[edge]`` and must not need the cloud's libraries; the cloud
must not need the command line (``twin``) or the test tree. Every import in every module counts, including the
ones inside functions and ``importlib.import_module("…")`` with a literal name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"models", "edge", "cloud", "simulators", "twin", "tests"}
MAY_IMPORT = {
    "models": {"models"},
    "edge": {"edge", "models"},
    "cloud": {"cloud", "models"},
    "simulators": {"simulators", "models"},
}


def imported_packages(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of ours in one module, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    module_parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if module_parts[-1] == "__init__":
        module_parts.pop()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                base = module_parts[: len(module_parts) - node.level + (path.name == "__init__.py")]
                names = [".".join([*base, *(node.module.split(".") if node.module else [])])]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in OURS]
    return found


def violations(package: str) -> list[str]:
    allowed = MAY_IMPORT[package]
    return [f"{path.relative_to(ROOT)}:{line}: imports {top}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for line, top in imported_packages(path, package) if top not in allowed]


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_package_imports_only_what_it_may(package):
    assert violations(package) == []


def test_the_check_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The walker itself: a top-level, a nested, a relative and a dynamic import of a forbidden package."""
    pkg = tmp_path / "cloud" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "cloud" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from ..x import y\n")
    (pkg / "m.py").write_text("import importlib\nimport twin.cli\n\ndef f():\n    from edge import agent\n"
                              "    importlib.import_module('tests.harness')\n    from . import n\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert violations("cloud") == ["cloud/sub/m.py:2: imports twin", "cloud/sub/m.py:5: imports edge",
                                   "cloud/sub/m.py:6: imports tests"]
    assert imported_packages(pkg / "__init__.py", "cloud") == [(1, "cloud")]
