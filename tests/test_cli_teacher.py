"""`ust teacher` command line."""

import json

import pytest
import torch

from ust.cli import build_parser, main
from ust.method.dense import dense_net
from ust.method.teacher import load_teacher

OPTIONS = (
    "--images", "--patch-size", "--out", "--iterations", "--batch-size", "--lr", "--weight-decay",
    "--lambda-k", "--lambda-m", "--lambda-c", "--margin", "--decorrelation", "--resnet-weights",
    "--allow-download", "--resnet-input-size", "--device", "--bf16", "--tf32", "--seed",
    "--num-workers", "--checkpoint-every", "--log-every", "--eval-triplets", "--live-dir",
    "--no-resume", "--no-progress",
)  # fmt: skip


def test_teacher_command_writes_loadable_file(tmp_path, capsys):
    out = tmp_path / "t.pt"
    argv = ["teacher", "--images", "embedded", "--patch-size", "17", "--iterations", "2"]
    argv += ["--batch-size", "4", "--lambda-k", "0", "--lambda-m", "1", "--lambda-c", "1"]
    argv += ["--out", str(out), "--device", "cpu", "--eval-triplets", "8", "--no-progress"]
    assert main(argv + ["--live-dir", str(tmp_path / "live")]) == 0
    text = capsys.readouterr().out
    summary = json.loads(text)
    assert summary["steps"] == 2 and summary["device"] == "cpu" and "NaN" not in text
    assert summary["loss_init"]["loss_k"] is None and summary["loss_init"]["loss_m"] > 0
    net = load_teacher(out)
    assert net.config.p == 17 and dense_net(net)(torch.rand(1, 3, 9, 9)).shape == (1, 128, 9, 9)
    blob = torch.load(out, weights_only=False)
    assert blob["loss_config"]["lambda_k"] == 0 and blob["loss_config"]["decorrelation_normalized"]
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())  # --live-dir: dvclive
    assert live["step"] == 2 and live["triplet_accuracy_final"] == summary["triplet_accuracy_final"]


def test_only_rank_zero_prints_the_summary(tmp_path, monkeypatch, capsys):
    argv = ["teacher", "--images", "embedded", "--patch-size", "17", "--iterations", "1"]
    argv += ["--batch-size", "2", "--lambda-k", "0", "--lambda-m", "1", "--lambda-c", "0"]
    argv += ["--device", "cpu", "--eval-triplets", "4", "--no-progress"]
    monkeypatch.setenv("RANK", "1")  # what torchrun sets on the second process
    assert main(argv + ["--out", str(tmp_path / "a.pt")]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(argv + ["--out", str(tmp_path / "b.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1


def test_teacher_help_mentions_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["teacher", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text, option
    assert "teacher" in build_parser().format_help()


def test_teacher_errors_are_reported_not_raised(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    argv = ["teacher", "--patch-size", "17", "--iterations", "1", "--batch-size", "4"]
    assert main(argv + ["--lambda-k", "1", "--out", str(tmp_path / "t.pt")]) == 2
    assert "resnet18-f37072fd.pth" in capsys.readouterr().err and not (tmp_path / "t.pt").exists()
    assert main(argv + ["--images", str(tmp_path / "none"), "--lambda-k", "0", "--lambda-m", "1",
                        "--out", str(tmp_path / "t.pt")]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["teacher", "--out", "x.pt", "--lambda-k", "-1"])


@pytest.mark.parametrize(
    "form, normalized, squared",
    [
        (None, "auto", True),  # the default: raw Σ C² with --lambda-k > 0, the mean without
        ("auto", "auto", True),
        ("mean", True, True),
        ("sum", False, True),
        ("sum-unsquared", False, False),
    ],
)
def test_decorrelation_forms_map_onto_the_teacher_config(form, normalized, squared):
    from ust.cli.teacher import teacher_config_from_args

    argv = ["teacher", "--out", "t.pt"] + ([] if form is None else ["--decorrelation", form])
    cfg = teacher_config_from_args(build_parser().parse_args(argv))
    assert (cfg.decorrelation_normalized, cfg.decorrelation_squared) == (normalized, squared)
    if normalized == "auto":
        assert cfg.lambda_k > 0 and cfg.normalizes_decorrelation() is False
        argv += ["--lambda-k", "0", "--lambda-m", "1"]
        assert teacher_config_from_args(build_parser().parse_args(argv)).normalizes_decorrelation()


def test_a_relative_images_folder_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    from ust.cli.teacher import teacher_config_from_args

    monkeypatch.chdir(tmp_path)
    argv = ["teacher", "--out", "t.pt", "--images", "imagenet/train"]
    cfg = teacher_config_from_args(build_parser().parse_args(argv))
    assert cfg.images == str(tmp_path / "imagenet" / "train")
    argv[-1] = "embedded"
    assert teacher_config_from_args(build_parser().parse_args(argv)).images == "embedded"
