"""The house's rules, read from the code: which stage may import which, and no import circle.

Data flows one way (raw -> plan -> preprocessed -> checkpoints -> predictions -> metrics). The stages
(``planning``, ``preprocessing``, ``inference``, ``retinaunet.training``) meet through files and the core,
with two exceptions: inference prepares a new image with preprocessing, and the trainer predicts its
validation and test cases with inference. The core imports no stage. Every import counts, at the top of
a module or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# source folder -> the name it installs under (pyproject's package-dir)
PACKAGES = {
    "retinaunet": "retinaunet",
    "planning": "retinaunet.planning",
    "preprocessing": "retinaunet.preprocessing",
    "inference": "retinaunet.inference",
}
STAGES = ("planning", "preprocessing", "inference", "training")
ALLOWED = {("inference", "preprocessing"), ("training", "inference")}


def module_files() -> dict[str, Path]:
    """Every module of the distribution by its import name."""
    mods = {}
    for folder, base in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([base, *parts])] = path
    return mods


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(absolute name, line) of every import in ``source``; ``from a import b`` gives ``a.b``."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
    return out


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def stage_of(module: str) -> str | None:
    """The stage a module belongs to, or None for the core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "retinaunet" and parts[1] in STAGES else None


def import_graph(mods: dict[str, Path] | None = None,
                 sources: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """{module: {imported module of the distribution: line}}."""
    mods = module_files() if mods is None else mods
    names = set(mods)
    graph: dict[str, dict[str, int]] = {}
    for module, path in mods.items():
        text = sources[module] if sources is not None else path.read_text(encoding="utf-8")
        edges: dict[str, int] = {}
        for name, line in imported_names(text, module, path.name == "__init__.py"):
            target = resolve(name, names)
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def crossings(graph: dict[str, dict[str, int]], files: dict[str, Path]) -> list[str]:
    """Imports that break the stage rules, one line each."""
    bad = []
    for module, edges in graph.items():
        here = stage_of(module)
        for target, line in edges.items():
            there = stage_of(target)
            if there is None or there == here:
                continue
            if here is None:
                why = "the core imports no stage"
            elif (here, there) in ALLOWED:
                continue
            else:
                why = f"stage {here} may not import stage {there}"
            path = files[module].relative_to(ROOT) if files[module].is_absolute() else files[module]
            bad.append(f"{path}:{line}: {module} imports {target} ({why})")
    return bad


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_distribution_is_read():
    mods = module_files()
    for name in ("retinaunet.plans", "retinaunet.planning.planner", "retinaunet.inference.tiling",
                 "retinaunet.preprocessing.preprocess", "retinaunet.training.trainer",
                 "retinaunet.evaluation.evaluate"):
        assert name in mods
    graph = import_graph(mods)
    assert "retinaunet.inference.preprocessing" not in graph
    assert "retinaunet.plans" in graph["retinaunet.planning.planner"]
    # the allowed exceptions are really there, so the rule is read from real edges
    assert any(stage_of(t) == "inference" for t in graph["retinaunet.training.trainer"])


def test_no_stage_crossing():
    files = module_files()
    bad = crossings(import_graph(files), files)
    assert not bad, ("imports that cross the stage rules (move what two stages share to the core):\n"
                     + "\n".join(bad))


def test_no_import_circle():
    found = cycles(import_graph())
    assert not found, "modules that import each other (make them meet through one direction):\n" + "\n".join(
        " <-> ".join(group) for group in found)


FAKE = {
    "retinaunet.plans": "import numpy\n",
    "retinaunet.evaluation.cli": "def f():\n    from retinaunet.training.splits import num_folds\n",
    "retinaunet.planning.planner": "from retinaunet.inference.tiling import tile_starts\n",
    "retinaunet.inference.cli": "from retinaunet.preprocessing.preprocess import run\n",
    "retinaunet.training.trainer": "from retinaunet.inference import pipeline\nfrom retinaunet import plans\n",
    "retinaunet.training.splits": "from . import trainer\n",
    "retinaunet.inference.pipeline": "X = 1\n",
    "retinaunet.inference.tiling": "X = 1\n",
    "retinaunet.inference": "from .pipeline import X\n",
    "retinaunet.preprocessing.preprocess": "import retinaunet.plans\n",
    "retinaunet.evaluation.evaluate": "from retinaunet.evaluation.sizes import by_size\n",
    "retinaunet.evaluation.sizes": "def f():\n    from retinaunet.evaluation.evaluate import cases\n",
}


def _fake_files() -> dict[str, Path]:
    return {m: Path(m.replace(".", "/") + ("/__init__.py" if m == "retinaunet.inference" else ".py"))
            for m in FAKE}


def test_checker_finds_crossings_in_functions_and_relative_imports():
    files = _fake_files()
    graph = import_graph(files, FAKE)
    assert graph["retinaunet.training.splits"] == {"retinaunet.training.trainer": 1}
    assert graph["retinaunet.inference"] == {"retinaunet.inference.pipeline": 1}
    assert "retinaunet.plans" in graph["retinaunet.training.trainer"]
    bad = crossings(graph, files)
    assert len(bad) == 2, bad
    assert any("retinaunet.evaluation.cli imports retinaunet.training.splits (the core imports no stage)" in b
               for b in bad)
    assert any("stage planning may not import stage inference" in b for b in bad)


def test_checker_finds_circles():
    graph = import_graph(_fake_files(), FAKE)
    assert cycles(graph) == [["retinaunet.evaluation.evaluate", "retinaunet.evaluation.sizes"]]
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) == []
    assert sorted(map(tuple, cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"d": 1}}))) == [
        ("a", "b", "c")]


@pytest.mark.parametrize("module", ["retinaunet.splits", "retinaunet.tiles", "retinaunet.evaluation.metrics"])
def test_shared_rooms_are_core(module):
    """What two stages share lives in the core and imports no stage."""
    graph = import_graph()
    assert stage_of(module) is None
    assert all(stage_of(t) is None for t in graph[module])
