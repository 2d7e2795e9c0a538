"""The package layering, read from the source: who may import whom, no import cycles, benchmarks kept outside.

Every import counts, at module level or inside a function: a function-level import that closes a cycle is
still a cycle, only deferred to the first call.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("models", "rag", "finetune", "ragtune")
# Each package and the project packages it must never import.
FORBIDDEN = {
    "models": {"rag", "finetune", "ragtune", "bench"},
    "rag": {"finetune", "ragtune", "bench"},
    "finetune": {"rag", "ragtune", "bench"},
    "ragtune": {"bench"},
}
LLAMA_CPP_HOME = REPO / "models" / "engines" / "llamacpp.py"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every dotted name `path` imports, relative imports resolved, `from a import b` giving a and a.b."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_module(name: str) -> str | None:
    """The project module a dotted import name lands in (its longest known prefix), if any."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in modules().items():
        targets = {project_module(n) for n in imported_names(path)}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_project_modules() -> None:
    assert cycles(import_graph()) == []


def test_each_package_imports_only_the_layers_below_it() -> None:
    wrong = []
    for name, path in modules().items():
        top = name.split(".")[0]
        for imported in imported_names(path):
            if imported.split(".")[0] in FORBIDDEN[top]:
                wrong.append(f"{path.relative_to(REPO)} imports {imported}")
    assert not wrong, wrong


def test_no_benchmark_module_inside_the_installed_packages() -> None:
    benches = [n for n in modules() if n.rpartition(".")[2].startswith("bench")]
    assert not benches, f"benchmarks belong in bench/: {benches}"


def test_llama_cpp_is_imported_only_by_its_engine() -> None:
    sources = [p for folder in (*PACKAGES, "bench", "scripts") for p in (REPO / folder).rglob("*.py")]
    importers = [
        str(p.relative_to(REPO)) for p in sources if any(n.split(".")[0] == "llama_cpp" for n in imported_names(p))
    ]
    assert importers == [str(LLAMA_CPP_HOME.relative_to(REPO))]
