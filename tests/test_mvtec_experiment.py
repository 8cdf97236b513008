"""MVTec experiment drivers (paper §4.2): single scale, multiscale, resume, baselines,
figures. Tiny settings: 32 px synthetic images zoomed to 16 px for the networks (so every map is
really upsampled to the original size, docs/decisions.md#evaluation-resolution), d = 16,
2 students, 2 epochs."""

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ust.experiments.mvtec_baselines as mbl
import ust.experiments.mvtec_multiscale as msc
import ust.experiments.mvtec_single as mx
import ust.experiments.protocol as protocol
import ust.train.fit
from ust.baselines.ssim_ae import SSIMAEConfig
from ust.data.dataset import load_images
from ust.data.mvtec import MVTecLayoutError, anomaly_map_path, load_anomaly_map, validate_category
from ust.data.synthetic import make_synthetic_mvtec
from ust.eval.metrics import pro_curve, trapezoid
from ust.experiments.protocol import EvaluationSettings
from ust.method.networks import patch_net
from ust.method.students import fit_target_statistics, load_ensemble
from ust.train.fit import CHECKPOINT, FitSettings
from ust.train.students import StudentTrainingConfig

CAT = "brick"
ORIG = 32  # side of the synthetic images (original resolution)
NET = 16  # network input side
TRAINING = StudentTrainingConfig(epochs=2)
METRICS = ("au_pro", "pixel_auroc", "image_auroc")


def _teacher(p: int):
    torch.manual_seed(p)
    return patch_net(p, d=16)


