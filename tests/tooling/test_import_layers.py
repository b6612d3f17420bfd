"""The gateway's layering (docs/architecture.md, "Layers") holds, counting TYPE_CHECKING imports too."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("gateway", exclude_type_checking_imports=False, cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_import_linter_contracts_are_kept():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_import_cycle_among_gateway_modules():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_sees_a_type_checking_cycle():
    graph = _graph()
    # model is pure data: a type-only import of the pipeline (as OperationEntry.pipelines once was) closes a cycle
    graph.add_import(importer="gateway.model", imported="gateway.pipeline", line_number=1, line_contents="x")
    assert any({"gateway.model", "gateway.pipeline"} <= set(cycle) for cycle in _cycles(graph))


def test_every_gateway_module_has_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    named = {name.strip(" ()") for layer in layers for name in layer.replace("|", ":").split(":")}
    graph = _graph()
    unplaced = [
        module
        for module in sorted(graph.modules)
        if module != "gateway"
        and not any(module == n or module.startswith(n + ".") for n in named)
        and module not in ("gateway.policy",)  # the package re-exports the framework and the built-in policies
    ]
    assert unplaced == []
