"""Every notebook executed through papermill on the smoke profile, and the whole DVC pipeline run
end to end on it in a temporary copy of the repository (notebook tests in the style of recommenders:
small parameters through papermill, then assertions on the values the notebooks wrote).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import torch
import yaml

from ust.method.dense import dense_net
from ust.method.teacher import load_teacher
from ust.paths import ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def smoke_env(monkeypatch):
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles" / "smoke.yaml"))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")


def run_notebook(name, out_nb, **params):
    return papermill.execute_notebook(
        str(ROOT / "notebooks" / name),
        str(out_nb),
        parameters=params,
        kernel_name="python3",
        language="python",
        progress_bar=False,
    )


def _outputs(nb):
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _printed(nb) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb) if o["output_type"] == "stream")


def assert_shows_results(nb, name: str) -> None:
    """An executed chapter notebook shows at least one figure (an ``image/png`` output), the paper
    comparison (a DataFrame whose HTML has a ``paper`` column) and no error."""
    outputs = _outputs(nb)
    assert not [o for o in outputs if o["output_type"] == "error"], name
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} shows no figure"
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert re.search(r"<th>paper[^<]*</th>", html), f"{name} shows no paper comparison table"


def _substituted(nb, teacher: str) -> None:
    """Without the pipeline's teacher, the notebook says it trained a smoke-size substitute."""
    if not (ROOT / "results" / "teachers" / teacher / "teacher.pt").exists():
        assert "smoke-size substitute" in _printed(nb)


def test_teacher_notebook_smoke(tmp_path, smoke_env):
    out = tmp_path / "teacher"
    run_notebook(
        "10_teacher_pretraining.ipynb",
        tmp_path / "10.ipynb",
        patch_size=17,
        losses="mc",
        out_dir=str(out),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and metrics["losses"] == "mc"
    assert (
        metrics["configuration"]["lambda_k"] == 0.0 and metrics["configuration"]["lambda_m"] == 1.0
    )
    assert 0.0 <= metrics["triplet_accuracy_random_init"] <= 1.0
    assert 0.0 <= metrics["triplet_accuracy_trained"] <= 1.0
    assert (out / "loss_curves.png").stat().st_size > 0
    assert (out / "nearest_neighbours.png").stat().st_size > 0
    net = load_teacher(out / "teacher.pt")
    assert dense_net(net)(torch.rand(1, 3, 9, 10)).shape == (1, 128, 9, 10)
    nb = nbformat.read(tmp_path / "10.ipynb", as_version=4)
    assert_shows_results(nb, "10")
    assert f"{metrics['triplet_accuracy_trained']:.3f} after 3 iterations" in _printed(nb)


def test_oneclass_notebook_smoke_without_the_pipeline(tmp_path, smoke_env):
    out = tmp_path / "oneclass"
    nb = run_notebook(
        "20_one_class.ipynb",
        tmp_path / "20.ipynb",
        dataset="mnist",
        normal_class=0,
        out_dir=str(out),
    )
    assert_shows_results(nb, "20")
    _substituted(nb, "p33/mc")
    aucs = json.loads((out / "metrics.json").read_text())["auc"]
    with np.load(out / "scores.npz") as scores:
        assert set(scores.files) == {"labels", "classes", *aucs}
    students = json.loads((out / "students-mc.json").read_text())["auc"]
    assert f"ROC-AUC {students:.3f}" in _printed(nb)


def test_mvtec_notebook_smoke_without_the_pipeline(tmp_path, smoke_env):
    out = tmp_path / "p33"
    nb = run_notebook(
        "30_mvtec_single_scale.ipynb",
        tmp_path / "30.ipynb",
        category="brick",
        patch_size=33,
        out_dir=str(out),
    )
    assert_shows_results(nb, "30")
    _substituted(nb, "p33/mc")
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"AU-PRO {metrics['au_pro']:.3f}" in _printed(nb)
    assert "not in the paper" in _printed(nb)


def test_multiscale_notebook_builds_missing_single_scale_runs(tmp_path, smoke_env):
    out = tmp_path / "multiscale"
    nb = run_notebook(
        "31_mvtec_multiscale.ipynb",
        tmp_path / "31.ipynb",
        category="grass",
        single_scale_dir=str(tmp_path / "none"),
        out_dir=str(out),
    )
    assert_shows_results(nb, "31")
    assert "no finished single-scale run for p = 17" in _printed(nb)
    for p in yaml.safe_load((ROOT / "profiles/smoke.yaml").read_text())["mvtec"]["patch_sizes"]:
        assert (out / "substitutes" / "mvtec" / "grass" / f"p{p}" / "metrics.json").exists()
    assert all((out / name).stat().st_size > 0 for name in ("figure1.png", "pro_curves.png"))
    fused = json.loads((out / "metrics.json").read_text())
    assert f"multiscale AU-PRO {fused['au_pro']:.3f}" in _printed(nb)


def test_mds_notebook_smoke_without_the_pipeline(tmp_path, smoke_env):
    out = tmp_path / "mds"
    nb = run_notebook("40_mds_visualization.ipynb", tmp_path / "40.ipynb", out_dir=str(out))
    assert_shows_results(nb, "40")
    _substituted(nb, "p33/mc")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "figure4_mds.png").stat().st_size > 0
    assert f"ROC-AUC {metrics['auc']:.3f}" in _printed(nb)


