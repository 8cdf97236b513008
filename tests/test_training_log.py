"""dvclive logging of the training loops (ust.train.live): files, steps, values, resume, no side effects."""

import csv
import json
import logging
import shutil
import subprocess

import pytest
import torch

import ust.train.teacher as teacher_module
from ust.baselines.igd import IGDConfig, train_igd
from ust.method.networks import patch_net
from ust.method.students import StudentTeacher, fit_target_statistics, make_students
from ust.method.teacher import TeacherConfig
from ust.train.distributed import DistInfo
from ust.train.live import log_step, open_live
from ust.train.students import StudentTrainingConfig, train_students
from ust.train.teacher import pretrain

# Self-supervised losses (no ResNet needed), tiny network and batches: fast on one CPU thread.
TEACHER = dict(
    patch_size=17, d=16, device="cpu", batch_size=4, lambda_k=0, lambda_m=1, lambda_c=1,
    eval_triplets=8,
)  # fmt: skip


@pytest.fixture(autouse=True)
def outside_any_repository(tmp_path, monkeypatch, caplog):
    """Run from tmp_path (no Git, no DVC) and fail on any dvclive/dvc log warning."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    yield
    noisy = [r for r in caplog.records if r.name.split(".")[0] in ("dvclive", "dvc")]
    assert not [r for r in noisy if r.levelno >= logging.WARNING], [r.message for r in noisy]


def _tsv(path):
    """Rows of a dvclive metric file as (step, value) strings."""
    with open(path, newline="") as f:
        return [(r["step"], r[path.stem]) for r in csv.DictReader(f, delimiter="\t")]


def _csv_column(path, column):
    with open(path, newline="") as f:
        return [(r["step"], r[column]) for r in csv.DictReader(f) if r[column] != ""]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _small_students(m=2):
    torch.manual_seed(123)
    teacher = patch_net(17, d=8)
    return StudentTeacher(teacher, make_students(teacher, m, seed=1))


def test_teacher_logs_every_csv_row_and_the_accuracies(tmp_path):
    cfg = TeacherConfig(**TEACHER, iterations=5, log_every=2)
    live = tmp_path / "run" / "dvclive"
    summary = pretrain(cfg, tmp_path / "run" / "t.pt", progress=False, live_dir=live)
    assert _files(live) == [
        "metrics.json",
        "plots/metrics/loss.tsv",
        "plots/metrics/loss_c.tsv",
        "plots/metrics/loss_m.tsv",
    ]  # loss_k is off: no file; no dvc.yaml, no report, no params
    csv_file = tmp_path / "run" / "t_loss.csv"
    for name in ("loss", "loss_m", "loss_c"):
        rows = _tsv(live / "plots" / "metrics" / f"{name}.tsv")
        assert [s for s, _ in rows] == ["1", "2", "4", "5"]  # the optimiser steps of the CSV
        assert rows == _csv_column(csv_file, name)  # same values, written the same way
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 5 and metrics["loss"] == summary["loss_final"]["loss"]
    assert "loss_k" not in metrics
    for key in ("triplet_accuracy_init", "triplet_accuracy_final"):
        assert metrics[key] == summary[key] is not None
    assert not list(tmp_path.rglob("dvc.yaml")) and not list(tmp_path.rglob(".dvc"))
    # dvclive is only an observer: the same run without it gives the same files and weights.
    pretrain(cfg, tmp_path / "plain" / "t.pt", progress=False)
    assert (tmp_path / "plain" / "t_loss.csv").read_text() == csv_file.read_text()
    a = torch.load(tmp_path / "plain" / "t.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "run" / "t.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_teacher_does_not_duplicate_steps(tmp_path, monkeypatch):
    cfg = TeacherConfig(**TEACHER, iterations=6, log_every=1, checkpoint_every=2)
    pretrain(cfg, tmp_path / "a" / "t.pt", progress=False, live_dir=tmp_path / "a" / "live")

    # Killed while writing the step-4 checkpoint: dvclive already holds steps 1-4, the checkpoint 2.
    save = teacher_module.atomic_torch_save

    def killed_at_step_4(obj, path):
        if obj.get("step") == 4:
            raise RuntimeError("killed")
        return save(obj, path)

    monkeypatch.setattr(teacher_module, "atomic_torch_save", killed_at_step_4)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain(cfg, tmp_path / "b" / "t.pt", progress=False, live_dir=tmp_path / "b" / "live")
    loss_b = tmp_path / "b" / "live" / "plots" / "metrics" / "loss.tsv"
    assert [s for s, _ in _tsv(loss_b)] == ["1", "2", "3", "4"]
    monkeypatch.setattr(teacher_module, "atomic_torch_save", save)
    resumed = pretrain(
        cfg, tmp_path / "b" / "t.pt", progress=False, live_dir=tmp_path / "b" / "live"
    )
    assert resumed["steps_this_call"] == 4
    assert [s for s, _ in _tsv(loss_b)] == ["1", "2", "3", "4", "5", "6"]
    # Exactly the files of the uninterrupted run (bit-identical resume, every step once).
    for name in _files(tmp_path / "a" / "live"):
        assert (tmp_path / "b" / "live" / name).read_text() == (
            tmp_path / "a" / "live" / name
        ).read_text(), name
    # A finished run called again only rebuilds the same files.
    pretrain(cfg, tmp_path / "b" / "t.pt", progress=False, live_dir=tmp_path / "b" / "live")
    assert [s for s, _ in _tsv(loss_b)] == ["1", "2", "3", "4", "5", "6"]


def test_only_rank_zero_logs(tmp_path):
    cfg = TeacherConfig(**TEACHER, iterations=2, log_every=1)
    pretrain(
        cfg,
        tmp_path / "t.pt",
        progress=False,
        live_dir=tmp_path / "live",
        distributed=DistInfo(rank=1, world_size=1),  # what another rank sees (files: rank 0's job)
    )
    assert not (tmp_path / "live").exists() and not (tmp_path / "t.pt").exists()


def test_students_log_mean_and_per_student_loss_per_epoch(tmp_path):
    images = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    cfg = StudentTrainingConfig(epochs=4, batch_size=2, lr=1e-3, seed=3)
    model = _small_students()
    fit_target_statistics(model, images)
    live = tmp_path / "full"
    history = train_students(model, images, cfg, progress=False, live_dir=live)
    assert _files(live) == [
        "metrics.json",
        "plots/metrics/loss.tsv",
        "plots/metrics/loss_student_0.tsv",
        "plots/metrics/loss_student_1.tsv",
    ]
    for i, losses in enumerate(history):
        rows = _tsv(live / "plots" / "metrics" / f"loss_student_{i}.tsv")
        assert rows == [(str(e + 1), str(v)) for e, v in enumerate(losses)]
    means = [float(v) for _, v in _tsv(live / "plots" / "metrics" / "loss.tsv")]
    assert means == pytest.approx([(a + b) / 2 for a, b in zip(*history)], rel=1e-12)
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["loss_student_1"] == history[1][-1]

    # Two epochs, then the same run resumed from its checkpoint: every epoch logged once.
    ckpt = tmp_path / "students.ckpt"
    part = _small_students()
    fit_target_statistics(part, images)
    short = StudentTrainingConfig(**{**cfg.__dict__, "epochs": 2})
    train_students(part, images, short, checkpoint=ckpt, progress=False, live_dir=tmp_path / "b")
    state = torch.load(ckpt, weights_only=False)
    state["config"]["epochs"] = 4
    torch.save(state, ckpt)
    resumed = _small_students()
    fit_target_statistics(resumed, images)
    train_students(resumed, images, cfg, checkpoint=ckpt, progress=False, live_dir=tmp_path / "b")
    for name in _files(live):
        assert (tmp_path / "b" / name).read_text() == (live / name).read_text(), name


def test_igd_logs_its_epoch_records(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 8, 8, generator=g)
    cfg = IGDConfig(image_size=8, batch_size=4, epochs=2, progress=False, seed=3, latent_dim=8)
    _, history = train_igd(images, cfg, live_dir=tmp_path / "live")
    metrics_dir = tmp_path / "live" / "plots" / "metrics"
    names = {"loss", "l_h", "l_r", "l_adv", "l_d", "mu_norm", "sigma"}
    assert {p.stem for p in metrics_dir.glob("*.tsv")} == names
    for name in names:
        assert _tsv(metrics_dir / f"{name}.tsv") == [
            (str(r["epoch"]), str(r[name])) for r in history
        ]


def test_open_live_leaves_a_git_repository_alone(tmp_path, monkeypatch):
    """Stock dvclive runs `dvc init` (and `git add`s its files) in a Git repository without DVC,
    and fails in one without commits; the repository-free Live does neither."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    live = open_live(repo / "out" / "dvclive")
    log_step(live, 1, {"loss": 0.5, "off": float("nan"), "none": None})
    assert sorted(p.name for p in repo.iterdir()) == [".git", "out"]
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert status.split() == ["??", "out/"]  # nothing staged, only our files
    assert json.loads((repo / "out" / "dvclive" / "metrics.json").read_text()) == {
        "loss": 0.5,
        "step": 1,
    }
