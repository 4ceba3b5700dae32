"""The import graph of fpformat/ and explorer/, read from the sources: no cycle, arrows down.

Every import counts, at module top or inside a function: a function-local import hides a cycle
from Python's import machinery but not from the reader.  Imports of the package itself
(``from . import get_format`` inside fpformat) count as edges to ``fpformat/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fpformat", "explorer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that ``name`` (a dotted import target) lives in, if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


class Import(NamedTuple):
    module: str          #: the importing project module
    target: str          #: what it imports: a project module, or the dotted name of another
    line: int
    local: bool          #: inside a function


def imports() -> list[Import]:
    """Every import statement of the two packages, resolved to project modules where it names
    one (``from pkg import mod`` imports a module; ``from mod import name`` imports mod)."""
    modules = _modules()
    found: list[Import] = []
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        stack = [(ast.parse(path.read_text(), filename=str(path)), False)]
        while stack:
            node, local = stack.pop()
            for child in ast.iter_child_nodes(node):
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                stack.append((child, inner))
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package[:len(package) - (child.level - 1)]
                        source = ".".join(base + ([child.module] if child.module else []))
                    else:
                        source = child.module or ""
                    targets = [f"{source}.{alias.name}" for alias in child.names]
                else:
                    continue
                for t in targets:
                    found.append(Import(name, _owner(t, modules) or t, child.lineno, inner))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (module-level and function-local)."""
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for imp in imports():
        if imp.target in graph and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}           # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_function_local_imports():
    graph = import_graph()
    # fpformat.cuda imports numba.cuda inside a function: not a project module, no edge
    assert all(d.startswith(("fpformat", "explorer")) for deps in graph.values() for d in deps)
    assert "fpformat.core" in graph["fpformat.kernels"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    graph = {m: {d for d in deps if d.split(".")[0] == package}
             for m, deps in import_graph().items() if m.split(".")[0] == package}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_fpformat_never_imports_explorer():
    offenders = {m: sorted(d for d in deps if d.startswith("explorer"))
                 for m, deps in import_graph().items() if m.startswith("fpformat")}
    assert not {m: d for m, d in offenders.items() if d}


def test_fpformat_modules_never_import_the_package_itself():
    """Inside fpformat, names come from the module that defines them (``from .presets import
    get_format``), never from ``fpformat/__init__.py``, which imports them all."""
    importers = sorted(m for m, deps in import_graph().items()
                       if m.startswith("fpformat.") and "fpformat" in deps)
    assert importers == []


# The layers of DESIGN.md, bottom first: a module may import its own layer's modules and those
# of the layers below, never above.
FPFORMAT_LAYERS = (
    {"fpformat._cache", "fpformat.core", "fpformat.gemm_core", "fpformat.names",
     "fpformat.files", "fpformat.unit_core", "fpformat.packing"},
    {"fpformat.rounding", "fpformat.arrays", "fpformat.dispatch", "fpformat.scales"},
    {"fpformat.block_kernels", "fpformat.block_core", "fpformat.cuda", "fpformat.cuda_kernels",
     "fpformat.kernels"},
    {"fpformat.format", "fpformat.intformat"},
    {"fpformat.block"},
    {"fpformat.presets", "fpformat.prepared"},
    {"fpformat.units", "fpformat.gemm", "fpformat.cuda_gemm"},
    {"fpformat.torch", "fpformat.gemm_torch", "fpformat.testing", "fpformat.vectors",
     "fpformat.describe"},
    {"fpformat"},
)


def test_fpformat_layers_point_down():
    graph = import_graph()
    level = {m: i for i, layer in enumerate(FPFORMAT_LAYERS) for m in layer}
    fp = {m for m in graph if m.split(".")[0] == "fpformat"}
    assert fp <= set(level), f"modules missing from FPFORMAT_LAYERS: {sorted(fp - set(level))}"
    upward = [(m, d) for m in fp for d in graph[m] if d in level and level[d] > level[m]]
    assert upward == []


# explorer: cli (+ commands/) -> report -> the analyzer (every other explorer module) -> fpformat;
# train -> the analyzer's torch-free helpers -> fpformat.
EXPLORER_ALLOWED = {"cli": {"cli", "report", "train", "analyzer"}, "report": {"report", "analyzer"},
                    "train": {"train", "analyzer"}, "analyzer": {"analyzer"}}


def _explorer_layer(module: str) -> str:
    for prefix, layer in (("explorer.cli", "cli"), ("explorer.commands", "cli"),
                          ("explorer.report", "report"), ("explorer.train", "train")):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return "analyzer"


def test_explorer_layers_point_down():
    modules = _modules()
    wrong = [f"{imp.module}:{imp.line} imports {imp.target}" for imp in imports()
             if imp.module.startswith("explorer.") and imp.target.startswith("explorer.")
             and imp.target in modules
             and _explorer_layer(imp.target) not in EXPLORER_ALLOWED[_explorer_layer(imp.module)]]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


#: What a function may import lazily: heavy (torch, matplotlib, numba.cuda) or optional (ray,
#: cupy, ml_dtypes) dependencies, and explorer.train (it imports torch) from outside train/.
LAZY_OK = {"torch", "matplotlib", "ray", "cupy", "ml_dtypes", "numba"}


def _commented(lines: list[str], lineno: int) -> bool:
    """The import at ``lineno`` (1-based), or the run of import lines it belongs to, carries a
    comment: on one of its lines or on the line just above the run."""
    i = lineno - 1
    while i > 0 and lines[i - 1].strip().startswith(("import ", "from ")):
        i -= 1
    j = lineno - 1
    while j + 1 < len(lines) and lines[j + 1].strip().startswith(("import ", "from ")):
        j += 1
    above = lines[i - 1] if i > 0 else ""
    return "#" in above or any("#" in lines[k] for k in range(i, j + 1))


def test_function_local_imports_are_heavy_or_optional_and_say_so():
    modules = _modules()
    bad = []
    for imp in imports():
        if not imp.local:
            continue
        heavy = imp.target.split(".")[0] in LAZY_OK or (
            _explorer_layer(imp.target) == "train" != _explorer_layer(imp.module)
            and imp.target.startswith("explorer."))
        lines = modules[imp.module].read_text().splitlines()
        if not heavy or not _commented(lines, imp.line):
            bad.append(f"{imp.module}:{imp.line} imports {imp.target}")
    assert not bad, ("function-local imports that are not heavy or optional, or lack a comment "
                     "saying so:\n" + "\n".join(bad))
