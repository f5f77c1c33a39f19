"""Size limits that keep the code readable, checked so they stay true (issue 11).

A function a reader cannot see at once, or a module holding several jobs, is where the
duplicated and drifting pieces came from; the limits are the ones the issue set.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tracegrad"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700
MAX_TRAINER_LINES = 600


def _sources() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_no_module_is_longer_than_700_lines() -> None:
    big = [
        f"{p.relative_to(PKG)} ({n} lines)"
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert big == []


def test_the_training_loop_fits_in_600_lines() -> None:
    assert len((PKG / "train" / "trainer.py").read_text().splitlines()) < MAX_TRAINER_LINES
