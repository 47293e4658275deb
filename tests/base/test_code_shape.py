"""The house rules a reader relies on: small functions (a run is a sequence of named steps, not one long body)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 80


def long_functions() -> list[str]:
    out = []
    for path in sorted([*ROOT.glob("trainer_core/**/*.py"), *ROOT.glob("tui/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_no_function_is_longer_than_80_lines():
    assert long_functions() == []
