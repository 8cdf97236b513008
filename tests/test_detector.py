"""ust.detector: fit → save → load → predict → export (TorchScript, ONNX) on tiny generated images.

Everything runs with d = 16 teachers of the three receptive fields, 32-px network input and one
epoch, so the numbers mean nothing; the tests check the protocol (split, fusion, upsampling,
thresholds), the file format and that every exported graph computes what ``predict`` does.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from ust.data.mvtec import load_image, split_train_val
from ust.data.transforms import resize, upsample_map
from ust.detector import Detector, DetectorConfig, DetectorFileError, ImageReadError
from ust.detector.export import (
    DetectorGraph,
    _DenseGraph,
    export_detector,
    run_exported,
    thresholds_path,
    zoom,
)
from ust.method.dense import dense_net
from ust.method.networks import patch_net
from ust.method.scoring import fuse_multiscale
from ust.method.students import anomaly_scores
from ust.train.students import StudentTrainingConfig

SIZE = 32
CONFIG = DetectorConfig(
    patch_sizes=(17, 33, 65),
    image_size=SIZE,
    students=2,
    training=StudentTrainingConfig(epochs=1),
)


def texture(h, w, seed, channels=3):
    """A smooth random uint8 texture (h, w, channels) (or (h, w) for channels=1)."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    sigma = (2, 2) if channels == 1 else (2, 2, 0)
    x = ndimage.gaussian_filter(rng.random(shape), sigma)
    x = (x - x.min()) / (x.max() - x.min())
    return (255 * x).astype(np.uint8)


def write_good_images(folder, n=6):
    """n RGB PNGs of different sizes (36-47 px); one in a sub-folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        sub = folder / "more" if i == n - 1 else folder
        sub.mkdir(exist_ok=True)
        path = sub / f"good_{i:02d}.png"
        Image.fromarray(texture(36 + i, 40 + i % 3 * 3, seed=i)).save(path)
        paths.append(path)
    return paths


def make_teachers():
    teachers = {}
    for p in (17, 33, 65):
        torch.manual_seed(p)
        teachers[p] = patch_net(p, d=16)
    return teachers


def max_rel_diff(maps, reference):
    """Largest |a − b| over all maps, relative to the reference maps' magnitude (at least 1)."""
    scale = max(1.0, max(float(np.abs(r).max()) for r in reference))
    return max(float(np.abs(np.asarray(a) - r).max()) for a, r in zip(maps, reference)) / scale


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    write_good_images(folder)
    return folder


@pytest.fixture(scope="module")
def detector(good_dir):
    return Detector.fit(good_dir, make_teachers(), CONFIG, progress=False)