def test_overview_notebook_on_a_copy_of_figures(tmp_path, smoke_env):
    shutil.copytree(ROOT / "figures", tmp_path / "figures")
    nb = run_notebook(
        "00_overview.ipynb", tmp_path / "00.ipynb", figures_dir=str(tmp_path / "figures")
    )
    outputs = _outputs(nb)
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("<th>paper" in str(o.get("data", {}).get("text/html", "")) for o in outputs)
    profile = json.loads((ROOT / "figures/summary.json").read_text())["profile"]
    assert f"Profile `{profile}`:" in _printed(nb)
    empty = run_notebook("00_overview.ipynb", tmp_path / "00e.ipynb", figures_dir=str(tmp_path))
    assert "make reproduce" in _printed(empty)


def _git_files():
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [f for f in out if not f.startswith(("results/", "build/")) and f != "dvc.lock"]


def _smoke_metrics(repo: Path) -> dict:
    """The map metrics of every MVTec-layout run and baseline and the one-class AUCs of a smoke
    pipeline run (the content of ``tests/data/smoke_metrics.json``)."""
    keys = ("au_pro", "pixel_auroc", "image_auroc")
    runs = sorted(repo.glob("results/mvtec/*/p*/metrics.json"))
    runs += sorted(repo.glob("results/mvtec_multiscale/*/metrics.json"))
    out = {}
    for f in runs:
        out[f.parent.relative_to(repo).as_posix()] = {k: json.loads(f.read_text())[k] for k in keys}
    for f in sorted(repo.glob("results/mvtec_multiscale/*/baselines.json")):
        for name, m in json.loads(f.read_text()).items():
            out[f"{f.parent.relative_to(repo).as_posix()}/{name}"] = {k: m[k] for k in keys}
    for f in sorted(repo.glob("results/mvtec_multiscale/*/ssim_ae.json")):
        m = json.loads(f.read_text())
        out[f"{f.parent.relative_to(repo).as_posix()}/ssim_ae"] = {k: m[k] for k in keys}
    auc = json.loads((repo / "results/oneclass/mnist-0/metrics.json").read_text())["auc"]
    out["results/oneclass/mnist-0"] = auc
    return out


