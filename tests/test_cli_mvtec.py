"""`ust mvtec` on a tiny synthetic MVTec-layout category."""

import json
from dataclasses import asdict

import pytest
import torch

from ust.cli import main
from ust.data.synthetic import make_synthetic_mvtec
from ust.method.networks import patch_net


def save_random_teacher(path, p):
    torch.manual_seed(p)
    net = patch_net(p, d=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "net_config": asdict(net.config)}, path)


@pytest.fixture
def root(tmp_path):
    """A tiny synthetic MVTec-layout category `brick` (6 train, 2 good + 4 defective test images)."""
    make_synthetic_mvtec(
        tmp_path / "data",
        categories=("brick",),
        image_size=32,
        n_train=6,
        n_test_good=2,
        n_test_defect_per_type=1,
    )
    return tmp_path / "data"


def test_mvtec_command_writes_metrics_and_maps(tmp_path, root, capsys):
    teachers = tmp_path / "teachers"
    save_random_teacher(teachers / "p17.pt", 17)
    save_random_teacher(teachers / "p33" / "mc" / "teacher.pt", 33)  # the pipeline's layout
    out = tmp_path / "out"
    code = main(
        [
            "mvtec",
            "--data-root",
            str(root),
            "--category",
            "brick",
            "--out",
            str(out),
            "--patch-sizes",
            "17",
            "33",
            "--image-size",
            "16",
            "--epochs",
            "1",
            "--students",
            "2",
            "--teacher-dir",
            str(teachers),
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"p17", "p33", "multiscale"}
    for m in metrics.values():
        assert set(m) == {"au_pro", "pixel_auroc", "image_auroc"}
        assert all(0.0 <= v <= 1.0 for v in m.values())
    assert json.loads(capsys.readouterr().out) == metrics
    maps = sorted((out / "p17" / "maps" / "brick" / "test").rglob("*.tiff"))
    assert len(maps) == 2 + 5  # 2 good + 1 per defect type (5 types)


def test_mvtec_command_errors_before_writing(tmp_path, root, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "mvtec",
            "--data-root",
            str(root),
            "--category",
            "grass",
            "--out",
            str(out),
            "--teacher-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "grass" in capsys.readouterr().err
    assert not out.exists()
    code = main(
        [
            "mvtec",
            "--data-root",
            str(root),
            "--category",
            "brick",
            "--out",
            str(out),
            "--patch-sizes",
            "65",
            "--teacher-dir",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2
    assert "ust teacher --patch-size 65" in capsys.readouterr().err
    assert not out.exists()


def test_mvtec_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["mvtec", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--data-root",
        "--category",
        "--out",
        "--patch-sizes",
        "--image-size",
        "--epochs",
        "--students",
        "--teacher-dir",
        "--device",
    ):
        assert option in text
