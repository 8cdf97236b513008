"""Repository hygiene: environment.yml ↔ pyproject, profiles ↔ params.yaml, notebooks ↔ dvc.yaml,
function sizes, the public API, and references that stay inside the repository."""

import ast
import re
import tomllib
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from ust.experiments.params import load_params, section, use_profile
from ust.paths import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    assert set(pip) - {"-e ."} == wanted
    assert all("==" in req for req in wanted), "pin every dependency exactly"


def test_params_yaml_is_a_committed_profile():
    params = load_params()
    profile = params["profile"]
    assert (ROOT / "profiles" / f"{profile}.yaml").read_text() == (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_profiles_declare_their_name_and_same_keys(path):
    data = yaml.safe_load(path.read_text())
    default = yaml.safe_load((ROOT / "profiles" / "default.yaml").read_text())
    assert data["profile"] == path.stem
    assert set(data) == set(default)
    for key, value in default.items():
        if isinstance(value, dict) and key not in (
            "teachers",
            "mvtec_category",
            "oneclass_dataset",
        ):
            assert set(data[key]) == set(value), f"{path.name}: section {key} has other keys"
    # Block style only: `dvc exp run -S` rewrites flow style, and `${}` inside flow lists breaks.
    assert not re.search(r":\s*[\[{]", path.read_text())


def test_use_profile_switches_and_rejects_unknown(tmp_path):
    (tmp_path / "profiles").mkdir()
    for name in ("smoke", "default"):
        (tmp_path / "profiles" / f"{name}.yaml").write_text(
            (ROOT / "profiles" / f"{name}.yaml").read_text()
        )
    use_profile("smoke", root=tmp_path)
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["profile"] == "smoke"
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*\['default', 'smoke'\]"):
        use_profile("fast", root=tmp_path)


def test_section_reads_ust_params_override(monkeypatch):
    monkeypatch.setenv("UST_PARAMS", "profiles/smoke.yaml")
    assert (
        section("teacher")["iterations"]
        == yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())["teacher"]["iterations"]
    )
    with pytest.raises(KeyError, match="section 'nope' missing"):
        section("nope")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_committed_thin_and_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert nb.cells[0].cell_type == "markdown"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for cell in code:
        assert not re.search(r"^\s*(def|class) ", cell.source, re.M), "move functions into ust/"
        assert "os.chdir" not in cell.source


def _papermill_calls():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        cmd = body["cmd"] if isinstance(body["cmd"], str) else " ".join(body["cmd"])
        if "papermill" not in cmd:
            continue
        notebook = re.search(r"build/notebooks/(\S+\.ipynb)", cmd).group(1)
        yield name, notebook, cmd


def test_dvc_papermill_parameters_exist_in_notebooks():
    """papermill only warns on an unknown -p name: check them all here."""
    calls = list(_papermill_calls())
    assert calls, "dvc.yaml runs no notebook"
    for name, notebook, cmd in calls:
        declared = set(papermill.inspect_notebook(str(ROOT / "notebooks" / notebook)))
        passed = set(re.findall(r"-p (\w+) ", cmd))
        assert passed, f"{name} passes no parameter"
        assert passed <= declared, f"{name}: {sorted(passed - declared)} not in {notebook}"
        assert "--kernel python3 --language python" in cmd


def test_stage_dependencies_exist():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    bodies = [stage.get("do", stage) for stage in stages.values()]
    outs = {next(iter(o)) if isinstance(o, dict) else o for b in bodies for o in b.get("outs", [])}
    for body in bodies:
        for dep in body.get("deps", []):
            if "${" in dep or dep.startswith(("build/", "results/")) or dep in outs:
                continue
            assert (ROOT / dep).exists(), f"missing dependency {dep}"
    assert Path(ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_readme_results_blocks_equal_pipeline_outputs():
    """Every results block of the README is a verbatim copy of a file the report stage wrote."""
    from ust.report.readme_sync import MARKER, sync_readme

    text = (ROOT / "README.md").read_text()
    embedded = [m.group("path") for m in MARKER.finditer(text)]
    # the results come from the offline_full profile; the default profile's stage times beside them
    assert {
        f"figures/offline_full/{name}.md" for name in ("teachers", "oneclass", "mvtec", "timings")
    } | {"figures/default/timings.md"} <= set(embedded)
    assert all((ROOT / path.partition("#")[0]).exists() for path in embedded)
    assert sync_readme(check=True) == []


PACKAGE_FILES = sorted((ROOT / "ust").rglob("*.py"))
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 14


def _functions(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_too_long_or_takes_too_many_parameters():
    long, wide = [], []
    for path in PACKAGE_FILES:
        rel = path.relative_to(ROOT)
        for fn in _functions(path):
            lines = fn.end_lineno - fn.lineno + 1
            n_args = len(fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs)
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{rel}:{fn.lineno} {fn.name} ({lines} lines)")
            if n_args > MAX_PARAMETERS:
                wide.append(f"{rel}:{fn.lineno} {fn.name} ({n_args} parameters: pass a config)")
    assert not long, "split into named steps: " + "; ".join(long)
    assert not wide, "; ".join(wide)


def test_public_api_resolves():
    import ust

    for name in ust.__all__:
        assert getattr(ust, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ust.nope  # noqa: B018


def _repository_text_files():
    for pattern in ("README.md", "docs/*.md", "ust/**/*.py", "notebooks/*.ipynb", "tests/*.py"):
        yield from sorted(ROOT.glob(pattern))
    yield from (ROOT / name for name in ("dvc.yaml", "params.yaml", "Makefile", "pyproject.toml"))
    yield from sorted((ROOT / "profiles").glob("*.yaml"))


# spelt in pieces so that this file does not match itself
OUTSIDE = re.compile(
    "|".join(["SP" + "EC", "STY" + "LE" + r"\.md", r"\.\./sha" + "red", "regi" + r"ster A\d"])
)


def test_nothing_refers_to_files_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()[:80]}"
        for path in _repository_text_files()
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "\n".join(hits[:30])


DECISIONS = ROOT / "docs" / "decisions.md"


def test_every_cited_decision_anchor_exists():
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', DECISIONS.read_text()))
    cited = {
        (path.relative_to(ROOT).as_posix(), anchor)
        for path in _repository_text_files()
        for anchor in re.findall(r"decisions\.md#([A-Za-z0-9_-]+)", path.read_text())
    }
    assert len(cited) >= 20, "docstrings should cite the decisions they follow"
    missing = sorted(f"{path}: #{a}" for path, a in cited if a not in anchors)
    assert not missing, missing


def test_decision_anchors_are_unique():
    anchors = re.findall(r'<a id="([a-z0-9-]+)"></a>', DECISIONS.read_text())
    assert len(anchors) == len(set(anchors)) >= 30
