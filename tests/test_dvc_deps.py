"""dvc.yaml cannot go stale: each stage's code deps cover everything its notebook (or module) can
import inside `ust`, and its params list every key of the sections it reads, except the few that
cannot change a result."""

import re

import pytest
import yaml
from dvc_closure import ROOT, closure, covered, minimal_deps, notebook_code, stage_sources

from ust.report.readme_sync import BUDGET_KEYS

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PROFILES = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "profiles").glob("*.yaml")}
#: keys that select where or how verbosely a run happens, never what it computes
UNTRACKED = {
    "teacher": {"device", "log_every", "checkpoint_every"},
    "oneclass_train": {"device"},
    "mvtec_train": {"device"},
    "loco_train": {"device"},
}
#: the params sections each stage family reads (key by key)
SECTIONS = {
    "teacher": ("teacher",),
    "oneclass": ("oneclass_train",),
    "mds": ("mds", "oneclass_train"),
    "mvtec_data": ("mvtec_data",),
    "mvtec": ("mvtec_train",),
    "mvtec_multiscale": ("mvtec_train", "mvtec_baselines"),
    "loco_data": ("loco_data",),
    "loco": ("loco_train", "gcad"),
}


def _body(name: str) -> dict:
    stage = STAGES[name]
    return stage.get("do", stage)


def _code_sources(name: str) -> list[str]:
    return stage_sources(_body(name))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_cover_the_import_closure(name):
    deps = [d for d in _body(name)["deps"] if d.startswith("ust")]
    files = closure(_code_sources(name))
    assert files, f"stage {name}: no module of ust found in its code"
    missing = sorted(str(f.relative_to(ROOT)) for f in files if not covered(f, deps))
    assert not missing, f"stage {name} imports {missing} but does not list them in its deps"
    # and nothing more: editing a module re-runs only the stages that can import it
    assert deps == minimal_deps(files), (
        f"stage {name}: code deps differ from its import closure; run `python tests/dvc_closure.py`"
    )


def test_editing_a_baseline_reruns_only_the_stages_that_import_it():
    ssim_ae = ROOT / "ust/baselines/ssim_ae.py"
    importers = {n for n in STAGES if covered(ssim_ae, _body(n)["deps"])}
    assert "mvtec" not in importers and "teacher" not in importers
    assert "mvtec_multiscale" in importers


def test_closure_follows_lazy_imports():
    # ust.stages.mvtec imports the experiment modules inside functions only
    files = {f.relative_to(ROOT).as_posix() for f in closure(["from ust.stages import mvtec"])}
    assert {"ust/experiments/mvtec_single.py", "ust/eval/metrics.py"} <= files


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_params_tracked_key_by_key(name, profile):
    tracked = set(_body(name)["params"])
    for section in SECTIONS[name]:
        keys = set(PROFILES[profile][section]) - UNTRACKED.get(section, set())
        missing = sorted(f"{section}.{k}" for k in keys if f"{section}.{k}" not in tracked)
        assert not missing, f"stage {name} does not track {missing} (profile {profile})"
        extra = sorted(
            f"{section}.{k}" for k in UNTRACKED.get(section, ()) if f"{section}.{k}" in tracked
        )
        assert not extra, f"stage {name} tracks {extra}, which cannot change its results"
        assert section not in tracked, f"stage {name} tracks the whole section {section}"


def test_report_tracks_every_budget_key():
    tracked = set(_body("report")["params"])
    keys = {f"{s}.{k}" for table in BUDGET_KEYS.values() for s, k in table}
    assert keys <= tracked, sorted(keys - tracked)


def test_scales_are_not_literals():
    text = (ROOT / "dvc.yaml").read_text()
    assert not re.search(r"p(17|33|65)\b", text.split("\nmetrics:")[0]), "a scale is spelt out"
    nb = "".join(notebook_code(ROOT / "notebooks" / "31_mvtec_multiscale.ipynb"))
    assert not re.search(r"\b(17|33|65)\b", nb)


def test_preview_lists_every_stage_on_a_fresh_copy(tmp_path):
    """`make preview` (`dvc repro --dry --force`) prints every stage's command in a copy of the
    repository that has no outputs yet, and computes nothing."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp_path / rel)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = Path(sys.executable).parent / "dvc"
    run = subprocess.run(
        [str(dvc), "repro", "--dry", "--force"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    shown = set(re.findall(r"Running stage '([^'@]+)", run.stdout))
    assert shown == set(STAGES)
    assert not (tmp_path / "results").exists() and not (tmp_path / "build").exists()
