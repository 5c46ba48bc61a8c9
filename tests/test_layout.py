"""The package's layering: lower layers never import higher ones (module-level or inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmdiet"

# layer of each top-level part of llmdiet; a module may import only parts of its own layer or below
LAYERS = {
    "constants": 0,
    "compat": 0,
    "languages": 0,
    "config": 0,
    "data": 0,
    "modeling": 0,
    "provenance": 0,
    "shapes": 0,
    "artifacts": 0,
    "demo": 0,
    "locking": 0,
    "fingerprint": 0,
    "model_card": 0,
    "quantize": 1,
    "prune": 1,
    "engines": 2,
    "evaluation": 3,
    "distill": 4,
    "study": 5,
    "api": 6,
    "cli": 6,
    "__main__": 6,  # python -m llmdiet: the cli
    "__init__": 6,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("llmdiet")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmdiet") and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, f"<relative {node.module}>"))
    return found


def test_every_part_has_a_layer_and_every_layer_a_part():
    parts = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    assert parts == set(LAYERS), (
        f"parts without a layer: {sorted(parts - set(LAYERS))}; stale layers: {sorted(set(LAYERS) - parts)}"
    )


def test_no_upward_or_relative_imports():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        layer = LAYERS[_part(module)]
        for line, imported in _imports(path):
            if imported.startswith("<relative"):
                problems.append(f"{rel}.py:{line}: relative import {imported}")
                continue
            target = LAYERS.get(_part(imported))
            if target is None:
                problems.append(f"{rel}.py:{line}: imports unknown part {imported}")
            elif target > layer:
                problems.append(f"{rel}.py:{line}: {module} (layer {layer}) imports {imported} (layer {target})")
    assert not problems, "\n".join(problems)


def _module_graph() -> dict[str, set[str]]:
    """llmdiet module -> the llmdiet modules it imports (at module level or inside functions; ``from pkg import
    name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                plain = [a for a in node.names if f"{node.module}.{a.name}" not in modules]
                edges |= subs | ({node.module} if plain else set())
        edges.discard(module)
        graph[module] = {e for e in edges if not module.startswith(e + ".")}  # a package's own __init__ runs first
    return graph


def test_no_import_cycles_between_modules():
    """No circle of imports between llmdiet's modules, imports inside functions included (before: study.jobs and
    study.speed imported each other). A package __init__ that re-exports its submodules is not a circle."""
    graph = _module_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


MAX_FUNCTION_LINES = 60  # CONTRIBUTING "Habits"; ruff adds C901 (complexity <= 12) and PLR0915 (<= 40 statements)


def test_no_function_in_the_library_is_longer_than_60_lines():
    """Lines from ``def`` to the last line, the docstring excluded (before issue 29: 18 functions over 60 lines,
    the longest 137)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "make_demo_data.py":  # the demo corpus's sentence tables, run once by hand
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    lines -= first.end_lineno - first.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)
