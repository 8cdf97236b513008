"""One-class protocol (students, feature baselines, IGD, result files, Figure 4) on a tiny IDX fixture.

The fixture is written in the real MNIST on-disk format (gzip-compressed IDX files in torchvision's
``MNIST/raw`` layout) and read through :func:`ust.data.oneclass.load_oneclass`. Class 0 (the normal
class) is three horizontal bars with 1 px of jitter; the nine other classes are structurally different
(vertical bars, blobs, diagonals, checkerboards, rings, crosses, noise, squares), so a working protocol
separates them even with a random teacher and a few student epochs.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from idx_format import write_idx_gz
from sklearn.metrics import roc_auc_score

from ust.baselines.igd import IGDConfig, IGDLocalSettings
from ust.data.oneclass import load_oneclass, zoom_to_patch
from ust.experiments.mds import embed_jointly, ensemble_vectors, mds_embedding, save_embedding
from ust.experiments.oneclass import (
    FEATURE_BASELINES,
    OneClassBaselineSettings,
    OneClassStudentSettings,
    collect_results,
    igd_images,
    pixel_nn_scores,
    result_record,
    run_feature_baselines,
    run_igd,
    run_students,
    student_scores,
    teacher_descriptors,
    write_class_result,
)
from ust.method.networks import patch_net
from ust.report.figures_oneclass import MDSFigureData, draw_mds
from ust.train.students import StudentTrainingConfig

N_TRAIN_PER_CLASS = 40
N_TEST_PER_CLASS = 10


# ------------------------------------------------------------------------------------------------
# fixture: IDX gz files with an obvious anomaly structure


def _bars(rng: np.random.Generator, s: int) -> np.ndarray:
    img = np.zeros((s, s))
    for y0 in (6, 13, 20):
        y = y0 + rng.integers(-1, 2)
        img[y : y + 2, 4 : s - 4] = rng.uniform(0.8, 1.0)
    return img


def _draw(c: int, rng: np.random.Generator, s: int = 28) -> np.ndarray:
    yy, xx = np.mgrid[:s, :s]
    if c == 0:
        return _bars(rng, s)
    if c == 1:
        return _bars(rng, s).T
    if c == 2:
        cy, cx = rng.uniform(8, 20, 2)
        r = rng.uniform(4, 7)
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    if c == 3:
        return (np.abs(yy - xx - rng.integers(-4, 5)) < 2).astype(float)
    if c == 4:
        k = rng.integers(3, 5)
        return ((yy // k + xx // k) % 2).astype(float)
    if c == 5:
        return (np.abs(np.hypot(yy - 13.5, xx - 13.5) - rng.uniform(6, 10)) < 1.5).astype(float)
    if c == 6:
        img = np.zeros((s, s))
        cy, cx = rng.integers(10, 18, 2)
        img[cy - 1 : cy + 2, 4 : s - 4] = 1
        img[4 : s - 4, cx - 1 : cx + 2] = 1
        return img
    if c == 7:
        return rng.uniform(0, 1, (s, s))
    if c == 8:
        img = np.zeros((s, s))
        a, b = rng.integers(4, 10), rng.integers(14, 24)
        img[a:b, a:b] = 1
        return img
    return (np.abs(yy + xx - 27 - rng.integers(-4, 5)) < 2).astype(float)


def _split(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10), n_per_class)
    imgs = np.stack([_draw(int(c), rng) for c in labels])
    return (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("oneclass")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n, seed in (("train", N_TRAIN_PER_CLASS, 1), ("t10k", N_TEST_PER_CLASS, 2)):
        imgs, labels = _split(n, seed)
        write_idx_gz(raw / f"{split}-images-idx3-ubyte.gz", imgs)
        write_idx_gz(raw / f"{split}-labels-idx1-ubyte.gz", labels)
    # 25 % validation: 10 images, enough for a stable e/v normalisation on this tiny set
    return load_oneclass("mnist", root, 0, val_fraction=0.25)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return patch_net(33, d=16)


@pytest.fixture(scope="module")
def run(data, teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    settings = OneClassStudentSettings(
        students=2, training=StudentTrainingConfig(epochs=3, batch_size=8, lr=1e-3), seed=0
    )
    result = run_students(data, teacher, settings, progress=False, teacher_config="kc")
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "run_students changed the teacher"
    return result


# ------------------------------------------------------------------------------------------------
# students


def test_fixture_has_the_expected_protocol(data):
    assert data.train.shape[1:] == (1, 28, 28)
    assert len(data.train) + len(data.val) == N_TRAIN_PER_CLASS and len(data.val) == 10
    assert len(data.test) == 10 * N_TEST_PER_CLASS
    assert torch.equal(data.test_labels, (data.test_classes != 0).long())


def test_students_protocol_separates_obvious_anomalies(run, data):
    assert run["auc"] > 0.95
    assert run["method"] == "students" and run["teacher_config"] == "kc" and run["class"] == 0
    scores, labels = run["scores"], run["labels"]
    assert scores.shape == (len(data.test),) and np.isfinite(scores).all()
    np.testing.assert_array_equal(labels, data.test_labels.numpy())
    assert run["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert (run["e"] >= 0).all() and (run["v"] >= 0).all()
    assert len(run["history"]) == 2 and all(len(h) == 3 for h in run["history"])
    assert run["model"].dense is False and run["model"].m == 2


def test_scores_are_normalised_on_the_validation_split(run, data):
    """ẽ and ṽ have mean 0 on the validation images by construction
    (docs/decisions.md#score-normalisation)."""
    val = student_scores(run["model"], data.val, run["score_stats"])
    assert abs(val["score"].mean()) < 1e-6
    stats = run["stats"]
    assert val["e"].mean() == pytest.approx(stats["e_mean"], rel=1e-5)
    assert val["v"].std() == pytest.approx(stats["v_std"], rel=1e-4)
    # the test scores are the same normalisation of the raw e, v
    expected = (run["e"] - stats["e_mean"]) / stats["e_std"] + (run["v"] - stats["v_mean"]) / stats[
        "v_std"
    ]
    np.testing.assert_allclose(run["scores"], expected, rtol=1e-6, atol=1e-6)


def test_teacher_descriptors_are_the_student_targets_input(run, data, teacher):
    x = data.test[:7]
    desc = teacher_descriptors(teacher, x, p=33, batch_size=3)
    assert desc.shape == (7, 16) and desc.dtype == np.float32
    ref = run["model"].teacher_features(zoom_to_patch(x, 33))[:, :, 0, 0].numpy()
    np.testing.assert_allclose(desc, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="p=33"):
        teacher_descriptors(teacher, x, p=65)


# ------------------------------------------------------------------------------------------------
# baselines


def test_feature_baselines_smoke(data, teacher):
    details: dict = {}
    aucs = run_feature_baselines(
        data, teacher, OneClassBaselineSettings(ae_epochs=1), details=details
    )
    assert list(aucs) == list(FEATURE_BASELINES)
    for method, auc in aucs.items():
        assert 0.0 <= auc <= 1.0, method
        assert details[method]["scores"].shape == (len(data.test),)
        assert np.isfinite(details[method]["scores"]).all()
    assert details["n_fit"] == len(data.train) + len(data.val)  # all normal training images
    assert aucs["1nn"] > 0.9  # distances in descriptor space already separate this fixture
    with pytest.raises(ValueError, match="unknown feature baseline"):
        run_feature_baselines(data, teacher, OneClassBaselineSettings(methods=("knn",)))


def test_pixel_nn_reference_is_the_raw_nearest_neighbour_distance(data):
    scores = pixel_nn_scores(data)
    normal = torch.cat([data.train, data.val]).flatten(1).double()
    test = data.test.flatten(1).double()
    expected = torch.cdist(test, normal).min(1).values.numpy()
    assert scores.shape == (len(data.test),) and scores.dtype == np.float64
    # float32 ‖a‖² − 2ab + ‖b‖² distances: absolute error ~1e-3 near duplicates
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=2e-3)
    assert roc_auc_score(data.test_labels.numpy(), scores) > 0.95


