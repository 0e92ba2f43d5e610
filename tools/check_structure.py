#!/usr/bin/env python3
"""The structure of onnxprune and passes/: import cycles, imports that point up the flow, functions
with too many parameters and modules too long to hold in mind.

Every import counts, including those inside functions (only `if TYPE_CHECKING:` blocks, which never
run, are left out). A module may import from its own stage and
from the stages below it; the stages, lowest first, are LAYERS. Prints what breaks the rule and
exits 1 if anything does (tests/test_layout.py runs it).

    python tools/check_structure.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"onnxprune": ROOT / "onnxprune", "onnxprune.passes": ROOT / "passes"}

# lowest first; a module may import only from its own layer or lower ones
LAYERS = [
    ("onnxprune.errors", "onnxprune.progress"),
    ("onnxprune.load",),
    ("onnxprune.graph",),
    ("onnxprune.couple",),
    ("onnxprune.autodiff",),
    ("onnxprune.score",),
    ("onnxprune.apply",),
    ("onnxprune.check",),
    ("onnxprune.recover",),
    ("onnxprune.select",),
    ("onnxprune.recover.schedules",),
    ("onnxprune.report",),
    ("onnxprune.options", "onnxprune.stages", "onnxprune.api", "onnxprune"),
    ("onnxprune.passes",),
    ("onnxprune.search",),
    ("onnxprune.cli", "onnxprune.__main__"),
]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The onnxprune modules `name` imports (a package's __init__ counts as the package)."""
    is_package = path.name == "__init__.py"
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for b in block.body
                   for n in ast.walk(b)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # `if TYPE_CHECKING:` imports never run
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"


MAX_PARAMETERS = 12
MAX_LINES = 400


def long_signatures(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if len(names) > MAX_PARAMETERS:
                out.append(f"{node.name} ({len(names)} parameters)")
    return out


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    return best


def problems() -> list[str]:
    found = modules()
    graph = nx.DiGraph()
    for name, path in found.items():
        graph.add_node(name)
        for target in imports(name, path, set(found)):
            graph.add_edge(name, target)
    out = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            out.append("cycle: " + " <-> ".join(sorted(component)))
    for a, b in graph.edges:
        if b == "onnxprune" or a.startswith(b + "."):
            continue  # the package itself, or a module importing its own package's __init__
        if layer_of(b) > layer_of(a):
            out.append(f"upward import: {a} imports {b}")
    for name, path in found.items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            out.append(f"long module: {name} has {lines} lines (at most {MAX_LINES})")
        out += [f"long signature: {name}.{s} (at most {MAX_PARAMETERS})" for s in long_signatures(path)]
    return sorted(out)


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"{len(found)} problem(s) in the structure")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