def test_dvc_pipeline_end_to_end_on_smoke_profile(tmp_path):
    repo = tmp_path / "repo"
    for rel in _git_files():
        src = ROOT / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "UST_ROOT": str(repo),
        "GIT_AUTHOR_NAME": "ci",
        "GIT_AUTHOR_EMAIL": "ci@ust",
        "GIT_COMMITTER_NAME": "ci",
        "GIT_COMMITTER_EMAIL": "ci@ust",
    }
    env.pop("UST_PARAMS", None)

    def sh(*cmd):
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)

    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=ci@ust", "-c", "user.name=ci", "commit", "-qm", "copy"],
    ):
        assert sh(*cmd).returncode == 0
    assert sh(sys.executable, "-m", "ust.experiments.params", "use", "smoke").returncode == 0
    run = sh(str(BIN / "dvc"), "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    smoke = yaml.safe_load((repo / "params.yaml").read_text())
    for p in smoke["mvtec"]["patch_sizes"]:
        metrics = json.loads((repo / f"results/teachers/p{p}/mc/metrics.json").read_text())
        assert metrics["patch_size"] == p
        assert (repo / f"results/notebooks/10_teacher-p{p}-mc.ipynb").exists()
    oneclass = json.loads((repo / "results/oneclass/mnist-0/metrics.json").read_text())
    assert set(oneclass["auc"]) == {
        "students:mc",
        "1nn_pixels",
        "1nn",
        "kmeans",
        "ocsvm",
        "l2ae",
        "vae",
        "igd",
    }
    assert all(0.0 <= v <= 1.0 for v in oneclass["auc"].values())
    for cat in ("brick", "grass"):
        fused = json.loads((repo / f"results/mvtec_multiscale/{cat}/metrics.json").read_text())
        assert 0.0 <= fused["au_pro"] <= 1.0
        assert (repo / f"results/mvtec_multiscale/{cat}/baselines.json").exists()
    # No number moves across refactors: the committed metrics of the smoke pipeline are reproduced.
    committed = json.loads((ROOT / "tests/data/smoke_metrics.json").read_text())["metrics"]
    measured = _smoke_metrics(repo)
    assert sorted(measured) == sorted(committed)
    for run, values in committed.items():
        assert measured[run] == pytest.approx(values, abs=1e-12), run
    summary = json.loads((repo / "figures/summary.json").read_text())
    assert summary["profile"] == "smoke"
    assert summary["oneclass_mean_auc"]["mnist"]["students:mc"] == oneclass["auc"]["students:mc"]
    for name in (
        "teachers.md",
        "oneclass.md",
        "mvtec.md",
        "timings.md",
        "figure1_mvtec.png",
        "figure4_mds.png",
        "figure5_receptive_fields.png",
    ):
        assert (repo / "figures" / name).stat().st_size > 0
    timings = (repo / "figures/timings.md").read_text()
    assert "Stage wall-clock times of profile `smoke`" in timings
    assert "| teacher | 3 |" in timings and "| mds | 1 |" in timings
    assert "(profile `smoke`): `teacher.iterations`" in (repo / "figures/oneclass.md").read_text()
    assert (repo / "build/preflight.ok").read_text().startswith("preflight passed")
    _check_executed_notebooks(sh, repo)
    status = sh(str(BIN / "dvc"), "status")
    assert status.returncode == 0
    assert "up to date" in status.stdout, status.stdout

    # Editing one category's parameter invalidates only that category's stages.
    params = (repo / "params.yaml").read_text()
    old, new = "  brick:\n    seed: 0\n  grass:", "  brick:\n    seed: 1\n  grass:"
    assert params.count(old) == 1
    (repo / "params.yaml").write_text(params.replace(old, new))
    changed = json.loads(sh(str(BIN / "dvc"), "status", "--json").stdout)
    assert set(changed) == {
        "mvtec@brick-17",
        "mvtec@brick-33",
        "mvtec@brick-65",
        "mvtec_multiscale@brick",
    }
    (repo / "params.yaml").write_text(params)
    _check_code_and_param_deps(sh, repo)

    # Sweeps: `dvc exp run -S` on a tracked parameter runs only what it invalidates, and variants
    # can be queued for `dvc queue start -j N` (README "Sweeps").
    assert sh("git", "add", "-A").returncode == 0
    assert sh("git", "commit", "-qm", "smoke results").returncode == 0
    exp = sh(str(BIN / "dvc"), "exp", "run", "-S", "mvtec_category.grass.seed=1")
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    assert "Running stage 'mvtec@grass-17'" in exp.stdout
    assert "Running stage 'mvtec@brick-17'" not in exp.stdout
    assert "Running stage 'teacher" not in exp.stdout
    queued = sh(str(BIN / "dvc"), "exp", "run", "-S", "teacher.margin=0.5", "--queue")
    assert queued.returncode == 0, queued.stderr
    status = sh(str(BIN / "dvc"), "queue", "status")
    assert "Queued" in status.stdout, status.stdout
    sh(str(BIN / "dvc"), "queue", "remove", "--all")


def _check_executed_notebooks(sh, repo: Path) -> None:
    """Under DVC every stage notebook shows its figures and paper comparison, nothing was
    substituted, and the executed notebooks render to one HTML page each."""
    executed = sorted((repo / "results/notebooks").glob("*.ipynb"))
    assert {p.name.split("_")[0].split("-")[0] for p in executed} == {
        "10",
        "20",
        "30",
        "31",
        "32",
        "40",
    }
    for path in executed:
        assert_shows_results(nbformat.read(path, as_version=4), path.name)
    assert not list((repo / "results").rglob("substitutes"))
    assert (repo / "results/oneclass/mnist-0/scores.npz").exists()
    html = sh(sys.executable, "-m", "ust.stages.html", "results/notebooks", "results/html")
    assert html.returncode == 0, html.stderr
    assert sorted(p.stem for p in (repo / "results/html").glob("*.html")) == [
        p.stem for p in executed
    ]


# One module per stage family: editing it must make `dvc status` report the stages whose code deps
# contain it (stale results must never look up to date), and nothing else.
_COMPUTING = (
    "teacher@",
    "oneclass@",
    "mds",
    "mvtec@",
    "mvtec_multiscale@",
    "loco@",
    "loco_multiscale@",
    "own_images",
)
EDITED_MODULE_STAGES = {
    # the report reads files only: editing a training loop does not re-run it
    "ust/train/teacher.py": _COMPUTING,
    "ust/experiments/oneclass.py": ("oneclass@", "mds", "report"),
    "ust/experiments/mvtec_single.py": (
        "mvtec@",
        "mvtec_multiscale@",
        "loco@",
        "loco_multiscale@",
        "own_images",
    ),
    "ust/report/tables_mvtec.py": ("mvtec_multiscale@", "report"),
    "ust/stages/preflight.py": ("preflight",),
    "ust/baselines/ssim_ae.py": ("mvtec_multiscale@",),
}


def _changed(sh) -> set[str]:
    out = sh(str(BIN / "dvc"), "status", "--json")
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


def _family(stage: str) -> str:
    return stage.split("@")[0] + "@" if "@" in stage else stage


def _check_code_and_param_deps(sh, repo: Path) -> None:
    assert _changed(sh) == set()
    for module, families in EDITED_MODULE_STAGES.items():
        path = repo / module
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        changed = _changed(sh)
        path.write_text(original)
        assert {_family(s) for s in changed} == set(families), (module, sorted(changed))
    # Settings that cannot change a result are not tracked: no computing stage re-runs.
    params = (repo / "params.yaml").read_text()
    for old, new in (("  device: cpu\n", "  device: auto\n"), ("  log_every: ", "  log_every: 1")):
        assert old in params
        (repo / "params.yaml").write_text(params.replace(old, new))
        assert _changed(sh) <= {"preflight"}, f"changing {old.strip()} re-runs stages"
    (repo / "params.yaml").write_text(params)
