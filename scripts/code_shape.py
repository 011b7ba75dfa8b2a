"""Measure the shape of the codebase: lines per module, longest functions, imports hidden
inside functions and import cycles between modules.

    python scripts/code_shape.py            # a readable summary
    python scripts/code_shape.py --json     # the same figures, machine-readable

Used for issue 23's before/after figures; the import rules themselves are enforced by
tests/test_architecture.py, which shares `module_imports` with this script.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("safegen", "safegen_train")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def iter_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def module_imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules `path` imports; with `top_level_only`, only imports run at import time
    (module body, not inside functions and not under `if TYPE_CHECKING:`)."""
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = {name for name, _ in iter_modules()}
    found: set[str] = set()

    def add(name: str) -> None:
        # `from pkg import sub` names a module when pkg.sub is one; else the import is of pkg.
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not top_level_only:
                    visit(node.body)
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, path.name == "__init__.py", node)
                for alias in node.names:
                    add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
            # Compound statements (class, if, try, with, for) hold more statements.
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit(children)

    visit(tree.body)
    return found


def function_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []

    def visit(nodes, prefix: str) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + node.name, node.end_lineno - node.lineno + 1))
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")

    visit(tree.body, "")
    return out


def inner_imports(path: Path) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    count += 1
    return count


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return components


def measure() -> dict:
    modules = dict(iter_modules())
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()}
    functions = []
    for name, path in modules.items():
        functions += [(f"{name}:{fn}", n) for fn, n in function_lengths(path)]
    functions.sort(key=lambda item: -item[1])
    # Cycles count every import a module makes, wherever it sits: a function-level import
    # hides a cycle from Python's loader, not from a reader.
    graph = {name: module_imports(path, top_level_only=False) for name, path in modules.items()}
    cycles = import_cycles(graph)
    readme = ROOT / "README.md"
    return {
        "modules": len(modules),
        "lines_total": sum(lines.values()),
        "lines_by_package": {p: sum(n for m, n in lines.items() if m.split(".")[0] == p) for p in PACKAGES},
        "largest_modules": sorted(lines.items(), key=lambda item: -item[1])[:10],
        "longest_functions": functions[:15],
        "functions_over_80_lines": sum(1 for _, n in functions if n > 80),
        "imports_inside_functions": {p: sum(inner_imports(path) for m, path in modules.items()
                                             if m.split(".")[0] == p) for p in PACKAGES},
        "import_cycles": cycles,
        "readme_lines": len(readme.read_text(encoding="utf-8").splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"modules {figures['modules']}, lines {figures['lines_total']} {figures['lines_by_package']}")
    print("largest modules:")
    for name, n in figures["largest_modules"]:
        print(f"  {n:5d}  {name}")
    print(f"longest functions ({figures['functions_over_80_lines']} over 80 lines):")
    for name, n in figures["longest_functions"]:
        print(f"  {n:5d}  {name}")
    print(f"imports inside functions: {figures['imports_inside_functions']}")
    print(f"import cycles: {len(figures['import_cycles'])}")
    for cycle in figures["import_cycles"]:
        print("  " + " <-> ".join(cycle))
    print(f"README.md: {figures['readme_lines']} lines")


if __name__ == "__main__":
    main()
