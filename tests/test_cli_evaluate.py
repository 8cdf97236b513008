"""`ust evaluate` on tiny generated trees: saved maps of `ust mvtec` give its AU-PRO, a fitted
detector gives the metrics of its own `Detector.predict` maps plus its decisions, a LOCO-layout
tree gives `evaluate_loco`'s numbers, and a missing map is named."""

import json

import numpy as np
import pytest
from test_cli_mvtec import save_random_teacher

from ust.cli import main
from ust.data.loco import validate_loco_category
from ust.data.loco_scenes import make_loco_set
from ust.data.mvtec import save_anomaly_map, validate_category
from ust.data.synthetic import make_synthetic_mvtec
from ust.detector import Detector
from ust.eval.spro import evaluate_loco
from ust.experiments.protocol import compute_metrics, ground_truth, map_path

SMALL = ["--epochs", "1", "--students", "2", "--no-progress"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An MVTec-layout `brick` (6 train, 2 good + 5 defective test images), a LOCO-layout `tray`
    and a random p = 17 teacher."""
    root = tmp_path_factory.mktemp("evaluate")
    make_synthetic_mvtec(
        root / "mvtec",
        categories=("brick",),
        image_size=32,
        n_train=6,
        n_test_good=2,
        n_test_defect_per_type=1,
    )
    make_loco_set(
        root / "loco",
        ("tray",),
        image_size=48,
        n_train=3,
        n_validation=2,
        n_test_good=3,
        n_test_per_kind=1,
    )
    save_random_teacher(root / "teachers" / "p17.pt", 17)
    return root


@pytest.fixture(scope="module")
def model(work):
    """`ust fit` (p = 17 only) on the MVTec-layout training images."""
    out = work / "detector.pt"
    argv = ["fit", "--data-root", str(work / "mvtec"), "--category", "brick", "--out", str(out)]
    argv += ["--teacher-dir", str(work / "teachers"), "--patch-sizes", "17"]
    assert main(argv + ["--image-size", "16", *SMALL]) == 0
    return out


def evaluate_argv(source: str, path, data_root, category, out) -> list[str]:
    return [
        "evaluate",
        source,
        str(path),
        "--data-root",
        str(data_root),
        "--category",
        category,
        "--out",
        str(out),
        "--no-progress",
    ]


def read(out):
    return json.loads((out / "metrics.json").read_text())


def test_saved_maps_of_ust_mvtec_give_its_au_pro(work, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["mvtec", "--data-root", str(work / "mvtec"), "--category", "brick", "--out", str(run)]
    argv += ["--patch-sizes", "17", "--image-size", "16", "--teacher-dir", str(work / "teachers")]
    assert main(argv + SMALL) == 0
    written = read(run)["p17"]
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(evaluate_argv("--maps", run / "p17" / "maps", work / "mvtec", "brick", out)) == 0
    result = read(out)
    for key in ("au_pro", "pixel_auroc", "image_auroc"):
        assert result[key] == written[key]
    assert result["integration_limit"] == 0.3 and result["category"] == "brick"
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert f"au_pro {written['au_pro']:.4f}" in line and str(out / "metrics.json") in line


def test_model_equals_the_metrics_of_detector_predict(work, model, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = evaluate_argv("--model", model, work / "mvtec", "brick", out)
    assert main(argv + ["--batch-size", "3"]) == 0
    result = read(out)
    index = validate_category(work / "mvtec", "brick")
    detector = Detector.load(model)
    pred = detector.predict([s.path for s in index.test])
    expected = compute_metrics(pred.maps, ground_truth(index, index.test), 0.3)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9)
    d = result["decisions"]
    good = [not s.is_anomalous for s in index.test]
    assert d["image_threshold"] == pytest.approx(detector.image_threshold)
    assert d["pixel_threshold"] == pytest.approx(detector.threshold)
    assert d["good_images"] == 2 and d["defective_images"] == 5
    assert d["good_rejected"] == int(sum(pred.anomalous[good]))
    assert d["defective_accepted"] == int(sum(~pred.anomalous[~np.array(good)]))
    assert d["observed_false_alarm_rate"] == d["good_rejected"] / 2
    assert sum(d["defective_accepted_by_defect"].values()) == d["defective_accepted"]
    assert result["model_sha256"] == detector.sha256
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "good image(s) rejected" in line


def write_loco_maps(folder, index, seed=0):
    rng = np.random.default_rng(seed)
    maps = [rng.random(s.size).astype(np.float32) for s in index.test]
    for sample, m in zip(index.test, maps):
        save_anomaly_map(map_path(folder, index.category, sample), m)
    return maps


def test_loco_maps_equal_evaluate_loco(work, tmp_path, capsys):
    index = validate_loco_category(work / "loco", "tray")
    maps = write_loco_maps(tmp_path / "maps", index)
    assert (tmp_path / "maps" / "tray" / "test" / "logical_anomalies" / "000.tiff").is_file()
    out = tmp_path / "eval"
    assert main(evaluate_argv("--maps", tmp_path / "maps", work / "loco", "tray", out)) == 0
    result = read(out)
    expected = evaluate_loco(maps, [index.regions(s) for s in index.test], index.subsets)
    assert result["localization"] == expected["localization"]
    assert result["classification"] == expected["classification"]
    assert result["au_spro"] == expected["localization"]["auc_spro"]["mean"]["0.05"]
    assert "au_pro" not in result
    assert "au_spro (FPR 0.05)" in capsys.readouterr().out


def test_loco_model_reports_structure_and_decisions(work, model, tmp_path):
    out = tmp_path / "eval"
    assert main(evaluate_argv("--model", model, work / "loco", "tray", out)) == 0
    result = read(out)
    assert set(result["localization"]["auc_spro"]) == {
        "structural_anomalies",
        "logical_anomalies",
        "mean",
    }
    d = result["decisions"]
    assert d["good_images"] == 3 and d["defective_images"] == 6
    assert set(d["defective_accepted_by_defect"]) == {"logical_anomalies", "structural_anomalies"}


def test_missing_map_is_named(work, tmp_path, capsys):
    index = validate_loco_category(work / "loco", "tray")
    write_loco_maps(tmp_path / "maps", index)
    missing = map_path(tmp_path / "maps", "tray", index.test[-1])
    missing.unlink()
    out = tmp_path / "eval"
    assert main(evaluate_argv("--maps", tmp_path / "maps", work / "loco", "tray", out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(missing) in err and str(index.test[-1].path) in err
    assert not (out / "metrics.json").exists()
    code = main(evaluate_argv("--maps", tmp_path / "maps" / "tray", work / "loco", "tray", out))
    assert code == 2 and "--maps must hold <category>/test" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for option in ("--maps", "--model", "--data-root", "--category", "--out", "--batch-size"):
        assert option in text


def test_a_false_alarm_rate_above_the_calibrations_promise_is_explained():
    """7 of 10 good images rejected where 2 validation images promise ≤ 1/3: P(X ≥ 7) for
    X ~ Binomial(10, 1/3) is 0.0197, so the line says why; 1 of 10 is no surprise."""
    from math import comb

    from ust.cli.evaluate import summary
    from ust.detector.evaluation import false_alarm_p_value

    exact = sum(comb(10, k) * (1 / 3) ** k * (2 / 3) ** (10 - k) for k in range(7, 11))
    assert false_alarm_p_value(7, 10, 1 / 3) == pytest.approx(exact, rel=1e-9)
    assert false_alarm_p_value(0, 0, 0.1) is None

    def result(rejected):
        return {
            "category": "brick",
            "au_pro": 0.7,
            "pixel_auroc": 0.8,
            "image_auroc": 0.9,
            "decisions": {
                "image_threshold": 5.0,
                "good_rejected": rejected,
                "good_images": 10,
                "observed_false_alarm_rate": rejected / 10,
                "target_false_alarm_rate": 0.01,
                "promised_false_alarm_rate": 1 / 3,
                "calibration_images": 2,
                "false_alarm_p_value": false_alarm_p_value(rejected, 10, 1 / 3),
                "defective_accepted": 1,
                "defective_images": 15,
            },
        }

    assert summary(result(7)).endswith(
        "7 of 10 good image(s) rejected (false-alarm rate 0.700, target 0.010), 1 of 15 defective "
        "image(s) accepted; more than the ≤ 0.333 that 2 validation image(s) promise (binomial "
        "p = 0.02): these good images score higher than the validation images did; calibrate on "
        "good images like them (--val-images)"
    )
    assert summary(result(1)).endswith("1 of 15 defective image(s) accepted")
