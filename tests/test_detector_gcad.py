"""The product side of GCAD: ``Detector`` with ``method="gcad"`` (fit → predict → save → load →
export) and ``ust fit --method gcad`` → ``ust predict`` → ``ust export`` → ``ust evaluate``.

Tiny networks (d = 16 teachers, 4-channel U-Nets, 32-px network input, one or two epochs), so the
numbers mean nothing; the tests check that a GCAD detector follows the detector's protocol (split,
fusion, upsampling, thresholds), its file format (both kinds, and format-1 Student–Teacher files,
load) and that the exported graphs compute what ``predict`` does.
"""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from test_cli_detector import save_teacher
from test_detector import make_teachers, max_rel_diff, write_good_images

from ust.cli import main
from ust.data.mvtec import load_image, split_train_val
from ust.data.synthetic import make_synthetic_mvtec
from ust.data.transforms import upsample_map
from ust.detector import Detector, DetectorConfig, DetectorFileError
from ust.detector.export import export_detector, run_exported
from ust.detector.files import write_detector_file
from ust.method.gcad import GCAD, GCADConfig
from ust.method.scoring import fuse_multiscale
from ust.train.gcad import GCAD_CHECKPOINT, GCAD_FILE, GCADFitSettings, GCADTrainingConfig
from ust.train.students import StudentTrainingConfig

SIZE = 32
TINY = GCADFitSettings(
    model=GCADConfig(
        image_size=SIZE,
        g=4,
        d_glo=3,
        encoder_channels=(4, 4, 8, 8, 8),
        unet_depth=3,
        unet_width=4,
        upsampler_width=8,
    ),
    # two epochs with the skip fade ending at epoch 2: the second epoch has skip weights
    # (0, 0, 0.5, 1, 1) and L_glo on, so the exported E_glo must carry non-trivial skip weights
    training=GCADTrainingConfig(epochs=2, batch_size=4, schedule_scale=0.02),
)
CONFIG = DetectorConfig(method="gcad", image_size=SIZE, gcad=TINY)


def gcad_teachers():
    return {p: t for p, t in make_teachers().items() if p in (17, 33)}


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    write_good_images(folder)
    return folder


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def detector(good_dir, work_dir):
    return Detector.fit(good_dir, gcad_teachers(), CONFIG, work_dir=work_dir, progress=False)


