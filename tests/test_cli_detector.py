"""`ust fit`, `ust predict`, `ust export` end to end on a tiny folder, and the command line's answers
to bad output paths, foreign model files and empty image folders (one line on stderr, exit code 2,
nothing written)."""

import csv
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ust.cli import main
from ust.data.mvtec import load_anomaly_map
from ust.data.synthetic import make_synthetic_mvtec
from ust.detector import Detector
from ust.detector.export import run_exported
from ust.method.networks import patch_net

FIT_OPTIONS = ["--image-size", "32", "--epochs", "1", "--students", "2", "--no-progress"]


def save_teacher(path, p):
    torch.manual_seed(p)
    net = patch_net(p, d=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "net_config": asdict(net.config)}, path)


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def gradient(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / (2 + seed)) + np.cos(yy / 3) + 2) / 4
    return np.clip(base + 0.05 * rng.standard_normal((h, w)), 0, 1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Teachers (flat p17.pt / p65.pt and the pipeline's p33/<losses>/teacher.pt), a folder of 6
    good 8-bit RGB images (one in a sub-folder) and test images of several kinds and sizes."""
    root = tmp_path_factory.mktemp("cli")
    save_teacher(root / "teachers" / "p17.pt", 17)
    save_teacher(root / "teachers" / "p33" / "mc" / "teacher.pt", 33)
    save_teacher(root / "teachers" / "p65.pt", 65)
    for i in range(6):
        rgb = (255 * np.dstack([gradient(40, 36 + i, i)] * 3)).astype(np.uint8)
        write_png(root / "good" / ("sub" if i == 5 else "") / f"{i:03d}.png", rgb)
    gray = (255 * gradient(45, 30, 9)).astype(np.uint8)
    write_png(root / "test" / "gray.png", gray)
    write_png(root / "test" / "deep" / "gray16.png", gray.astype(np.uint16) * 257)  # same values
    rgba = (255 * np.dstack([gradient(33, 52, 3)] * 3 + [np.ones((33, 52))])).astype(np.uint8)
    write_png(root / "test" / "rgba.png", rgba, "RGBA")
    return root


@pytest.fixture(scope="module")
def model(setup):
    """`ust fit` on the good folder (all three scales)."""
    out = setup / "models" / "detector.pt"
    argv = ["fit", "--images", str(setup / "good"), "--out", str(out)]
    code = main(argv + ["--teacher-dir", str(setup / "teachers"), *FIT_OPTIONS])
    assert code == 0
    return out


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def predict_argv(model, images, out, *extra: str) -> list[str]:
    """`ust predict` on ``images`` into ``out`` without progress bars, plus ``extra`` options."""
    return [
        "predict",
        "--model",
        str(model),
        str(images),
        "--out",
        str(out),
        *extra,
        "--no-progress",
    ]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: then a
    pseudo file system), or skip."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/fs"), Path("/proc")):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        Path(probe).unlink()
    pytest.skip("no unwritable folder on this machine")


# ----------------------------------------------------------------------------------- end to end
def test_fit_writes_one_detector_file_and_prints_a_summary(setup, model, capsys):
    assert model.is_file()
    assert not model.with_name("detector.pt.work").exists()  # checkpoints removed when done
    detector = Detector.load(model)
    assert detector.patch_sizes == (17, 33, 65) and detector.image_size == 32
    assert detector.config.training.epochs == 1 and detector.config.students == 2
    assert len(detector.calibration.images) == 1  # 10 % of 6 held out (at least one)


def test_predict_writes_maps_overlays_and_scores(setup, model, tmp_path, capsys):
    out = tmp_path / "pred"
    code = main(predict_argv(model, setup / "test", out, "--batch-size", "2"))
    assert code == 0
    detector = Detector.load(model)
    t = detector.image_threshold  # images are decided by the image threshold
    assert t != detector.threshold
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["image", "score", "anomalous", "threshold", "name"]
    sizes = {"deep/gray16": (45, 30), "gray": (45, 30), "rgba": (33, 52)}
    assert sorted(r["name"] for r in rows) == sorted(sizes)
    for r in rows:
        amap = load_anomaly_map(out / "maps" / f"{r['name']}.tiff")
        assert amap.shape == sizes[r["name"]] and amap.dtype == np.float32
        assert float(r["score"]) == pytest.approx(float(amap.max()), rel=1e-5)
        assert float(r["threshold"]) == pytest.approx(t, rel=1e-5)
        assert r["anomalous"] == str(float(amap.max()) > t).lower()
        overlay = Image.open(out / "overlays" / f"{r['name']}.png")
        assert overlay.mode == "RGB" and overlay.size == sizes[r["name"]][::-1]
        assert Path(r["image"]).is_file()
    # the same image as 8-bit and 16-bit gives the same map
    a, b = (load_anomaly_map(out / "maps" / f"{n}.tiff") for n in ("gray", "deep/gray16"))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert "3 image(s) scored" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_predict_skips_an_unreadable_image_and_says_so(setup, model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("gray.png", "rgba.png"):
        (images / name).write_bytes((setup / "test" / name).read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "pred"
    code = main(predict_argv(model, images, out))
    assert code == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err
    assert "1 of 3 image(s) could not be read" in err.strip().splitlines()[-1]
    assert sorted(r["name"] for r in read_csv(out / "scores.csv")) == ["gray", "rgba"]
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["gray.tiff", "rgba.tiff"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["gray.png", "rgba.png"]


def test_predict_with_no_readable_image_writes_nothing(model, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"no image")
    out = tmp_path / "pred"
    assert main(predict_argv(model, tmp_path / "images", out)) == 2
    assert "none of the 1 image(s) could be read" in capsys.readouterr().err
    assert not out.exists()


def test_predict_failing_midway_leaves_no_partial_output(setup, model, tmp_path, monkeypatch):
    import ust.detector.batch as batch

    calls, real = [], batch.save_overlay

    def failing_overlay(path, rgb):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(path, rgb)

    monkeypatch.setattr(batch, "save_overlay", failing_overlay)
    out = tmp_path / "pred"
    with pytest.raises(RuntimeError, match="disk full"):
        main(predict_argv(model, setup / "test", out, "--batch-size", "1"))
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging folder


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_writes_the_graph_and_its_thresholds(model, tmp_path, capsys, fmt):
    out = tmp_path / f"detector.{fmt}"
    assert (
        main(["export", "--model", str(model), "--format", fmt, "--out", str(out), "--check"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_relative_difference"] < 1e-4
    detector = Detector.load(model)
    info = json.loads((tmp_path / f"detector.{fmt}.thresholds.json").read_text())
    assert info["threshold"] == detector.threshold and info["detector_sha256"] == detector.sha256
    x = torch.rand(1, 3, 37, 41)
    maps, scores = run_exported(out, fmt, x)
    reference = detector.predict(x)
    scale = max(1.0, float(np.abs(reference.maps[0]).max()))
    assert np.abs(maps[0] - reference.maps[0]).max() / scale < 1e-4


def test_fit_resumes_after_an_interruption(setup, tmp_path, monkeypatch, capsys):
    import ust.train.fit as fit_module
    from ust.detector.model import Detector as DetectorClass

    out = tmp_path / "detector.pt"
    argv = ["fit", "--images", str(setup / "good"), "--out", str(out), "--patch-sizes", "33", "65"]
    argv += ["--teacher-dir", str(setup / "teachers"), *FIT_OPTIONS]

    def crash(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(DetectorClass, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "detector.pt.work").iterdir()) == ["p33", "p65"]
    monkeypatch.undo()

    def no_training(*args, **kwargs):
        raise AssertionError("the finished scales must be reused")

    monkeypatch.setattr(fit_module, "train_students", no_training)
    assert main(argv) == 0
    assert out.is_file() and not (tmp_path / "detector.pt.work").exists()


def test_fit_reads_the_mvtec_layout(setup, tmp_path, capsys):
    make_synthetic_mvtec(tmp_path / "data", categories=("brick",), image_size=32, n_train=4)
    out = tmp_path / "brick.pt"
    argv = ["fit", "--data-root", str(tmp_path / "data"), "--category", "brick", "--out", str(out)]
    argv += [
        "--patch-sizes",
        "33",
        "--threshold",
        "k-sigma",
        "--teacher-dir",
        str(setup / "teachers"),
    ]
    argv += ["--crop", "1", "--batch-size", "2"]  # windows: one output pixel each, two per step
    assert main(argv + FIT_OPTIONS) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_train"] + summary["n_val"] == 4 and summary["threshold_rule"] == "k_sigma"
    detector = Detector.load(out)
    assert detector.threshold == summary["thresholds"]["k_sigma"]
    assert (detector.config.training.crop, detector.config.training.batch_size) == (1, 2)


# ----------------------------------------------------------------------------------- robustness
def test_out_that_is_a_file_where_a_folder_is_expected(setup, model, tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    code = main(["predict", "--model", str(model), str(setup / "test"), "--out", str(existing)])
    assert code == 2
    assert f"--out {existing} is a file" in one_error_line(capsys)
    assert existing.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_mvtec_out_that_is_a_file(setup, tmp_path, capsys):
    make_synthetic_mvtec(tmp_path / "data", categories=("brick",), image_size=32, n_train=4)
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    argv = [
        "mvtec",
        "--data-root",
        str(tmp_path / "data"),
        "--category",
        "brick",
        "--out",
        str(existing),
    ]
    code = main(
        argv + ["--patch-sizes", "33", "--teacher-dir", str(setup / "teachers"), *FIT_OPTIONS]
    )
    assert code == 2
    assert f"--out {existing} is a file" in one_error_line(capsys)
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("command", ["fit", "export"])
def test_out_that_is_a_folder_where_a_file_is_expected(setup, model, tmp_path, capsys, command):
    folder = tmp_path / "folder"
    folder.mkdir()
    if command == "fit":
        argv = [
            "fit",
            "--images",
            str(setup / "good"),
            "--teacher-dir",
            str(setup / "teachers"),
            *FIT_OPTIONS,
        ]
    else:
        argv = ["export", "--model", str(model), "--format", "onnx"]
    assert main(argv + ["--out", str(folder)]) == 2
    assert f"--out {folder} is a folder" in one_error_line(capsys)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", ["fit", "predict", "export"])
def test_out_in_an_unwritable_folder(setup, model, tmp_path, capsys, command):
    folder = unwritable_folder(tmp_path)
    if command == "fit":
        argv = [
            "fit",
            "--images",
            str(setup / "good"),
            "--teacher-dir",
            str(setup / "teachers"),
            *FIT_OPTIONS,
        ]
        out = folder / "detector.pt"
    elif command == "predict":
        argv = ["predict", "--model", str(model), str(setup / "test"), "--no-progress"]
        out = folder / "predictions"
    else:
        argv = ["export", "--model", str(model), "--format", "torchscript"]
        out = folder / "detector.ts"
    assert main(argv + ["--out", str(out)]) == 2
    assert f"cannot write to folder {folder}" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_model_that_is_not_a_detector(setup, tmp_path, capsys, command):
    teacher = setup / "teachers" / "p17.pt"
    out = tmp_path / "out"
    if command == "predict":
        argv = ["predict", "--model", str(teacher), str(setup / "test"), "--out", str(out)]
    else:
        argv = ["export", "--model", str(teacher), "--format", "onnx", "--out", str(out)]
    assert main(argv) == 2
    assert f"{teacher} is not a ust detector file" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_image_folder_without_images(setup, model, tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    if command == "fit":
        argv = [
            "fit",
            "--images",
            str(empty),
            "--out",
            str(out / "d.pt"),
            "--teacher-dir",
            str(setup / "teachers"),
        ]
    else:
        argv = ["predict", "--model", str(model), str(empty), "--out", str(out)]
    assert main(argv) == 2
    assert f"no images found in {empty}" in one_error_line(capsys)
    assert not out.exists()


def test_help_documents_options_and_input_sizes(capsys):
    for command, options in {
        "fit": [
            "--images",
            "--out",
            "--teacher-dir",
            "--patch-sizes",
            "--image-size",
            "--epochs",
            "--students",
            "--threshold",
            "--device",
            "--data-root",
            "--category",
        ],
        "predict": ["--model", "--out", "--batch-size", "--threshold", "PATH"],
        "export": ["--model", "--format", "--out", "--fixed-size", "dynamic", "thresholds.json"],
    }.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for option in options:
            assert option in text, (command, option)


@pytest.mark.slow
def test_notebook_50_runs_on_smoke_substitutes(tmp_path):
    """Notebook 50 with missing images and teachers: it builds both at smoke size and predicts."""
    import papermill

    from ust.paths import ROOT

    out = tmp_path / "own_images"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "50_own_images.ipynb"),
        str(tmp_path / "50.ipynb"),
        parameters={
            "images_dir": str(tmp_path / "missing" / "good"),
            "test_dir": str(tmp_path / "missing" / "test"),
            "teacher_dir": str(tmp_path / "missing" / "teachers"),
            "out_dir": str(out),
            "patch_sizes": [33],
            "image_size": 32,
            "students": 1,
            "epochs": 1,
            "n_test": 3,
        },
        kernel_name="python3",
        language="python",
        progress_bar=False,
    )
    assert Detector.load(out / "detector.pt").patch_sizes == (33,)
    assert len(read_csv(out / "predictions" / "scores.csv")) == 3
    assert len(list((out / "predictions" / "overlays").rglob("*.png"))) == 3
    import nbformat

    executed = nbformat.read(tmp_path / "50.ipynb", as_version=4)
    last = executed.cells[-1].outputs
    html = "".join(o.get("data", {}).get("text/html", "") for o in last)
    assert "good images" in html and "rejected" in html  # the confusion counts are shown
    printed = "".join(o.get("text", "") for o in last if o.get("output_type") == "stream")
    assert "au_pro" in printed and "image_auroc" in printed