@pytest.fixture(scope="module")
def detector_file(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "detector.pt"
    detector.save(path)
    return path


# ------------------------------------------------------------------------------------ fitting
def test_fit_holds_out_a_seeded_validation_split_and_calibrates_on_it(detector, good_dir):
    cal = detector.calibration
    paths = [str(p) for p in sorted(good_dir.rglob("*.png"))]
    _, val = split_train_val(paths, 0.1, 0)  # docs/decisions.md#validation-split
    assert len(val) == 1 and cal.images == [Path(val[0]).name]
    assert set(cal.thresholds) == {"max", "quantile", "k_sigma", "max_area"}
    assert detector.threshold_rule == "quantile"
    assert detector.threshold == cal.thresholds["quantile"]
    # the thresholds come from the fused map of the held-out image at its original size
    val_map = detector.anomaly_maps(val[0])[0]
    assert val_map.shape == Image.open(val[0]).size[::-1]
    assert cal.thresholds["max"] == pytest.approx(float(val_map.max()), abs=1e-5)
    assert cal.thresholds["quantile"] == pytest.approx(float(np.quantile(val_map, 0.99)), abs=1e-5)
    assert cal.image_scores == [pytest.approx(cal.thresholds["max"])]
    assert cal.pixel_median == pytest.approx(float(np.median(val_map)), abs=1e-5)


def test_fit_rejects_too_few_images_and_mismatched_teachers(tmp_path):
    one = write_good_images(tmp_path / "one", n=1)
    with pytest.raises(ValueError, match="at least 2"):
        Detector.fit(one, make_teachers(), CONFIG, progress=False)
    teachers = make_teachers()
    teachers[33] = teachers[65]
    with pytest.raises(ValueError, match="p=33 has receptive field p=65"):
        Detector.fit(tmp_path, teachers, CONFIG, progress=False)


def test_fit_resumes_from_its_work_folder(good_dir, tmp_path, monkeypatch):
    config = DetectorConfig(
        patch_sizes=(33,), image_size=SIZE, students=1, training=StudentTrainingConfig(epochs=1)
    )
    teachers = {33: make_teachers()[33]}
    first = Detector.fit(good_dir, teachers, config, work_dir=tmp_path / "w", progress=False)
    assert (tmp_path / "w" / "p33" / "ensemble.pt").is_file()
    assert not (tmp_path / "w" / "p33" / "students.ckpt").exists()

    import ust.train.fit as fit_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished scale must be reused, not trained again")

    monkeypatch.setattr(fit_module, "train_students", no_training)
    again = Detector.fit(good_dir, teachers, config, work_dir=tmp_path / "w", progress=False)
    x = torch.rand(1, 3, 30, 30)
    np.testing.assert_array_equal(first.predict(x).maps[0], again.predict(x).maps[0])
    other = dataclasses.replace(config, seed=1)
    with pytest.raises(ValueError, match="different configuration"):
        Detector.fit(good_dir, teachers, other, work_dir=tmp_path / "w", progress=False)


# ---------------------------------------------------------------------------------- predicting
def test_predict_follows_the_mvtec_protocol(detector, good_dir):
    path = good_dir / "good_01.png"
    result = detector.predict([path])
    # what ust.experiments.mvtec_single computes: zoom, ẽ + ṽ per scale, mean, bilinear upsampling
    x = load_image(path, SIZE)[None]
    scores = [anomaly_scores(detector.models[p], x, detector.score_stats[p]) for p in (17, 33, 65)]
    expected = upsample_map(fuse_multiscale(scores)[0], (37, 43))
    np.testing.assert_allclose(result.maps[0], expected, atol=1e-6)
    t = detector.threshold
    assert result.scores[0] == pytest.approx(float(expected.max()), abs=1e-6)
    np.testing.assert_array_equal(result.masks[0], result.maps[0] > t)
    assert result.anomalous[0] == (result.scores[0] > t)
    assert result.threshold == t


def test_predict_accepts_paths_pil_images_tensors_and_folders(detector, good_dir):
    paths = [good_dir / "good_00.png", good_dir / "good_03.png"]  # both 36+i × 40 px
    by_path = detector.predict(paths)
    by_pil = detector.predict([Image.open(p) for p in paths])
    batch = torch.stack([load_image(p) for p in paths[:1]])
    by_tensor = detector.predict(batch)
    for a, b in zip(by_path.maps, by_pil.maps):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(by_path.maps[0], by_tensor.maps[0])
    assert len(detector.predict(good_dir)) == 6  # a folder: its images, recursively
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        detector.predict(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="float images"):
        detector.predict(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_predict_threshold_override_and_rule_switch(detector):
    x = torch.rand(1, 3, 30, 30)
    low = detector.predict(x, threshold=-1e9)
    assert low.anomalous.all() and low.masks[0].all()
    saved = detector.config
    try:
        detector.use_threshold("k-sigma")
        assert detector.threshold == detector.calibration.thresholds["k_sigma"]
        with pytest.raises(ValueError, match="unknown threshold rule"):
            detector.use_threshold("median")
    finally:
        detector.config = saved


def test_predict_grayscale_rgba_and_16_bit_files_at_their_original_sizes(detector, tmp_path):
    gray = texture(33, 45, seed=7, channels=1)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # 16-bit, same
    rgb = texture(50, 29, seed=8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")

    names = ["gray.png", "gray16.png", "rgb.png", "rgba.png"]
    result = detector.predict([tmp_path / n for n in names])
    assert [m.shape for m in result.maps] == [(33, 45), (33, 45), (50, 29), (50, 29)]
    assert [m.shape for m in result.masks] == [(33, 45), (33, 45), (50, 29), (50, 29)]
    np.testing.assert_allclose(result.maps[1], result.maps[0], atol=1e-5)  # v·257/65535 = v/255
    np.testing.assert_array_equal(result.maps[3], result.maps[2])  # alpha dropped
    assert all(m.dtype == np.float32 for m in result.maps)


def test_predict_names_an_unreadable_file(detector, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        detector.predict([bad])


# --------------------------------------------------------------------------------------- files
def test_save_load_round_trip_gives_equal_predictions(detector, detector_file):
    loaded = Detector.load(detector_file)
    assert loaded.config == detector.config
    assert loaded.calibration == detector.calibration
    assert loaded.sha256 == detector.sha256 and len(loaded.sha256) == 64
    x = torch.rand(2, 3, 45, 38)
    a, b = detector.predict(x), loaded.predict(x)
    for m, n in zip(a.maps, b.maps):
        np.testing.assert_array_equal(m, n)
    np.testing.assert_array_equal(a.anomalous, b.anomalous)


def test_load_refuses_a_corrupt_file(detector_file, tmp_path):
    data = bytearray(detector_file.read_bytes())
    flipped = tmp_path / "flipped.pt"
    mid = len(data) // 2
    flipped.write_bytes(
        bytes(data[:mid]) + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + bytes(data[mid + 64 :])
    )
    with pytest.raises(DetectorFileError, match=r"flipped\.pt.*corrupt"):
        Detector.load(flipped)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(DetectorFileError, match=r"truncated\.pt is corrupt or truncated"):
        Detector.load(truncated)


def test_load_refuses_a_file_from_another_version(detector, tmp_path, monkeypatch):
    import ust

    monkeypatch.setattr(ust, "__version__", "0.0.1")
    path = tmp_path / "old.pt"
    detector.save(path)
    monkeypatch.undo()
    with pytest.raises(DetectorFileError, match=r"old\.pt was written by ust 0\.0\.1, this is ust"):
        Detector.load(path)


def test_load_refuses_files_that_are_not_detectors(tmp_path):
    teacher = patch_net(17, d=16)
    torch.save({"state_dict": teacher.state_dict(), "net_config": {}}, tmp_path / "teacher.pt")
    with pytest.raises(
        DetectorFileError, match=r"teacher\.pt is not a ust detector file \(it is a teacher"
    ):
        Detector.load(tmp_path / "teacher.pt")
    Image.fromarray(texture(8, 8, 0)).save(tmp_path / "image.png")
    with pytest.raises(DetectorFileError, match=r"image\.png is not a ust detector file"):
        Detector.load(tmp_path / "image.png")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(DetectorFileError, match=r"list\.pt is not a ust detector file"):
        Detector.load(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        Detector.load(tmp_path / "missing.pt")


# -------------------------------------------------------------------------------------- export
def test_zoom_in_the_graph_equals_torch_antialiased_resize():
    for h, w in [(70, 50), (32, 32), (20, 90), (1, 5), (257, 31)]:
        x = torch.rand(2, 3, h, w)
        torch.testing.assert_close(zoom(x, SIZE), resize(x, SIZE), atol=2e-6, rtol=0)


@pytest.mark.parametrize("p", [17, 33, 65])
def test_dense_graph_equals_the_dense_network(p):
    torch.manual_seed(0)
    net = patch_net(p, d=16).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = dense_net(net)(x)
        got = _DenseGraph(net, SIZE)(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_export_refuses_a_scale_with_border_padding_it_does_not_implement():
    from ust.detector.export import scale_graph
    from ust.method.students import StudentTeacher, make_students

    torch.manual_seed(0)
    teacher = patch_net(17, d=8).eval()
    model = StudentTeacher(teacher, make_students(teacher, 2))
    model.padding = "reflect"
    with pytest.raises(ValueError, match="p = 17 scale reads 'reflect' padding.*zero padding only"):
        scale_graph(model, SIZE)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_graph_computes_the_predicted_maps(detector_file, tmp_path, fmt):
    detector = Detector.load(detector_file)
    path, side = export_detector(detector, tmp_path / f"detector.{fmt}", fmt)
    assert side == thresholds_path(path) and side.name == f"detector.{fmt}.thresholds.json"
    info = json.loads(side.read_text())
    assert info["threshold"] == detector.threshold and info["rule"] == "quantile"
    assert info["thresholds"] == detector.calibration.thresholds
    # two thresholds, two meanings: pixels by the rule, images by the false-alarm calibration
    assert info["image_threshold"] == detector.image_threshold
    assert info["false_alarm_rate"] == detector.false_alarm_rate == 0.01
    assert info["detector_sha256"] == detector.sha256
    assert info["input"]["shape"] == ["batch", 3, "height", "width"]
    # dynamic batch and size: the graph was traced at 32 × 32, batch 1
    for shape in [(2, 3, 45, 38), (1, 3, SIZE, SIZE), (3, 3, 20, 71)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        maps, scores = run_exported(path, fmt, x)
        reference = detector.predict(x)
        assert maps.shape == (shape[0], *shape[2:]) and scores.shape == (shape[0],)
        # 1e-4 of the map's magnitude: float32 rounding, amplified by 1/v_σ in ẽ + ṽ
        assert max_rel_diff(maps, reference.maps) < 1e-4
        np.testing.assert_allclose(scores, maps.reshape(shape[0], -1).max(1), rtol=1e-6)
        # the exported path decides as Detector.predict: at the stored image threshold and at one
        # between the scores (so that both decisions occur)
        np.testing.assert_array_equal(scores > info["image_threshold"], reference.anomalous)
        middle = float(np.median(reference.scores)) + 1e-3
        np.testing.assert_array_equal(scores > middle, reference.scores > middle)


def test_onnx_with_a_fixed_input_size(detector, tmp_path):
    import onnx

    path, side = export_detector(detector, tmp_path / "fixed.onnx", "onnx", fixed_size=(40, 44))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ["batch", 3, 40, 44]
    assert json.loads(side.read_text())["input"]["shape"] == ["batch", 3, 40, 44]
    x = torch.rand(2, 3, 40, 44)
    maps, _ = run_exported(path, "onnx", x)
    assert max_rel_diff(maps, detector.predict(x).maps) < 1e-4
    with pytest.raises(Exception):  # noqa: B017  (onnxruntime's own error type)
        run_exported(path, "onnx", torch.rand(1, 3, 41, 44))
    with pytest.raises(ValueError, match="ONNX only"):
        export_detector(detector, tmp_path / "fixed.ts", "torchscript", fixed_size=(40, 44))


def test_graph_module_in_eager_mode_equals_predict(detector):
    x = torch.rand(2, 3, 29, 51)
    with torch.no_grad():
        maps, scores = DetectorGraph(detector)(x)
    assert max_rel_diff(maps.numpy(), detector.predict(x).maps) < 1e-4
