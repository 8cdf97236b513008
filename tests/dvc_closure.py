"""The modules of `ust` a stage's code can import: a static closure over every import statement
(module level and inside functions), so that lazily imported modules count too."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """``ust.a.b`` → ``ust/a/b.py`` or ``ust/a/b/__init__.py`` (None when it is not a module)."""
    base = ROOT.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(tree: ast.AST, current: str) -> set[str]:
    found: set[str] = set()
    package = current if module_file(current).name == "__init__.py" else current.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m == "ust" or m.startswith("ust.")}


def closure(sources: list[str]) -> set[Path]:
    """Every file of `ust` reachable from the import statements of ``sources`` (Python code)."""
    todo = set().union(*(_imports(ast.parse(s), "ust") for s in sources))
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        # importing ust.a.b runs ust/__init__.py and ust/a/__init__.py first
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub in seen:
                continue
            path = module_file(sub)
            if path is None:
                continue
            seen[sub] = path
            todo |= _imports(ast.parse(path.read_text()), sub) - set(seen)
    return set(seen.values())


def notebook_code(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def minimal_deps(files: set[Path]) -> list[str]:
    """The code deps a stage importing ``files`` should list: a whole package folder when every
    module file below it is imported, else the files one by one (sorted)."""
    rel = {f.relative_to(ROOT).as_posix() for f in files}
    deps: set[str] = set()
    for folder in sorted({Path(r).parent.as_posix() for r in rel if r.count("/") >= 2}):
        below = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")}
        if below <= rel:
            deps.add(folder)
    return sorted(deps | {r for r in rel if not any(r.startswith(d + "/") for d in deps)})


#: code a stage runs in subprocesses (the README example runs the `ust` command line)
SUBPROCESS_CODE = {"ust.stages.own_images": ["import ust.cli"]}


def stage_sources(body: dict) -> list[str]:
    """The Python code a stage runs: its notebook's code cells, or ``import <module>`` of
    ``python -m <module>`` (plus what that module runs in subprocesses)."""
    notebooks = re.findall(r"build/notebooks/(\S+\.ipynb)", body["cmd"])
    if notebooks:
        return notebook_code(ROOT / "notebooks" / notebooks[0])
    module = re.search(r"python -m (\S+)", body["cmd"]).group(1)
    return ["import " + module, *SUBPROCESS_CODE.get(module, [])]


def write_deps() -> None:
    """Rewrite the ``ust/...`` code deps of every stage of dvc.yaml to :func:`minimal_deps` of its
    import closure (comments and the other deps stay): ``python tests/dvc_closure.py``."""
    text = (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    lines, out, current, i = text.splitlines(keepends=True), [], None, 0
    while i < len(lines):
        name = re.match(r"^  ([a-z_]+):", lines[i])
        if name and name.group(1) in stages:
            current = name.group(1)
        dep = re.match(r"^(\s+)- ust/", lines[i])
        if dep and current:
            j = i
            while j < len(lines) and re.match(r"^\s+- ust/", lines[j]):
                j += 1
            body = stages[current].get("do", stages[current])
            out += [f"{dep.group(1)}- {d}\n" for d in minimal_deps(closure(stage_sources(body)))]
            i = j
            continue
        out.append(lines[i])
        i += 1
    (ROOT / "dvc.yaml").write_text("".join(out))


if __name__ == "__main__":
    write_deps()
