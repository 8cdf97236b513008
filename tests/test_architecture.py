"""The house is laid out in layers that point down (docs/architecture.md): every import of `ust`,
at module level or inside a function, goes to the same package or to a lower layer; the report
reads files and never imports the method, the training loops or the stages; there is no cycle."""

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ust"
#: the layer of every package of `ust` (top-level modules: `ust` itself); higher imports lower
LAYERS = {
    "ust": 0,
    "data": 1,
    "eval": 1,
    "method": 2,
    "train": 3,
    "baselines": 3,
    "experiments": 4,
    "report": 5,
    "detector": 6,
    "stages": 6,
    "cli": 7,
}
#: what the report must never import: it draws from the files the stages wrote
NOT_FOR_THE_REPORT = ("method", "train", "baselines", "detector", "stages", "cli")


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (PACKAGE / f"{parts[1]}.py").is_file():
        return "ust"
    return parts[1]


def _imports() -> dict[str, set[str]]:
    """{module: modules of `ust` it imports}, every import statement anywhere in the file."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found[_module(path)] |= {n for n in names if n == "ust" or n.startswith("ust.")}
    return found


IMPORTS = _imports()


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))
    assert set(LAYERS) - {"ust"} <= packages


def test_no_module_imports_upward():
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in IMPORTS.items()
        for t in targets
        if LAYERS[_package(t)] > LAYERS[_package(m)]
    )
    assert not upward, upward


def test_the_report_reads_files_only():
    found = sorted(
        f"{m} -> {t}"
        for m, targets in IMPORTS.items()
        if _package(m) == "report"
        for t in targets
        if _package(t) in NOT_FOR_THE_REPORT
    )
    assert not found, found


def _resolve(name: str) -> str | None:
    while name:
        if (ROOT / Path(*name.split("."))).with_suffix(".py").is_file() or (
            ROOT / Path(*name.split(".")) / "__init__.py"
        ).is_file():
            return name
        name = name.rpartition(".")[0]
    return None


def test_no_import_cycle():
    graph = {m: {r for t in ts if (r := _resolve(t)) and r != m} for m, ts in IMPORTS.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module not in state and visit(module, []):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("ust.report.tables_mvtec", "ust.method.students", False),
        ("ust.detector.fit", "ust.cli.mvtec", False),
        ("ust.experiments.protocol", "ust.data.dataset", True),
        ("ust.stages.mvtec", "ust.report.views.mvtec", True),
    ],
)
def test_the_layer_rule_itself(source, target, allowed):
    ok = LAYERS[_package(target)] <= LAYERS[_package(source)] and not (
        _package(source) == "report" and _package(target) in NOT_FOR_THE_REPORT
    )
    assert ok == allowed


def test_architecture_doc_names_every_package_and_module():
    doc = (ROOT / "docs/architecture.md").read_text()
    missing = [
        _module(p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.name != "__init__.py" and not re.search(rf"\b{re.escape(p.stem)}\.py\b", doc)
    ]
    assert not missing, f"docs/architecture.md says nothing about {missing}"
    for recipe in ("## Add a method", "## Add a dataset"):
        assert recipe in doc