def test_igd_images_pad_is_lossless_and_resize_keeps_range(data):
    x = data.test[:4]
    padded = igd_images(x, (32, 32), "pad")
    assert padded.shape == (4, 3, 32, 32)
    assert torch.equal(padded[:, 0, 2:30, 2:30], x[:, 0])
    assert padded[:, :, :2].abs().sum() == 0 and padded[:, :, :, 30:].abs().sum() == 0
    resized = igd_images(x, (32, 32), "resize")
    assert resized.shape == (4, 3, 32, 32) and 0 <= resized.min() and resized.max() <= 1
    cifar_like = torch.rand(2, 3, 32, 32)
    assert torch.equal(igd_images(cifar_like, (32, 32)), cifar_like)


def test_igd_smoke_one_epoch(data, tmp_path):
    cfg = IGDConfig(image_size=32, batch_size=8, epochs=1, progress=False, seed=0)
    res = run_igd(data, cfg, "cpu", tmp_path / "igd", max_train=16)
    assert 0.0 <= res["auc"] <= 1.0
    assert res["scores"].shape == (len(data.test),) and np.isfinite(res["scores"]).all()
    assert res["n_fit"] == 16 and len(res["history"]) == 1
    assert (tmp_path / "igd" / "igd_last.pt").is_file()
    assert res["auc_global"] == res["auc"] and "auc_local" not in res  # global model only
    assert res["local"] is None and res["history_local"] is None


