"""The import direction holds: app -> evals -> analytics -> store, ingest -> store; nothing imports app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("app", "evals", "analytics", "ingest", "store", "sample_data")
ALLOWED = {
    "app": {"app", "evals", "analytics", "ingest", "store", "sample_data"},
    "evals": {"evals", "analytics", "store"},
    "analytics": {"analytics", "store"},
    "ingest": {"ingest", "store"},
    "store": {"store"},
    "sample_data": {"sample_data"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imports(path)
        if name not in ALLOWED[package]
    }
    assert not bad, sorted(bad)


def test_layering_check_detects_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from app.cli import main\nimport store.lake\n")
    assert _imports(module) == {"app", "store"}
