"""The package's stages import only downward, never in a cycle, and cross-stage imports sit at the top.

Layers, lowest first (a module may import its own stage and any lower layer):

    core → compute → data | models → training → inference → launch → sweeps → report → demo → cli

``data`` and ``models`` share a layer and must not import each other. Every import is parsed,
top-level and inside functions; a cross-stage import inside a function is refused too (it hides a
dependency until the function runs). Lazy imports are for heavy third-party libraries only; a
stage's ``__init__`` re-exports its names lazily (``steelseg_hpc.core.lazy``) instead.

Run ``python tests/test_layering.py`` to print the graph summary.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "steelseg_hpc"

#: Stage -> layer. A new subpackage must be placed here before it can be imported from anywhere.
LAYERS = {"core": 0, "compute": 1, "data": 2, "models": 2, "training": 3, "inference": 4, "launch": 5,
          "sweeps": 6, "report": 7, "demo": 8, "cli": 9}
#: Top-level modules: the package root imports nothing; ``python -m steelseg_hpc`` may import all.
TOP_LEVEL = {"": -1, "__main__": 99}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def _modules(package_dir: Path) -> dict[str, Path]:
    name = package_dir.name
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[dotted] = path
    assert name in found, f"{package_dir} is not a package"
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest module prefix of a dotted name (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, root: str, modules: dict[str, Path]):
        self.module, self.is_package, self.root, self.modules = module, is_package, root, modules
        self.depth = 0
        self.edges: list[Edge] = []

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, dotted: str, node: ast.AST) -> None:
        if dotted != self.root and not dotted.startswith(self.root + "."):
            return
        target = _resolve(dotted, self.modules)
        if target is not None and target != self.module:
            self.edges.append(Edge(self.module, target, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            here = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join(here + ([base] if base else []))
        for alias in node.names:
            # ``from pkg import submodule`` depends on the submodule, not on the package's __init__
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else base, node)


def import_edges(package_dir: Path = PACKAGE_DIR) -> tuple[dict[str, Path], list[Edge]]:
    modules = _modules(package_dir)
    edges: list[Edge] = []
    for module, path in modules.items():
        collector = _Collector(module, path.name == "__init__.py", package_dir.name, modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges.extend(collector.edges)
    return modules, edges


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(stage: str) -> int | None:
    return LAYERS.get(stage, TOP_LEVEL.get(stage))


def find_cycle(modules: dict[str, Path], edges: list[Edge]) -> list[str] | None:
    """One import cycle among modules (as a closed path), or None."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for edge in edges:
        graph[edge.source].append(edge.target)
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if colour[nxt] == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == 0:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if colour[start] == 0:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def violations(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every layering problem of the package, one line each."""
    modules, edges = import_edges(package_dir)
    problems = []
    for module in sorted(modules):
        stage = stage_of(module)
        if layer_of(stage) is None:
            problems.append(f"{module}: stage '{stage}' has no layer (add it to LAYERS in {Path(__file__).name})")
    for edge in edges:
        source, target = stage_of(edge.source), stage_of(edge.target)
        if source == target:
            continue
        where = f"{edge.source} (line {edge.line}) imports {edge.target}"
        low, high = layer_of(target), layer_of(source)
        if low is None or high is None:
            continue
        if low > high:
            problems.append(f"{where}: points up a layer ({target} is above {source or 'the package root'})")
        elif low == high:
            problems.append(f"{where}: {source} and {target} share a layer and must not import each other")
        if edge.in_function:
            problems.append(f"{where} inside a function: cross-stage imports go at the top of the module")
    cycle = find_cycle(modules, edges)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


def summary(package_dir: Path = PACKAGE_DIR) -> str:
    modules, edges = import_edges(package_dir)
    cross = {(stage_of(e.source), stage_of(e.target)) for e in edges if stage_of(e.source) != stage_of(e.target)}
    lines = [f"{len(modules)} modules, {len(edges)} imports of the package's own modules "
             f"({sum(stage_of(e.source) != stage_of(e.target) for e in edges)} across stages, "
             f"{sum(e.in_function for e in edges)} inside functions)"]
    for stage in sorted(LAYERS, key=lambda s: (LAYERS[s], s)):
        used = sorted(t for s, t in cross if s == stage)
        lines.append(f"  {LAYERS[stage]} {stage:<9} imports {', '.join(used) or '-'}")
    problems = violations(package_dir)
    lines.append(f"violations: {len(problems)}")
    lines.extend(f"  {p}" for p in problems)
    return "\n".join(lines)


def test_package_imports_only_point_down_and_form_no_cycle():
    problems = violations()
    assert not problems, "\n".join(problems)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "steelseg_hpc" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "steelseg_hpc"


def test_the_checker_catches_upward_sibling_lazy_and_cyclic_imports(tmp_path):
    package = _write(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/errors.py": "from steelseg_hpc.training import api\n",  # up
        "data/__init__.py": "",
        "data/prep.py": "from steelseg_hpc.models import net\n",  # sibling
        "models/__init__.py": "",
        "models/net.py": "def f():\n    from steelseg_hpc.core import errors\n",  # lazy
        "training/__init__.py": "",
        "training/api.py": "from . import loop\n",
        "training/loop.py": "from steelseg_hpc.training.api import x\n",  # cycle
        "extras/__init__.py": "",  # no layer
    })
    found = "\n".join(violations(package))
    assert "core.errors (line 1) imports steelseg_hpc.training.api: points up a layer" in found
    assert "data and models share a layer" in found
    assert "inside a function" in found
    assert "import cycle: steelseg_hpc.training.api -> steelseg_hpc.training.loop -> steelseg_hpc.training.api" in found
    assert "stage 'extras' has no layer" in found


if __name__ == "__main__":
    print(summary())
    sys.exit(1 if violations() else 0)
