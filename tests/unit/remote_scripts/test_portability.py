"""remote_scripts/ runs on test hosts: Python >= 3.9, standard library + pyserial only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SOURCE_DIR = Path(__file__).resolve().parents[3] / "remote_scripts"
FILES = sorted(SOURCE_DIR.glob("*.py"))
# The plugin only ever runs inside pytest, which the venv of a pytest-mode case has.
ALLOWED = {"serial", "remote_scripts"}
ALLOWED_IN = {"tms_pytest_plugin.py": {"pytest"}}


def test_there_is_code_to_check():
    assert {f.name for f in FILES} >= {"uart.py", "runner.py", "board_sim.py", "__init__.py"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_parses_as_python_3_9(path):
    tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
    for node in ast.walk(tree):
        assert type(node).__name__ not in ("Match", "TryStar", "TypeAlias"), node
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "zip":
            assert not any(k.arg == "strict" for k in node.keywords), "zip(strict=) is 3.10+"
        if isinstance(node, (ast.With, ast.AsyncWith)):
            # Parenthesised multi-item context managers are 3.10+ syntax.
            src_line = path.read_text().splitlines()[node.lineno - 1].rstrip()
            assert not (src_line.endswith("with (") or src_line.endswith("with(")), node.lineno


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_imports_only_stdlib_and_pyserial(path):
    tree = ast.parse(path.read_text())
    allowed = ALLOWED | ALLOWED_IN.get(path.name, set())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    outside = {n for n in names if n not in sys.stdlib_module_names and n not in allowed}
    assert not outside, outside
    assert "django" not in names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_annotations_are_not_evaluated_at_runtime(path):
    source = path.read_text()
    uses_pep604 = "| None" in source or ": int |" in source
    assert not uses_pep604 or "from __future__ import annotations" in source
