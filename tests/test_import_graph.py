"""pmd's modules import one another without a cycle, and pmd.envs never imports pmd.config.

A cycle (once: config -> envs -> config, through twelve modules) makes import order matter and pushes imports into
functions to dodge it. The graph is read from the source, every `import` statement, those inside functions too (a
lazy import still closes a cycle); only `if TYPE_CHECKING:` blocks are left out, as they never run.
Run this file as a script to print the cycles: `python tests/test_import_graph.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the pmd package."""
    out = {}
    for path in sorted((src / "pmd").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def imports_of(module: str, path: Path, modules: dict[str, Path], type_checking: bool = False) -> set[str]:
    """The pmd modules `module` imports (the deepest module each import names: `from . import judge` is
    pmd.envs.code.judge, `from .envs import task_params` is pmd.envs)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while stack:
        node = stack.pop()
        if _type_checking_only(node) and not type_checking:
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
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
                    cycles.append(sorted(component))
    return cycles


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules, type_checking) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_pmd_has_no_import_cycle():
    assert import_cycles(import_graph()) == []


def test_envs_never_import_config():
    """Not even for type annotations: the env section they read is theirs (envs/env_config.py), and the field
    machinery is config_fields.py's."""
    graph = import_graph(type_checking=True)
    assert "pmd.envs" in graph["pmd.config"]  # what makes the other direction a cycle
    offenders = sorted(m for m, deps in graph.items() if m.startswith("pmd.envs") and "pmd.config" in deps)
    assert offenders == []


if __name__ == "__main__":
    for with_types in (False, True):
        found = import_cycles(import_graph(type_checking=with_types))
        print(f"{'with' if with_types else 'without'} TYPE_CHECKING imports: {found or 'no cycle'}")
