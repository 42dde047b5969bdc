"""The package's shape: no import cycle inside ebmkit, no import of the built-in
plug-ins, and the flat layout's module paths still importing."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import ebmkit

ROOT = Path(ebmkit.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("ebmkit", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ebmkit modules it imports, from every import statement in
    the file (top level, inside functions and under TYPE_CHECKING alike)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from pkg import submodule` depends on the submodule, anything else on the module
                subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in files]
                targets = subs if len(subs) == len(node.names) else [module, *subs]
            graph[name] |= {t for t in targets if t.split(".")[0] in ("ebmkit", "ebmkit_plugins") and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt in graph and not state.get(nxt):
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if not state.get(start):
            found = visit(start)
            if found:
                return found
    return None


def test_the_import_graph_of_ebmkit_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "ebmkit.training.loop" in graph
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_ebmkit_never_imports_the_built_in_plugins():
    importers = sorted(m for m, deps in import_graph().items() if any(d.startswith("ebmkit_plugins") for d in deps))
    assert importers == []
    for path in ROOT.rglob("*.py"):  # nor by name, through importlib
        assert "import_module(\"ebmkit_plugins" not in path.read_text(), path


@pytest.mark.parametrize("old, new", [
    ("ebmkit.trainer", "ebmkit.training.loop"), ("ebmkit.divergence", "ebmkit.training.divergence"),
    ("ebmkit.diagnostics", "ebmkit.training.diagnostics"), ("ebmkit.landscape", "ebmkit.training.landscape"),
    ("ebmkit.schedule", "ebmkit.training.schedule"), ("ebmkit.generator", "ebmkit.generation.generator"),
    ("ebmkit.cooperative", "ebmkit.generation.cooperative"), ("ebmkit.inpainting", "ebmkit.generation.inpainting"),
    ("ebmkit.generator_cli", "ebmkit.cli.generate"),
])
def test_the_flat_layouts_module_paths_still_import_the_same_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert not (ROOT.parent / (old.replace(".", "/") + ".py")).exists()  # no file at the old path


def test_old_style_imports_of_public_names():
    from ebmkit.generator import ShortRunGenerator
    from ebmkit.trainer import Callback, Trainer

    assert ebmkit.Trainer is Trainer and Callback.__name__ == "Callback" and ShortRunGenerator.__name__ == "ShortRunGenerator"
