"""MVTec LOCO AD chapter (thesis ch. 6–7): the Student–Teacher and GCAD at two receptive fields on a
tiny offline scene set, their multiscale fusion, resume, and the notebook's views."""

import json

import numpy as np
import pytest
import torch

from ust.data.loco import validate_loco_category
from ust.data.loco_scenes import make_loco_set
from ust.eval.spro import evaluate_loco
from ust.experiments.loco import LocoRunSettings, run_loco_multiscale, run_loco_scale
from ust.experiments.protocol import load_maps
from ust.method.gcad import GCADConfig
from ust.method.networks import patch_net
from ust.train.fit import FitSettings
from ust.train.gcad import GCADFitSettings, GCADTrainingConfig
from ust.train.students import StudentTrainingConfig

CAT = "tray"
SIZE = 64
SETTINGS = LocoRunSettings(
    st=FitSettings(image_size=SIZE, students=2, training=StudentTrainingConfig(epochs=1)),
    gcad=GCADFitSettings(
        model=GCADConfig(image_size=SIZE, unet_depth=3, unet_width=4, encoder_channels=(4,) * 5),
        training=GCADTrainingConfig.for_budget(2, batch_size=4),
    ),
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loco")
    make_loco_set(
        root, [CAT], image_size=SIZE, n_train=4, n_validation=2, n_test_good=2, n_test_per_kind=1
    )
    return root


def _teacher(p):
    torch.manual_seed(p)
    return patch_net(p, d=8)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for p in (17, 33):
        gcad = SETTINGS.gcad if p == 17 else None  # GCAD at one scale only: fused where it ran
        settings = LocoRunSettings(SETTINGS.st, gcad)
        out[p] = (base / f"p{p}", run_loco_scale(data, CAT, _teacher(p), base / f"p{p}", settings))
    return out


def test_scale_run_scores_both_methods_with_au_spro(data, runs):
    folder, result = runs[17]
    assert set(result) == {"st", "gcad"} and set(runs[33][1]) == {"st"}
    index = validate_loco_category(data, CAT)
    for method, metrics in result.items():
        written = json.loads((folder / method / "metrics.json").read_text())
        assert written["au_spro"] == pytest.approx(metrics["au_spro"])
        spro = written["localization"]["auc_spro"]
        assert set(spro) == {"structural_anomalies", "logical_anomalies", "mean"}
        assert set(spro["mean"]) == {"0.01", "0.05", "0.1", "0.3", "1.0"}
        assert written["au_spro"] == pytest.approx(spro["mean"]["0.05"])
        # the protocol's number equals the metric on the saved maps and the dataset's regions
        maps = load_maps(folder / method / "maps", CAT, index.test)
        regions = [index.regions(s) for s in index.test]
        subsets = [s.defect for s in index.test]
        again = evaluate_loco(maps, regions, subsets)["localization"]["auc_spro"]
        for subset, limits in spro.items():
            assert again[subset] == pytest.approx(limits, abs=1e-12)
        assert (folder / method / "thresholds.json").is_file()
    val_maps = list((folder / "st" / "val_maps" / CAT / "validation" / "good").glob("*.tiff"))
    assert len(val_maps) == 2


def test_finished_scale_runs_are_reused(data, runs, monkeypatch):
    import ust.train.fit
    import ust.train.gcad

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(ust.train.fit, "train_students", forbidden)
    monkeypatch.setattr(ust.train.gcad, "train_gcad", forbidden)
    folder, first = runs[17]
    again = run_loco_scale(data, CAT, _teacher(17), folder, SETTINGS)
    for method in first:
        assert again[method]["au_spro"] == pytest.approx(first[method]["au_spro"])


def test_multiscale_fuses_each_method_where_it_ran(data, runs, tmp_path):
    out = tmp_path / "ms"
    result = run_loco_multiscale({p: runs[p][0] for p in runs}, data, CAT, out)
    assert result["st"]["scales"] == [17, 33] and result["gcad"]["scales"] == [17]
    table = json.loads((out / "table.json").read_text())
    assert list(table["st"]) == ["17", "33", "multiscale"] and list(table["gcad"]) == [
        "17",
        "multiscale",
    ]
    # GCAD at one scale: its fusion is that scale's map
    index = validate_loco_category(data, CAT)
    single = load_maps(runs[17][0] / "gcad" / "maps", CAT, index.test)
    fused = load_maps(out / "gcad" / "maps", CAT, index.test)
    for a, b in zip(single, fused):
        np.testing.assert_allclose(a, b)
    assert table["gcad"]["multiscale"]["au_spro_mean"] == pytest.approx(
        table["gcad"]["17"]["au_spro_mean"]
    )
    with pytest.raises(FileNotFoundError, match="has not finished"):
        run_loco_multiscale({17: runs[17][0], 65: tmp_path / "none"}, data, CAT, tmp_path / "x")


def test_views_show_maps_curves_and_the_thesis(data, runs, tmp_path):
    from ust.report.views import loco as view

    out = tmp_path / "ms"
    run_loco_multiscale({p: runs[p][0] for p in runs}, data, CAT, out)
    index = validate_loco_category(data, CAT)
    rows = view.first_of_each_region_defect(index)
    names = [name for name, _ in rows]
    assert names[-1] == "good" and len(set(names)) == len(names)
    assert {"missing_pin", "extra_pin", "wrong_colour", "scratch"} <= set(names)
    fig = view.maps(data, CAT, out)
    assert len(fig.axes) == 3 * len(rows)
    assert len(view.spro_curves(data, CAT, out).axes) == 2
    table = view.paper_comparison(CAT, out)
    assert list(table["paper"]) == [0.626, 0.701]  # the thesis' means: not like for like
    assert "GCAD" in view.ours_vs_paper(CAT, out)


def test_ust_evaluate_reproduces_the_pipeline_numbers(data, runs, tmp_path, capsys):
    from ust.cli import main

    folder, result = runs[17]
    for method in ("st", "gcad"):
        out = tmp_path / method
        argv = ["evaluate", "--maps", str(folder / method / "maps"), "--data-root", str(data)]
        assert main([*argv, "--category", CAT, "--out", str(out)]) == 0
        written = json.loads((out / "metrics.json").read_text())
        assert written["au_spro"] == pytest.approx(result[method]["au_spro"], abs=1e-12)
        ours, pipeline = (m["localization"]["auc_spro"] for m in (written, result[method]))
        for subset in pipeline:
            assert ours[subset] == pytest.approx(pipeline[subset], abs=1e-12)
    assert "au_spro" in capsys.readouterr().out


def test_readme_table_reads_the_fused_runs(data, runs, tmp_path):
    from ust.report.tables_loco import loco_tables

    out = tmp_path / "loco_multiscale" / CAT
    result = run_loco_multiscale({p: runs[p][0] for p in runs}, data, CAT, out)
    text, summary = loco_tables(tmp_path / "loco_multiscale")
    assert summary == {m: {CAT: pytest.approx(result[m]["au_spro"])} for m in ("st", "gcad")}
    spro = result["gcad"]["localization"]["auc_spro"]
    row = f"| GCAD, {CAT} | {spro['structural_anomalies']['0.05']:.3f} |"
    assert row in text
    assert "| S-T, thesis | 0.402 | 0.626 | 0.717 | 0.836 | 0.937 |" in text