def test_igd_local_model_and_fused_score(data, tmp_path, monkeypatch):
    import ust.experiments.oneclass as oc

    cfg = IGDConfig(image_size=32, batch_size=8, epochs=1, progress=False, seed=0)
    seen = {}
    real = oc.fused_scores

    def spy(glob, local, images, stride, batch_size):
        out = real(glob, local, images, stride, batch_size)
        seen.setdefault("parts", []).append(out)
        seen["local_size"], seen["stride"] = local.image_size, stride
        return out

    monkeypatch.setattr(oc, "fused_scores", spy)
    local = IGDLocalSettings(patch=16, stride=8)
    res = run_igd(data, cfg, "cpu", tmp_path / "igd", max_train=16, local=local)
    assert seen["local_size"] == (16, 16) and seen["stride"] == 8
    glob = np.concatenate([p["global"] for p in seen["parts"]])
    loc = np.concatenate([p["local"] for p in seen["parts"]])
    np.testing.assert_array_equal(res["scores"], glob + loc)  # s = s_G + s_L (Eq. 13)
    labels = data.test_labels.numpy()
    assert res["auc"] == pytest.approx(roc_auc_score(labels, glob + loc))
    assert res["auc_global"] == pytest.approx(roc_auc_score(labels, glob))
    assert res["auc_local"] == pytest.approx(roc_auc_score(labels, loc))
    assert res["local"] == {"patch": 16, "stride": 8} and len(res["history_local"]) == 1
    assert (tmp_path / "igd_local" / "igd_last.pt").is_file()  # its own checkpoint
    saved = json.loads(write_class_result(res, tmp_path / "igd.json").read_text())
    assert saved["auc_local"] == res["auc_local"] and saved["local"] == res["local"]


# ------------------------------------------------------------------------------------------------
# result files


def test_result_json_round_trip(run, data, tmp_path):
    out = tmp_path / "results"
    write_class_result(run, out / "mnist" / "students-kc" / "class0.json")
    record = json.loads((out / "mnist" / "students-kc" / "class0.json").read_text())
    assert record["auc"] == run["auc"] and record["teacher_config"] == "kc"
    for dropped in ("scores", "e", "v", "labels", "classes", "model", "score_stats"):
        assert dropped not in record
    assert record["training"]["epochs"] == 3 and record["stats"] == run["stats"]
    base = result_record(data, "1nn", 0.25, teacher_config="kc", seconds=1.5)
    write_class_result(base, out / "mnist" / "1nn-kc" / "class0.json")
    write_class_result(result_record(data, "igd", 0.5), out / "mnist" / "igd" / "class0.json")
    (out / "dvc_metrics.json").write_text('{"auc": 1.0}')  # not a result file: ignored

    df = collect_results(out)
    assert list(df.columns[:5]) == ["dataset", "method", "teacher_config", "class", "auc"]
    assert len(df) == 3
    got = {(m, t): a for m, t, a in zip(df["method"], df["teacher_config"], df["auc"])}
    assert got == {("students", "kc"): run["auc"], ("1nn", "kc"): 0.25, ("igd", ""): 0.5}
    assert (df["class"] == 0).all() and (df["dataset"] == "mnist").all()

    write_class_result(base, out / "copy" / "class0.json")
    with pytest.raises(ValueError, match="several result files"):
        collect_results(out)
    with pytest.raises(ValueError, match="lacks"):
        write_class_result({"auc": 0.5}, tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------------
# Figure 4


def test_mds_figure(run, data, teacher, tmp_path):
    path = tmp_path / "fig" / "figure4.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        arrays = mds_embedding(
            teacher,
            run["model"],
            data,
            normal_class=0,
            seed=0,
            stats=run["score_stats"],
            scores=run["scores"],
        )
        d = MDSFigureData.load(save_embedding(arrays, tmp_path / "embedding.npz"))
        fig = draw_mds(d, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d.dataset == data.name and list(d.class_names) == [str(c) for c in data.class_names]
    assert d.embedding.shape == (20, 2) and np.isfinite(d.embedding).all()
    assert d.teacher_xy.shape == d.student_xy.shape == (10, 2)
    np.testing.assert_array_equal(d.classes, np.arange(10))
    np.testing.assert_array_equal(d.is_normal, np.arange(10) == 0)
    assert np.isfinite(d.radii).all() and (d.radii >= 0).all()
    np.testing.assert_allclose(d.radii, np.sqrt(d.v))
    # e and v of the embedded images agree with the protocol's raw scores of the same images
    np.testing.assert_allclose(d.e, run["e"][d.indices], rtol=1e-4)
    np.testing.assert_allclose(d.v, run["v"][d.indices], rtol=1e-4, atol=1e-8)
    # the normal image is regressed best: its teacher-student segment is the shortest
    seg = np.linalg.norm(d.teacher_xy - d.student_xy, axis=1)
    assert np.argmin(d.e) == 0 and np.argmin(seg) == 0
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="normal_class"):
        mds_embedding(None, run["model"], data, normal_class=3)
    with pytest.raises(ValueError, match="differs"):
        mds_embedding(patch_net(33, d=16), run["model"], data)


def test_ensemble_vectors_and_joint_embedding(run, data):
    vec = ensemble_vectors(run["model"], data.test[:5])
    assert vec["predictions"].shape == (2, 5, 16) and vec["targets"].shape == (5, 16)
    np.testing.assert_allclose(vec["mean"], vec["predictions"].mean(0))
    coords, stress = embed_jointly(vec["targets"], vec["mean"], seed=0)
    assert coords.shape == (10, 2) and stress >= 0
    again, _ = embed_jointly(vec["targets"], vec["mean"], seed=0)
    np.testing.assert_allclose(coords, again)  # seeded: reproducible
