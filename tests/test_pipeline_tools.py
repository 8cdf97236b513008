"""Pipeline tooling: the "run instead" sentence of the tables, stage timings, the per-profile
snapshot of figures/, the preflight check of the `paper` profile, and the hub-cache hash check."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from ust.baselines.igd import IGDEncoder
from ust.experiments.params import load_params
from ust.method.distillation import RESNET18_FILENAME, load_resnet18
from ust.paths import ROOT
from ust.report.readme_sync import (
    SNAPSHOT_FILES,
    run_instead,
    snapshot,
    stage_durations,
    timings_table,
)
from ust.stages import preflight


@pytest.fixture(scope="module")
def paper():
    return load_params(ROOT / "profiles/paper.yaml")


@pytest.fixture(scope="module")
def smoke():
    return load_params(ROOT / "profiles/smoke.yaml")


def test_run_instead_lists_exactly_the_reduced_settings(paper):
    assert run_instead("oneclass", paper, paper) == ""  # the paper profile reduces nothing
    reduced = copy.deepcopy(paper)
    reduced["profile"] = "mine"
    assert run_instead("oneclass", reduced, paper) == "Iteration counts and sizes: the paper's.\n\n"
    reduced["oneclass_train"]["igd_epochs"] = 3
    reduced["oneclass_train"]["max_train"] = 100
    text = run_instead("oneclass", reduced, paper)
    assert text == (
        "Run instead of the paper's settings (profile `mine`): `oneclass_train.max_train` 100 "
        "(paper: all); `oneclass_train.igd_epochs` 3 (paper: 256).\n\n"
    )
    # an MVTec setting is not a one-class reduction
    reduced["mvtec_train"]["epochs"] = 1
    assert "mvtec_train" not in run_instead("oneclass", reduced, paper)
    assert "`mvtec_train.epochs` 1 (paper: 100)" in run_instead("mvtec", reduced, paper)


def test_offline_full_states_what_it_runs_instead_of_the_paper(paper):
    full = load_params(ROOT / "profiles/offline_full.yaml")
    text = run_instead("oneclass", full, paper)
    assert f"`oneclass_train.epochs` {full['oneclass_train']['epochs']} (paper: 100)" in text
    assert "`oneclass_train.igd_epochs`" in text and "(paper: 256)" in text
    # all offline data: no class subset, no image cap
    assert full["oneclass"]["classes"] == list(range(10))
    assert (
        full["oneclass_train"]["max_train"] is None and full["oneclass_train"]["max_test"] is None
    )


def _notebook(path, duration):
    meta = {"papermill": {"duration": duration}} if duration is not None else {}
    path.write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))


def test_stage_timings_are_grouped_from_papermill_metadata(tmp_path, monkeypatch):
    for name, seconds in {
        "10_teacher-p17-mc": 60.0,
        "10_teacher-p33-mc": 120.0,
        "20_one_class-fashion_mnist-0": 300.0,
        "20_one_class-fashion_mnist-1": 360.0,
        "20_one_class-mnist-0": 30.0,
        "40_mds": 12.0,
    }.items():
        _notebook(tmp_path / f"{name}.ipynb", seconds)
    assert stage_durations(tmp_path)["20_one_class-mnist-0"] == 30.0
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    table = timings_table(tmp_path)
    assert "Stage wall-clock times of profile `smoke`" in table
    assert "| teacher | 2 | 3.0 | 90 | 120 |" in table
    assert "| oneclass, Fashion-MNIST | 2 | 11.0 | 330 | 360 |" in table
    assert "| oneclass, MNIST | 1 | 0.5 | 30 | 30 |" in table
    assert "| **all notebook stages** | 6 | 14.7 | – | – |" in table


def test_stage_timings_reject_an_unfinished_notebook(tmp_path):
    _notebook(tmp_path / "20_one_class-mnist-3.ipynb", None)
    with pytest.raises(ValueError, match=r"20_one_class-mnist-3.ipynb has no papermill duration"):
        stage_durations(tmp_path)
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        stage_durations(tmp_path / "empty")


def test_snapshot_copies_the_report_into_a_profile_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    with pytest.raises(FileNotFoundError, match="lacks teachers.md"):
        snapshot(tmp_path)
    assert not (tmp_path / "smoke").exists()
    for i, name in enumerate(SNAPSHOT_FILES):
        (tmp_path / name).write_text(f"content {i}")
    dest = snapshot(tmp_path)
    assert dest == tmp_path / "smoke"
    assert [(dest / n).read_text() for n in SNAPSHOT_FILES] == [
        f"content {i}" for i in range(len(SNAPSHOT_FILES))
    ]
    assert sorted(p.name for p in dest.iterdir()) == sorted(SNAPSHOT_FILES)  # no temp files left


def test_preflight_passes_the_offline_smoke_profile(smoke):
    assert preflight.problems(smoke) == []


def test_preflight_names_every_missing_input_of_a_paper_like_profile(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    params = copy.deepcopy(smoke)
    params["teachers"] = {"p33-kc": {"p": 33, "losses": "kc"}}
    params["teacher"]["images"] = str(tmp_path / "imagenet" / "train")
    params["oneclass"]["datasets"] = ["cifar10"]
    params["oneclass_data"]["cifar10"] = {
        "source": "torchvision",
        "root": str(tmp_path / "data"),
        "download": False,
    }
    params["mvtec_data"] = {
        **params["mvtec_data"],
        "synthetic": False,
        "root": str(tmp_path / "mv"),
    }
    found = preflight.problems(params)
    assert len(found) == 4
    assert found[0].startswith(
        f"[teacher images] `teacher.images`: no folder at {tmp_path / 'imagenet' / 'train'}. "
    )
    assert "put the ImageNet training images there" in found[0]
    found = found[1:]
    assert found[0].startswith("[teacher (λ_k > 0)] ImageNet ResNet-18 weights not found")
    assert RESNET18_FILENAME in found[0]
    assert found[1].startswith("[oneclass cifar10] CIFAR-10 not found")
    assert "data_batch_1" in found[1]
    assert found[2].startswith(f"[mvtec] MVTec AD not found at {tmp_path / 'mv'}")
    assert "mvtec_data.root" in found[2]


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.JPEG").write_bytes(b"")  # preflight counts files; it decodes nothing


def test_preflight_checks_the_teacher_image_folder(smoke, tmp_path):
    """A missing folder, one without images (ImageNet class folders, no files) and one with too few
    images are problems naming `teacher.images`; enough images pass; the relative default is taken
    from the repository root (docs/decisions.md#offline-teacher-images)."""
    params = copy.deepcopy(smoke)
    imagenet = tmp_path / "imagenet" / "train"
    params["teacher"]["images"] = str(imagenet)
    (found,) = preflight.problems(params)
    assert "`teacher.images`: no folder at" in found and str(imagenet) in found
    (imagenet / "n01440764").mkdir(parents=True)
    (found,) = preflight.problems(params)
    assert f"`teacher.images`: the folder {imagenet} holds 0 image file(s)" in found
    assert "ILSVRC2012" in found
    _images(imagenet / "n01440764", 3)
    (found,) = preflight.problems(params)
    assert "holds 3 image file(s), at least 4 are needed" in found
    _images(imagenet / "n01443537", 2)
    assert preflight.problems(params) == []
    params["teacher"]["images"] = "data/imagenet/train"
    if not (ROOT / "data/imagenet/train").is_dir():
        (found,) = preflight.problems(params)
        assert f"no folder at {ROOT / 'data/imagenet/train'}" in found


def test_the_paper_profile_never_pretrains_on_the_bundled_photographs(smoke):
    params = copy.deepcopy(smoke)
    assert preflight.problems(params) == []  # offline profiles may
    params["profile"] = "paper"
    (found,) = preflight.problems(params)
    assert found.startswith(
        "[teacher images] `teacher.images` is 'embedded', but profile `paper` pretrains its "
        "teachers on ImageNet"
    )
    assert "data/imagenet/train" in found


def test_preflight_of_the_paper_profile_stops_without_imagenet(paper, tmp_path):
    """Acceptance: `UST_PARAMS=profiles/paper.yaml python -m ust.stages.preflight x.ok`
    without an ImageNet folder stops, naming `teacher.images` and the folder it expected (the other
    inputs point into tmp_path so that nothing is downloaded)."""
    params = copy.deepcopy(paper)
    expected = ROOT / params["teacher"]["images"]
    if expected.is_dir():  # a checkout that holds ImageNet: expect a folder that does not exist
        params["teacher"]["images"] = str(tmp_path / "imagenet" / "train")
        expected = tmp_path / "imagenet" / "train"
    for entry in params["oneclass_data"].values():
        entry.update(root=str(tmp_path / "torchvision"), download=False)
    params["mvtec_data"]["root"] = str(tmp_path / "mvtec")
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "UST_PARAMS": str(path), "TORCH_HOME": str(tmp_path / "th")}
    marker = tmp_path / "x.ok"
    proc = subprocess.run(
        [sys.executable, "-m", "ust.stages.preflight", str(marker)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stdout == "" and not marker.exists()
    assert "profile `paper` cannot run" in proc.stderr and "nothing was computed" in proc.stderr
    first = proc.stderr.splitlines()[1]
    assert first.startswith(f"1. [teacher images] `teacher.images`: no folder at {expected}.")


def test_preflight_command_removes_the_marker_and_writes_nothing_on_failure(
    smoke, tmp_path, monkeypatch, capsys
):
    params = copy.deepcopy(smoke)
    params["mvtec_data"] = {
        **params["mvtec_data"],
        "synthetic": False,
        "root": str(tmp_path / "mv"),
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    marker = tmp_path / "build" / "preflight.ok"
    marker.parent.mkdir()
    marker.write_text("stale")
    monkeypatch.setenv("UST_PARAMS", str(bad))
    assert preflight.main([str(marker)]) == 1
    err = capsys.readouterr().err
    assert "profile `smoke` cannot run: 1 missing input(s); nothing was computed." in err
    assert not marker.exists()
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    assert preflight.main([str(marker)]) == 0
    assert marker.read_text() == preflight.MARKER_TEXT


def test_preflight_stops_at_a_misspelt_key_before_anything_else(
    smoke, tmp_path, monkeypatch, capsys
):
    params = copy.deepcopy(smoke)
    params["mvtec_train"]["epochz"] = params["mvtec_train"].pop("epochs")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    marker = tmp_path / "preflight.ok"
    marker.write_text("stale")
    monkeypatch.setenv("UST_PARAMS", str(bad))

    def forbidden(*args, **kwargs):
        raise AssertionError("no input may be checked before the parameters are valid")

    monkeypatch.setattr(preflight, "problems", forbidden)
    monkeypatch.setattr(preflight, "_oneclass_check", forbidden)
    assert preflight.main([str(marker)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"preflight: {bad}: unknown key 'epochz' in section 'mvtec_train'; valid keys: "
        "batch_size, batched, crop, device, epochs, image_size, lr, padding, schedule, seed, "
        "students, teacher_losses, val_fraction, warmup, weight_decay; did you mean 'epochs'?\n"
    )
    assert not marker.exists()


def test_preflight_module_exits_non_zero_on_a_misspelt_key(smoke, tmp_path):
    params = copy.deepcopy(smoke)
    params["teacher"]["iteratons"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    env = {**os.environ, "UST_PARAMS": str(bad)}
    proc = subprocess.run(
        [sys.executable, "-m", "ust.stages.preflight", str(tmp_path / "ok")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{bad}: unknown key 'iteratons' in section 'teacher'" in lines[0]
    assert not (tmp_path / "ok").exists()


def test_a_foreign_file_in_the_hub_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cached = tmp_path / "th" / "hub" / "checkpoints" / RESNET18_FILENAME
    cached.parent.mkdir(parents=True)
    torch.save({"not": torch.zeros(1)}, cached)
    with pytest.raises(FileNotFoundError, match=r"is not torchvision's resnet18-f37072fd\.pth"):
        load_resnet18()
    with pytest.raises(
        FileNotFoundError, match=r"SHA-256 starts with [0-9a-f]{8}, expected f37072fd"
    ):
        IGDEncoder(stem="imagenet", pretrained=True)
