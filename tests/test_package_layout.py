"""The package's shape: small modules, each with `__all__`, and no import cycles between them.

Read from the source with `ast`, nothing imported: a cycle is a chain of module-level ``from .x import``
statements that leads back to where it started (imports under ``if TYPE_CHECKING:`` are for annotations and
never run). Imports inside functions run late and are left out, as Python leaves them out at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vision_studies"
MODULES = {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}
MAX_LINES = 400


def _module_level_imports(path: Path) -> set[str]:
    """The sibling modules `path` imports when it is imported."""
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found & set(MODULES)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, seen = [], set()

    def walk(chain: list[str]) -> None:
        for nxt in sorted(graph[chain[-1]]):
            if nxt in chain:
                cycle = chain[chain.index(nxt):] + [nxt]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            else:
                walk(chain + [nxt])

    for module in sorted(graph):
        walk([module])
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    graph = {name: _module_level_imports(path) for name, path in MODULES.items()}
    assert graph["export"] >= {"predict", "card"}  # the finder sees the imports it should
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", [n for n in MODULES if n not in ("__init__", "__main__")])
def test_modules_are_small_and_say_what_they_export(name):
    text = MODULES[name].read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, f"{name}.py has {len(text.splitlines())} lines; split it by job"
    assert "__all__" in text, f"{name}.py has no __all__"
