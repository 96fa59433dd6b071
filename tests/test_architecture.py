"""The package's shape: no import cycles, and every error class a WildidError."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import wildid
from wildid.errors import WildidError

SRC = Path(wildid.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every wildid module a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_error_class_shares_the_base() -> None:
    for info in pkgutil.walk_packages(wildid.__path__, "wildid."):
        if info.name.endswith(("ddp", "cli")):
            continue
        module = importlib.import_module(info.name)
        for name, value in inspect.getmembers(module, inspect.isclass):
            if name.endswith("Error") and value.__module__ == info.name:
                assert issubclass(value, WildidError), f"{info.name}.{name}"


def test_benchmarks_import_the_package_without_editing_sys_path() -> None:
    for path in (SRC.parents[1] / "benchmarks").glob("*.py"):
        assert "sys.path" not in path.read_text(), path