def _single(data, p, out, on_epoch=None, **settings):
    return mx.run_single_scale(
        data,
        CAT,
        _teacher(p),
        out,
        mx.MVTecRunSettings(
            FitSettings(
                image_size=NET, students=2, training=TRAINING, seed=settings.pop("seed", 0)
            ),
            EvaluationSettings(**settings),
        ),
        progress=False,
        on_epoch=on_epoch,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    make_synthetic_mvtec(
        root, categories=(CAT,), image_size=ORIG, n_train=6, n_test_good=2, n_test_defect_per_type=1
    )
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {p: (base / f"p{p}", _single(data, p, base / f"p{p}")) for p in (17, 33)}


def _maps(out: Path, index) -> list[np.ndarray]:
    return [
        load_anomaly_map(anomaly_map_path(out / "maps", CAT, s.defect, s.image_id))
        for s in index.test
    ]


def test_single_scale_end_to_end(data, runs):
    out, result = runs[17]
    index = validate_category(data, CAT)
    written = json.loads((out / "metrics.json").read_text())
    assert written == result
    for k in METRICS:
        assert 0.0 <= written[k] <= 1.0
    assert written["n_train"] + written["n_val"] == 6 and written["n_val"] == 1
    assert written["n_test"] == len(index.test) == 7 and written["trained_now"]

    # One float32 TIFF per test image, official layout, at the ORIGINAL resolution.
    tiffs = sorted((out / "maps").rglob("*.tiff"))
    assert len(tiffs) == len(index.test)
    for s, m in zip(index.test, _maps(out, index)):
        assert (out / "maps" / CAT / "test" / s.defect / f"{s.path.stem}.tiff").is_file()
        assert m.dtype == np.float32 and m.shape == (ORIG, ORIG) == s.size
        assert np.isfinite(m).all()

    # Acceptance criterion: the metrics recomputed from the TIFFs equal metrics.json.
    again = msc.recompute_metrics_from_tiffs(out / "maps", data, CAT)
    for k in METRICS:
        assert abs(again[k] - written[k]) <= 1e-9

    # Validation statistics, ensemble, thresholds and segmentations.
    stats = json.loads((out / "score_stats.json").read_text())
    assert stats["e_std"] > 0 and stats["v_std"] > 0
    model, meta = load_ensemble(out / "ensemble.pt")
    assert model.m == 2 and model.p == 17 and meta["score_stats"] == stats
    assert not (out / CHECKPOINT).exists()  # training state removed once the ensemble is saved
    thr = json.loads((out / "thresholds.json").read_text())
    val_maps = [load_anomaly_map(q) for q in (out / "val_maps").rglob("*.tiff")]
    assert len(val_maps) == 1 and val_maps[0].shape == (ORIG, ORIG)
    assert thr["segmentation"]["rule"] == "quantile"
    assert thr["quantile"] == pytest.approx(np.quantile(val_maps[0].astype(np.float64), 0.99))
    assert thr["max"] == pytest.approx(float(val_maps[0].max()))
    for s, m in zip(index.test, _maps(out, index)):
        seg = np.asarray(
            Image.open(out / "segmentation" / CAT / "test" / s.defect / f"{s.path.stem}.png")
        )
        assert seg.shape == s.size
        np.testing.assert_array_equal(seg > 0, m > thr["quantile"])

    # PRO curve for DVC plots: 1001 points on [0, 1], monotone, area close to the exact AU-PRO.
    with open(out / "pro_curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    fpr = np.array([float(r["fpr"]) for r in rows])
    pro = np.array([float(r["pro"]) for r in rows])
    assert len(rows) == protocol.PRO_CURVE_POINTS and fpr[0] == 0 and fpr[-1] == 1
    assert np.all(np.diff(pro) >= -1e-12) and pro[-1] == pytest.approx(1.0)
    assert trapezoid(fpr, pro, x_max=0.3) / 0.3 == pytest.approx(written["au_pro"], abs=0.02)


def test_upsampling_is_bilinear_to_original_size(data, runs):
    out, _ = runs[33]
    index = validate_category(data, CAT)
    model, meta = load_ensemble(out / "ensemble.pt")
    from ust.method.scoring import ScoreStats
    from ust.method.students import anomaly_scores

    s = index.test[-1]
    small = anomaly_scores(model, load_images([s.path], NET), ScoreStats(**meta["score_stats"]))[0]
    assert small.shape == (NET, NET)
    expected = torch.nn.functional.interpolate(
        small[None, None], size=s.size, mode="bilinear", align_corners=False
    )[0, 0]
    saved = load_anomaly_map(anomaly_map_path(out / "maps", CAT, s.defect, s.image_id))
    np.testing.assert_allclose(saved, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_multiscale_is_mean_of_scales(data, runs, tmp_path):
    out = tmp_path / "multi"
    result = msc.run_multiscale({p: runs[p][0] for p in runs}, data, CAT, out, progress=False)
    index = validate_category(data, CAT)
    fused = _maps(out, index)
    per_scale = [_maps(runs[p][0], index) for p in (17, 33)]
    for i, m in enumerate(fused):
        np.testing.assert_allclose(m, (per_scale[0][i] + per_scale[1][i]) / 2, rtol=1e-6, atol=1e-6)
    assert result["scales"] == [17, 33]
    assert json.loads((out / "metrics.json").read_text()) == result
    again = msc.recompute_metrics_from_tiffs(out / "maps", data, CAT)
    for k in METRICS:
        assert abs(again[k] - result[k]) <= 1e-9
    table = json.loads((out / "table.json").read_text())
    assert list(table) == ["17", "33", "multiscale"]
    assert table["17"]["au_pro"] == runs[17][1]["au_pro"]
    assert table["multiscale"]["au_pro"] == result["au_pro"]
    with open(out / "table.csv") as fh:
        assert [r["scale"] for r in csv.DictReader(fh)] == ["17", "33", "multiscale"]
    # Fused validation maps give the thresholds and the segmentations.
    val = [load_anomaly_map(q) for q in (out / "val_maps").rglob("*.tiff")]
    thr = json.loads((out / "thresholds.json").read_text())
    assert len(val) == 1 and thr["max"] == pytest.approx(float(val[0].max()))
    assert len(list((out / "segmentation").rglob("*.png"))) == len(index.test)


def test_multiscale_stage_finds_the_scales_of_params(data, runs, tmp_path, monkeypatch):
    """Stage `mvtec_multiscale`: scales from `mvtec.patch_sizes` under <root>/<category>/p<p>,
    Table 2 baselines on the teacher of `mvtec_baselines.p`."""
    import yaml

    from ust.paths import ROOT
    from ust.stages import mvtec_multiscale as stage

    single = tmp_path / "single"
    for p in runs:
        (single / CAT).mkdir(parents=True, exist_ok=True)
        (single / CAT / f"p{p}").symlink_to(runs[p][0], target_is_directory=True)
    params = yaml.safe_load((ROOT / "profiles/smoke.yaml").read_text())
    params["mvtec"] = {"categories": [CAT], "patch_sizes": [17, 33]}
    params["mvtec_data"].update(root=str(data), synthetic=False)
    params["mvtec_train"].update(image_size=NET)
    params["mvtec_baselines"].update(methods=["1nn"], n_1nn=30, p=33, ssim_ae_epochs=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("UST_PARAMS", str(tmp_path / "params.yaml"))
    loaded = []

    def fake_teacher(p, losses, device="cpu", *, out_dir=None):
        loaded.append((p, losses))
        return _teacher(p)

    monkeypatch.setattr(stage, "stage_teacher", fake_teacher)
    out = tmp_path / "multiscale"
    result = stage.run_mvtec_multiscale(CAT, single, out, progress=False)
    assert loaded == [(33, params["mvtec_train"]["teacher_losses"])]
    assert set(result) == {"multiscale", "baselines"}
    assert result["multiscale"]["scales"] == [17, 33]
    assert list(json.loads((out / "table.json").read_text())) == ["17", "33", "multiscale"]
    assert list(json.loads((out / "baselines.json").read_text())) == ["1nn"]
    assert stage.single_scale_dirs(CAT, single) == {p: single / CAT / f"p{p}" for p in (17, 33)}


def _broken(data: Path, tmp_path: Path, how: str) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(data, root)
    if how == "no_ground_truth":
        shutil.rmtree(root / CAT / "ground_truth")
    else:
        for f in (root / CAT / "train" / "good").iterdir():
            f.unlink()
    return root


@pytest.mark.parametrize("how", ["no_ground_truth", "empty_train"])
def test_broken_layout_raises_before_writing(data, tmp_path, how):
    root = _broken(data, tmp_path, how)
    calls = {
        "single": lambda out: _single(root, 17, out),
        "multi": lambda out: msc.run_multiscale({17: tmp_path / "x"}, root, CAT, out),
        "baselines": lambda out: mbl.run_feature_baselines(
            root, CAT, _teacher(17), out, progress=False
        ),
        "ssim": lambda out: mbl.run_ssim_ae_baseline(
            root, CAT, out, mbl.SSIMAEBaselineSettings(image_size=128), progress=False
        ),
    }
    for name, call in calls.items():
        out = tmp_path / f"out_{name}"
        with pytest.raises(MVTecLayoutError):
            call(out)
        assert not out.exists(), name


def test_resume_after_completion_does_not_retrain(data, runs, monkeypatch):
    out, first = runs[17]
    before = _maps(out, validate_category(data, CAT))

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(ust.train.fit, "train_students", forbidden)
    monkeypatch.setattr(ust.train.fit, "fit_target_statistics", forbidden)
    second = _single(data, 17, out)
    assert not second["trained_now"] and second["train_seconds"] == 0.0
    for k in METRICS:
        assert second[k] == first[k]
    for a, b in zip(before, _maps(out, validate_category(data, CAT))):
        np.testing.assert_array_equal(a, b)


def test_interrupted_training_resumes_exactly(data, runs, tmp_path):
    out = tmp_path / "interrupted"

    class Stop(Exception):
        pass

    def stop_after_first_epoch(epoch, losses):
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        _single(data, 33, out, on_epoch=stop_after_first_epoch)
    assert (out / CHECKPOINT).is_file() and not (out / "metrics.json").exists()
    resumed = _single(data, 33, out)
    reference = runs[33][1]
    for k in METRICS:
        assert resumed[k] == reference[k]
    index = validate_category(data, CAT)
    for a, b in zip(_maps(out, index), _maps(runs[33][0], index)):
        np.testing.assert_array_equal(a, b)


def test_other_configuration_in_same_folder_is_refused(data, runs):
    out, _ = runs[33]
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(ValueError, match="different configuration"):
        _single(data, 33, out, seed=1)
    with pytest.raises(ValueError, match="segmentation rule"):
        _single(data, 33, out / "y", segmentation_rule="otsu")
    assert (out / "metrics.json").read_bytes() == before
    assert not (out / "y").exists()


def test_feature_baselines_tiny(data, tmp_path):
    out = tmp_path / "baselines"
    tiny = mbl.FeatureBaselineSettings(
        image_size=NET,
        methods=mbl.BASELINE_METHODS,
        n_1nn=30,
        n_fit=120,
        ae_epochs=1,
        ae_batch=32,
        chunk_size=100,
    )
    res = mbl.run_feature_baselines(
        data, CAT, _teacher(17), out, replace(tiny, save_maps=True), progress=False
    )
    assert list(res) == list(mbl.BASELINE_METHODS)
    assert json.loads((out / "baselines.json").read_text()) == res
    assert res["1nn"]["n_fit"] == 30 and res["ocsvm"]["n_fit"] == 120
    assert res["ocsvm"]["solver"] == "nystroem"  # the paper's sizes need the approximation
    index = validate_category(data, CAT)
    for name in mbl.BASELINE_METHODS:
        for k in METRICS:
            assert 0.0 <= res[name][k] <= 1.0
        maps = [
            load_anomaly_map(anomaly_map_path(out / f"maps_{name}", CAT, s.defect, s.image_id))
            for s in index.test
        ]
        assert all(m.shape == s.size for m, s in zip(maps, index.test))
        assert all(np.isfinite(m).all() for m in maps) and np.std(maps[-1]) > 0
    # 1-NN scores are Euclidean distances (≥ 0, bilinear upsampling keeps them ≥ 0).
    nn_maps = [load_anomaly_map(q) for q in (out / "maps_1nn").rglob("*.tiff")]
    assert min(float(m.min()) for m in nn_maps) >= 0
    # Deterministic for a seed: a second run of two methods gives the same numbers.
    two = replace(tiny, methods=("1nn", "vae"), chunk_size=65_536)
    again = mbl.run_feature_baselines(
        data, CAT, _teacher(17), tmp_path / "again", two, progress=False
    )
    for name in ("1nn", "vae"):
        assert all(again[name][k] == res[name][k] for k in METRICS)
    with pytest.raises(ValueError, match="unknown baseline"):
        mbl.run_feature_baselines(
            data, CAT, _teacher(17), out, replace(tiny, methods=("knn",)), progress=False
        )
    with pytest.raises(ValueError, match="OC-SVM solver"):
        mbl.run_feature_baselines(
            data, CAT, _teacher(17), out, replace(tiny, ocsvm_solver="svc"), progress=False
        )


def test_feature_baselines_exact_ocsvm_solver(data, tmp_path):
    tiny = mbl.FeatureBaselineSettings(
        image_size=NET, methods=("ocsvm",), n_fit=120, ocsvm_solver="exact"
    )
    res = mbl.run_feature_baselines(data, CAT, _teacher(17), tmp_path, tiny, progress=False)
    assert res["ocsvm"]["solver"] == "exact" and 0.0 <= res["ocsvm"]["au_pro"] <= 1.0


def test_descriptor_sample_is_seeded_and_normalised(data):
    model = mbl._teacher_only(_teacher(17), torch.device("cpu"))
    imgs = load_images(validate_category(data, CAT).train, NET)
    fit_target_statistics(model, imgs)
    a = mbl._sample_descriptors(model, imgs, 50, 3, batch_size=4, progress=False)
    b = mbl._sample_descriptors(model, imgs, 50, 3, batch_size=2, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # same pixels for any batch size
    assert a.shape == (50, 16)
    # Every sampled row is one of the normalised dense descriptors.
    allf = model.targets(imgs).permute(0, 2, 3, 1).reshape(-1, 16).numpy()
    d = ((a[:, None, :] - allf[None]) ** 2).sum(-1).min(1)
    assert d.max() < 1e-8
    full = mbl._sample_descriptors(model, imgs, 10**9, 3, batch_size=4, progress=False)
    assert len(full) == len(allf)
    np.testing.assert_allclose(full.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(full.std(0), 1, atol=1e-3)


def test_raw_nn_floor_needs_no_teacher(data, tmp_path):
    """``raw_nn``: the raw-pixel patch nearest-neighbour floor, run without a teacher, written to
    baselines.json (and maps_raw_nn/) like every other Table 2 baseline."""
    out = tmp_path / "raw"
    raw = mbl.FeatureBaselineSettings(
        image_size=NET, methods=("raw_nn",), raw_patch=5, raw_grid=3, raw_bank=200, save_maps=True
    )
    res = mbl.run_feature_baselines(data, CAT, None, out, raw, progress=False)
    assert list(res) == ["raw_nn"]
    assert json.loads((out / "baselines.json").read_text()) == res
    rec = res["raw_nn"]
    for k in METRICS:
        assert 0.0 <= rec[k] <= 1.0
    assert (rec["n_fit"], rec["patch"], rec["grid"], rec["stride"]) == (200, 5, 3, 2)
    assert rec["padding"] == "reflect" and rec["fit_seconds"] >= 0 and rec["score_seconds"] >= 0
    index = validate_category(data, CAT)
    maps = [
        load_anomaly_map(anomaly_map_path(out / "maps_raw_nn", CAT, s.defect, s.image_id))
        for s in index.test
    ]
    assert all(m.shape == s.size and m.min() >= 0 for m, s in zip(maps, index.test))
    again = msc.recompute_metrics_from_tiffs(out / "maps_raw_nn", data, CAT)
    assert all(abs(again[k] - rec[k]) <= 1e-9 for k in METRICS)
    # The same numbers when a teacher is given and a teacher baseline runs first.
    both = replace(raw, methods=("1nn", "raw_nn"), n_1nn=30, save_maps=False)
    mixed = mbl.run_feature_baselines(
        data, CAT, _teacher(17), tmp_path / "mixed", both, progress=False
    )
    assert list(mixed) == ["1nn", "raw_nn"]
    assert all(mixed["raw_nn"][k] == rec[k] for k in (*METRICS, "n_fit"))
    # Clear errors, before anything is written.
    with pytest.raises(ValueError, match="need a teacher"):
        mbl.run_feature_baselines(data, CAT, None, tmp_path / "x", both, progress=False)
    with pytest.raises(ValueError, match="larger than image_size"):
        mbl.run_feature_baselines(
            data, CAT, None, tmp_path / "y", replace(raw, raw_patch=17), progress=False
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_ssim_ae_baseline_tiny(data, tmp_path):
    out = tmp_path / "ssim"
    cfg = SSIMAEConfig(latent_dim=8, epochs=1, batch_size=4, num_patches=4)
    settings = mbl.SSIMAEBaselineSettings(
        image_size=128, stride=64, autoencoder=cfg, save_maps=True, texture_categories=(CAT,)
    )
    res = mbl.run_ssim_ae_baseline(data, CAT, out, settings, progress=False)
    assert json.loads((out / "ssim_ae.json").read_text()) == res
    assert res["patch"] == 128 and res["stride"] == 64 and res["protocol"] == "crops"
    for k in METRICS:
        assert 0.0 <= res[k] <= 1.0
    index = validate_category(data, CAT)
    for s in index.test:
        m = load_anomaly_map(anomaly_map_path(out / "maps_ssim_ae", CAT, s.defect, s.image_id))
        assert m.shape == s.size and m.min() >= 0.0 and m.max() <= 2.0
    assert (out / "ssim_ae_last.pt").is_file()
    with pytest.raises(ValueError, match="patch"):
        mbl.run_ssim_ae_baseline(data, CAT, out, replace(settings, image_size=64), progress=False)


def _spy_ssim_ae(monkeypatch) -> dict:
    """Record what run_ssim_ae_baseline trains on (images and SSIMAEConfig)."""
    import ust.baselines.ssim_ae as sae

    seen: dict = {}
    real = sae.train_ssim_ae

    def spy(images, config, **kw):
        seen["images"], seen["config"] = images, config
        return real(images, config, **kw)

    monkeypatch.setattr(sae, "train_ssim_ae", spy)
    return seen


def test_ssim_ae_textures_train_on_crops_objects_on_augmented_whole_images(
    data, tmp_path, monkeypatch
):
    """docs/decisions.md#ssim-ae-protocol: a texture category is cropped and evaluated patch-wise,
    any other category is an object: whole images, rotated/translated/mirrored, evaluated whole."""
    seen = _spy_ssim_ae(monkeypatch)
    cfg = SSIMAEConfig(latent_dim=8, epochs=1, batch_size=4, num_patches=4)
    base = mbl.SSIMAEBaselineSettings(image_size=256, stride=64, autoencoder=cfg)
    texture = replace(base, texture_categories=(CAT,))
    res = mbl.run_ssim_ae_baseline(data, CAT, tmp_path / "tex", texture, progress=False)
    assert seen["images"].shape[-2:] == (256, 256)
    assert seen["config"].protocol == "crops" and seen["config"].input_size == 128
    assert seen["config"].latent_dim == 8 and not (seen["config"].hflip or seen["config"].vflip)
    assert (res["protocol"], res["patch"], res["stride"]) == ("crops", 128, 64)
    assert res["augmentation"] is None
    # the same data as an object (the default texture list names only MVTec AD's five)
    obj = replace(base, image_size=128, hflip_categories=(CAT,), object_latent_dim=12)
    assert CAT not in obj.texture_categories
    res = mbl.run_ssim_ae_baseline(data, CAT, tmp_path / "obj", obj, progress=False)
    got = seen["config"]
    assert got.protocol == "whole" and got.input_size == 128 == seen["images"].shape[-1]
    assert (got.latent_dim, got.hflip, got.vflip) == (12, True, False)
    assert (got.max_rotation, got.max_translation) == (3.0, 0.05)
    assert (res["protocol"], res["patch"], res["stride"]) == ("whole", 128, None)
    assert res["augmentation"] == {
        "max_rotation": 3.0,
        "max_translation": 0.05,
        "hflip": True,
        "vflip": False,
    }
    for k in METRICS:
        assert 0.0 <= res[k] <= 1.0
    assert cfg.protocol == "crops" and cfg.latent_dim == 8  # the caller's config is not modified
    with pytest.raises(ValueError, match="whole images"):
        mbl.run_ssim_ae_baseline(
            data, CAT, tmp_path / "x", replace(obj, image_size=64), progress=False
        )


def test_figures(tmp_path):
    from ust.report.figures_mvtec import plot_figure1, plot_pro_curves, plot_receptive_fields

    rng = np.random.default_rng(0)
    images = [rng.random((3, 32, 32)), rng.random((40, 40))]
    masks = [np.zeros((32, 32)), np.pad(np.ones((10, 10)), 15)]
    maps = [rng.random((16, 16)), rng.random((40, 40))]
    fig = plot_figure1(images, masks, maps, tmp_path / "f1.png", titles=["a", "b"])
    assert len(fig.axes) == 2 * 3 + 2  # 3 panels per row + a colour bar per row
    assert len(fig.axes[4].collections) >= 1  # the red outline of the second mask
    fig = plot_receptive_fields(
        images, {17: maps, 33: maps, 65: maps, "multiscale": maps}, tmp_path / "rf.png", masks=masks
    )
    assert [ax.get_title() for ax in fig.axes[:5]] == [
        "input",
        "p = 17",
        "p = 33",
        "p = 65",
        "multiscale",
    ]
    fpr = np.linspace(0, 1, 11)
    fig = plot_pro_curves({"a": (fpr, fpr), "b": (fpr, np.sqrt(fpr))}, tmp_path / "pro.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "a (AU-PRO 0.150)"
    for name in ("f1.png", "rf.png", "pro.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError):
        plot_figure1(images, masks[:1], maps, None)


def test_pro_curve_resampling_handles_vertical_steps():
    # One 2-pixel region (scores 5 and 1.5) among 14 anomaly-free pixels: the exact curve is flat at
    # PRO 0.5 between FPR 1/14 and 2/14, then jumps vertically to 1 at FPR 2/14.
    gt = np.zeros((1, 4, 4), dtype=np.uint8)
    gt[0, 0, :2] = 1
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 0, :2] = [5, 1.5]
    maps[0, 1] = [3, 2, 1, 0.5]
    fpr, pro = protocol.resampled_pro_curve(list(maps), list(gt), n_points=29)  # step 1/28
    exact_f, exact_p = pro_curve(list(maps), list(gt))
    # Resampled points lie on the exact curve (top of a step where the FPR repeats); the old
    # "interpolate to the top of the next step" reading would give 0.75 at FPR 3/28.
    expected = np.r_[np.full(4, 0.5), np.ones(25)]
    np.testing.assert_allclose(pro, expected, atol=1e-12)
    np.testing.assert_allclose(fpr, np.arange(29) / 28)
    assert exact_f[-1] == 1 and exact_p[exact_f == 2 / 14].tolist() == [0.5, 1.0]
    # The area differs from the exact one by at most one grid step times the jump height.
    assert abs(trapezoid(fpr, pro) - trapezoid(exact_f, exact_p)) <= 0.5 / 28 + 1e-12
