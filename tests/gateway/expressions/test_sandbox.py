"""Static checks of the package source: no dynamic evaluation, no attribute access by computed name."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import gateway.expressions

PACKAGE = Path(gateway.expressions.__file__).parent
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "setattr", "delattr", "vars", "globals", "locals"}


@cache
def _calls() -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found.extend((path.name, node) for node in ast.walk(tree) if isinstance(node, ast.Call))
    return found


def test_no_dynamic_evaluation() -> None:
    for filename, call in _calls():
        if isinstance(call.func, ast.Name):
            assert call.func.id not in FORBIDDEN_CALLS, f"{filename}:{call.lineno} calls {call.func.id}"


def test_getattr_only_with_constant_names() -> None:
    for filename, call in _calls():
        if isinstance(call.func, ast.Name) and call.func.id == "getattr":
            name = call.args[1]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), f"{filename}:{call.lineno}"