@pytest.fixture(scope="module")
def detector_file(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "gcad.pt"
    detector.save(path)
    return path


# ----------------------------------------------------------------------------- configuration
def test_config_declares_the_gcad_settings_once():
    config = DetectorConfig(method="gcad", image_size=64, seed=3, inference_batch_size=2)
    assert config.patch_sizes == (17, 33)  # the thesis' fusion
    assert DetectorConfig().patch_sizes == (17, 33, 65) and DetectorConfig().gcad is None
    # the thesis' settings, with the detector's image size, seed and inference batch size
    assert config.gcad.training == GCADTrainingConfig() and config.gcad.training.epochs == 500
    assert config.gcad.model == GCADConfig(image_size=64)
    assert (config.gcad.seed, config.gcad.inference_batch_size) == (3, 2)
    assert dataclasses.replace(config, image_size=96).gcad.model.image_size == 96
    # stored as plain values and read back equal; a dict without `method` is a Student–Teacher
    stored = CONFIG.to_dict()
    assert stored["method"] == "gcad" and stored["gcad"]["model"]["encoder_channels"] == [
        4,
        4,
        8,
        8,
        8,
    ]
    assert DetectorConfig(**stored) == CONFIG
    old = DetectorConfig(image_size=SIZE).to_dict()
    del old["method"], old["gcad"]
    assert DetectorConfig(**old).method == "st"
    with pytest.raises(ValueError, match="unknown method"):
        DetectorConfig(method="patchcore")
    with pytest.raises(ValueError, match="method='gcad' only"):
        DetectorConfig(gcad=TINY)
    with pytest.raises(ValueError, match="image_size=48 must be a positive multiple of 32"):
        DetectorConfig(method="gcad", image_size=48)


# ------------------------------------------------------------------------------------ fitting
def test_fit_calibrates_one_gcad_model_per_scale_on_the_held_out_split(detector, good_dir):
    assert detector.method == "gcad" and detector.patch_sizes == (17, 33)
    for p, model in detector.models.items():
        assert isinstance(model, GCAD) and model.p == p and model.calibrated
        assert model.config == TINY.model
        assert model.e_glo.skip_weights.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    paths = [str(p) for p in sorted(good_dir.rglob("*.png"))]
    _, val = split_train_val(paths, 0.1, 0)  # the same split as the Student–Teacher detector
    cal = detector.calibration
    assert cal.images == [val[0].rsplit("/", 1)[1]]
    val_map = detector.anomaly_maps(val[0])[0]
    assert cal.thresholds["max"] == pytest.approx(float(val_map.max()), abs=1e-5)
    assert cal.thresholds["quantile"] == pytest.approx(float(np.quantile(val_map, 0.99)), abs=1e-5)
    assert cal.image_scores == [pytest.approx(cal.thresholds["max"])]


def test_predict_is_the_mean_of_the_gcad_maps_upsampled(detector, good_dir):
    path = good_dir / "good_01.png"  # 37 × 43 px
    result = detector.predict([path])
    x = load_image(path, SIZE)[None]
    maps = [detector.models[p].anomaly_maps(x) for p in (17, 33)]
    expected = upsample_map(fuse_multiscale(maps)[0], (37, 43))
    np.testing.assert_allclose(result.maps[0], expected, atol=1e-6)
    assert result.scores[0] == pytest.approx(float(expected.max()), abs=1e-6)
    np.testing.assert_array_equal(result.masks[0], result.maps[0] > detector.threshold)
    assert result.anomalous[0] == (result.scores[0] > detector.image_threshold)


def test_fit_reuses_finished_scales_from_its_work_folder(detector, good_dir, work_dir, monkeypatch):
    for p in (17, 33):
        assert (work_dir / f"p{p}" / GCAD_FILE).is_file()
        assert not (work_dir / f"p{p}" / GCAD_CHECKPOINT).exists()
    import ust.train.gcad as gcad_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished scale must be reused, not trained again")

    monkeypatch.setattr(gcad_module, "train_gcad", no_training)
    again = Detector.fit(good_dir, gcad_teachers(), CONFIG, work_dir=work_dir, progress=False)
    x = torch.rand(2, 3, 30, 41)
    for a, b in zip(detector.predict(x).maps, again.predict(x).maps):
        np.testing.assert_array_equal(a, b)
    assert again.calibration == detector.calibration
    other = dataclasses.replace(CONFIG, seed=1)
    with pytest.raises(ValueError, match="different configuration"):
        Detector.fit(good_dir, gcad_teachers(), other, work_dir=work_dir, progress=False)


def test_an_interrupted_fit_trains_only_the_unfinished_scale(good_dir, tmp_path, monkeypatch):
    import ust.train.gcad as gcad_module

    config = dataclasses.replace(
        CONFIG, gcad=dataclasses.replace(TINY, training=GCADTrainingConfig(epochs=1))
    )
    real, trained = gcad_module.train_gcad, []

    def crash_at_33(model, *args, **kwargs):
        if model.p == 33:
            raise KeyboardInterrupt
        trained.append(model.p)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(gcad_module, "train_gcad", crash_at_33)
    with pytest.raises(KeyboardInterrupt):
        Detector.fit(good_dir, gcad_teachers(), config, work_dir=tmp_path, progress=False)
    assert trained == [17] and (tmp_path / "p17" / GCAD_FILE).is_file()

    def count(model, *args, **kwargs):
        trained.append(model.p)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(gcad_module, "train_gcad", count)
    fitted = Detector.fit(good_dir, gcad_teachers(), config, work_dir=tmp_path, progress=False)
    assert trained == [17, 33] and fitted.calibration is not None


# --------------------------------------------------------------------------------------- files
def test_save_load_round_trip_gives_equal_predictions(detector, detector_file):
    loaded = Detector.load(detector_file)
    assert loaded.config == detector.config and loaded.method == "gcad"
    assert loaded.calibration == detector.calibration
    assert loaded.sha256 == detector.sha256
    assert all(isinstance(m, GCAD) for m in loaded.models.values())
    outer = torch.load(detector_file, weights_only=True)
    assert outer["format"] == "ust.detector/2"
    payload = torch.load(io.BytesIO(outer["payload"]), weights_only=True)
    assert {e["kind"] for e in payload["scales"].values()} == {"gcad"}
    x = torch.rand(2, 3, 45, 38)
    a, b = detector.predict(x), loaded.predict(x)
    for m, n in zip(a.maps, b.maps):
        np.testing.assert_array_equal(m, n)
    np.testing.assert_array_equal(a.anomalous, b.anomalous)


def _stored_payload(path):
    outer = torch.load(path, weights_only=True)
    return torch.load(io.BytesIO(outer["payload"]), weights_only=True)


def test_load_refuses_a_corrupt_or_inconsistent_gcad_file(detector_file, tmp_path):
    data = bytearray(detector_file.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(DetectorFileError, match=r"flipped\.pt.*corrupt"):
        Detector.load(tmp_path / "flipped.pt")
    # well-formed files whose content does not fit: a scale without its weights, an unknown
    # kind, a GCAD scale in a Student–Teacher detector
    payload = _stored_payload(detector_file)
    del payload["scales"]["17"]["state"]
    write_detector_file(payload, tmp_path / "no_state.pt")
    payload = _stored_payload(detector_file)
    payload["scales"]["33"]["kind"] = "vae"
    write_detector_file(payload, tmp_path / "kind.pt")
    payload = _stored_payload(detector_file)
    payload["config"]["method"], payload["config"]["gcad"] = "st", None
    write_detector_file(payload, tmp_path / "method.pt")
    for name, reason in [
        ("no_state.pt", "state"),
        ("kind.pt", "unknown scale kind 'vae'"),
        ("method.pt", "not StudentTeacher models"),
    ]:
        with pytest.raises(
            DetectorFileError, match=rf"{name} is not a valid detector file.*{reason}"
        ):
            Detector.load(tmp_path / name)


def test_a_format_1_student_teacher_file_still_loads(good_dir, tmp_path, monkeypatch):
    """A file as the Student–Teacher-only version wrote it: format 1, no `method`, no `kind`."""
    import ust.detector.files as files
    from ust.detector.model import _payload

    config = DetectorConfig(
        patch_sizes=(33,), image_size=SIZE, students=1, training=StudentTrainingConfig(epochs=1)
    )
    st = Detector.fit(good_dir, {33: make_teachers()[33]}, config, progress=False)
    payload = _payload(st)
    del payload["config"]["method"], payload["config"]["gcad"]
    del payload["scales"]["33"]["kind"]
    monkeypatch.setattr(files, "FORMAT", "ust.detector/1")
    write_detector_file(payload, tmp_path / "old.pt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "old.pt", weights_only=True)["format"] == "ust.detector/1"
    loaded = Detector.load(tmp_path / "old.pt")
    assert loaded.method == "st" and loaded.config == st.config
    x = torch.rand(1, 3, 35, 40)
    np.testing.assert_array_equal(loaded.predict(x).maps[0], st.predict(x).maps[0])


# -------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_gcad_graph_equals_predict_and_decides_alike(detector_file, tmp_path, fmt):
    detector = Detector.load(detector_file)
    path, side = export_detector(detector, tmp_path / f"gcad.{fmt}", fmt)
    info = json.loads(side.read_text())
    assert info["method"] == "gcad" and info["patch_sizes"] == [17, 33]
    assert info["image_threshold"] == detector.image_threshold
    assert info["threshold"] == detector.threshold
    for shape in [(3, 3, 45, 38), (2, 3, 20, 71)]:  # two sizes, neither the traced 32 × 32
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        maps, scores = run_exported(path, fmt, x)
        reference = detector.predict(x)
        assert maps.shape == (shape[0], *shape[2:]) and scores.shape == (shape[0],)
        assert max_rel_diff(maps, reference.maps) < 1e-4
        np.testing.assert_array_equal(scores > info["image_threshold"], reference.anomalous)
        np.testing.assert_array_equal(
            maps > info["threshold"], np.stack([m for m in reference.masks])
        )
        middle = float(np.median(reference.scores)) + 1e-3  # so that both decisions occur
        np.testing.assert_array_equal(scores > middle, reference.scores > middle)


# ------------------------------------------------------------------------------ command line
def test_cli_fit_gcad_predict_export_evaluate(tmp_path, capsys):
    make_synthetic_mvtec(tmp_path / "data", categories=("brick",), image_size=32, n_train=4)
    for p in (17, 33):
        save_teacher(tmp_path / "teachers" / f"p{p}.pt", p)
    model = tmp_path / "gcad.pt"
    argv = ["fit", "--data-root", str(tmp_path / "data"), "--category", "brick"]
    argv += ["--out", str(model), "--teacher-dir", str(tmp_path / "teachers"), "--method", "gcad"]
    argv += ["--image-size", "32", "--gcad-epochs", "1", "--gcad-batch-size", "2"]
    argv += ["--gcad-unet-width", "4", "--gcad-unet-depth", "3", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "gcad" and summary["patch_sizes"] == [17, 33]  # the default
    assert summary["n_train"] + summary["n_val"] == 4
    assert not model.with_name("gcad.pt.work").exists()
    detector = Detector.load(model)
    gcad = detector.config.gcad
    assert gcad.training.epochs == 1 and gcad.training.schedule_scale == 1 / 500
    assert (gcad.model.unet_width, gcad.model.unet_depth, gcad.model.image_size) == (4, 3, 32)
    assert gcad.model.g == GCADConfig().g  # what the command line leaves alone: the thesis'

    test = tmp_path / "data" / "brick" / "test"
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(model), str(test), "--out", str(pred)]) == 0
    capsys.readouterr()
    tiffs = sorted((pred / "maps").rglob("*.tiff"))
    assert len(tiffs) == len(sorted(test.rglob("*.png"))) > 0

    graph = tmp_path / "gcad.onnx"
    argv = ["export", "--model", str(model), "--format", "onnx", "--out", str(graph), "--check"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["max_relative_difference"] < 1e-4

    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(model), "--data-root", str(tmp_path / "data")]
    assert main(argv + ["--category", "brick", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    assert metrics["decisions"]["image_threshold"] == detector.image_threshold


def test_cli_rejects_an_image_size_gcad_cannot_take(tmp_path, capsys):
    argv = ["fit", "--images", str(tmp_path), "--out", str(tmp_path / "d.pt"), "--method", "gcad"]
    assert main(argv + ["--image-size", "48"]) == 2
    assert "image_size=48 must be a positive multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "d.pt").exists()
