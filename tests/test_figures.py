"""Summary figures of ust.report (seaborn): the one-class ROC-AUC heatmap, the MVTec AU-PRO heatmap,
the score distributions (also Figure 4's bottom panel), and the report stage writing
figures/oneclass_auc.png and figures/mvtec_au_pro.png only when their results exist."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from test_report_mvtec import use_params, write_mvtec_results

from ust.data.oneclass import CLASS_NAMES
from ust.experiments.oneclass import RESULT_KIND
from ust.report import readme_sync
from ust.report.figures_oneclass import MDSFigureData, _draw, score_distributions
from ust.report.figures_summary import mvtec_metric_heatmap, oneclass_auc_heatmap
from ust.report.published import MULTISCALE, TABLE2_METHODS
from ust.report.tables_mvtec import mvtec_metric_frame


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


def _cells(ax) -> np.ma.MaskedArray:
    """The values of a seaborn heatmap (row-major), NaN cells masked."""
    return ax.collections[0].get_array()


def _oneclass_results(seed: int = 0) -> pd.DataFrame:
    """collect_results-shaped rows: MNIST (students:kc all of classes 0-2, 1nn:kc classes 0 and 2,
    igd class 1) and Fashion-MNIST (students:kc classes 0 and 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, method, teacher, classes in (
        ("mnist", "igd", "", [1]),
        ("mnist", "1nn", "kc", [0, 2]),
        ("mnist", "students", "kc", [0, 1, 2]),
        ("fashion_mnist", "students", "kc", [0, 1]),
    ):
        for c in classes:
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "teacher_config": teacher,
                    "class": c,
                    "auc": float(rng.uniform(0.5, 1.0)),
                    "source": "s",
                    "description": f"{dataset}; normal class {c}",
                    "path": f"{dataset}/{method}/{c}.json",
                }
            )
    return pd.DataFrame(rows)


def _auc(df, dataset, method, teacher, c) -> float:
    sel = df[
        (df.dataset == dataset)
        & (df.method == method)
        & (df.teacher_config == teacher)
        & (df["class"] == c)
    ]
    return float(sel["auc"].iloc[0])


# ------------------------------------------------------------------------------------------------
# one-class heatmap


def test_oneclass_auc_heatmap_one_panel_per_dataset(tmp_path):
    df = _oneclass_results()
    fig = oneclass_auc_heatmap(df, tmp_path / "auc.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3  # Fashion-MNIST, MNIST and one shared colour bar
    fashion, mnist, cbar = fig.axes
    assert cbar.get_ylabel() == "ROC-AUC"
    assert fashion.get_title().startswith("Fashion-MNIST") and mnist.get_title().startswith("MNIST")

    # MNIST: rows in the tables' order (students, then 1-NN, then IGD), columns = classes run
    assert _ticks(mnist.get_yticklabels()) == ["students:kc", "1nn:kc", "igd"]
    assert _ticks(mnist.get_xticklabels()) == ["0", "1", "2"]
    assert _cells(mnist).shape == (3, 3) and _cells(mnist).mask.sum() == 3  # 3 runs missing
    expected = [
        f"{_auc(df, 'mnist', m, t, c):.3f}"
        for m, t, classes in (
            ("students", "kc", [0, 1, 2]),
            ("1nn", "kc", [0, 2]),
            ("igd", "", [1]),
        )
        for c in classes
    ]
    assert _texts(mnist) == expected  # annotated AUCs, row by row, blanks skipped
    # Fashion-MNIST: class names as column labels
    assert _ticks(fashion.get_xticklabels()) == list(CLASS_NAMES["fashion_mnist"][:2])
    assert _texts(fashion) == [
        f"{_auc(df, 'fashion_mnist', 'students', 'kc', c):.3f}" for c in (0, 1)
    ]
    # fixed colour range, whatever the values
    assert fashion.collections[0].get_clim() == (0.5, 1.0)
    with Image.open(tmp_path / "auc.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError, match="no one-class results"):
        oneclass_auc_heatmap(df.iloc[:0])


# ------------------------------------------------------------------------------------------------
# MVTec heatmap


def test_mvtec_metric_heatmap_from_result_folders(tmp_path):
    cats = ["carpet", "brick", "grid"]
    got = write_mvtec_results(tmp_path, cats, [17, 33, 65], skip={("grid", MULTISCALE)})
    frame = mvtec_metric_frame(
        cats,
        [17, 33, 65],
        results_dir=tmp_path / "mvtec",
        multiscale_dir=tmp_path / "mvtec_multiscale",
    )
    fig = mvtec_metric_heatmap(frame, tmp_path / "au_pro.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colour bar
    ax, cbar = fig.axes
    assert cbar.get_ylabel() == "AU-PRO (FPR ≤ 0.3)"
    columns = ["p = 17", "p = 33", "p = 65", MULTISCALE, *TABLE2_METHODS]
    assert _ticks(ax.get_xticklabels()) == columns
    assert _ticks(ax.get_yticklabels()) == cats
    assert _cells(ax).shape == (len(cats), len(columns))
    keys = ["p17", "p33", "p65", MULTISCALE, *TABLE2_METHODS]
    expected = [f"{got[c, k]:.3f}" for c in cats for k in keys if (c, k) in got]
    assert _texts(ax) == expected and len(expected) == 3 * len(columns) - 7  # grid: p only
    assert ax.collections[0].get_clim() == (0.0, 1.0)
    assert (tmp_path / "au_pro.png").stat().st_size > 0
    fig = mvtec_metric_heatmap(frame[["p = 17"]], metric="image_auroc")
    assert fig.axes[1].get_ylabel() == "image ROC-AUC" and len(fig.axes[0].texts) == 3
    with pytest.raises(ValueError, match="no MVTec results"):
        mvtec_metric_heatmap(frame.iloc[:0])


# ------------------------------------------------------------------------------------------------
# score distributions


def _bar_sums(ax) -> list[float]:
    return sorted(float(sum(b.get_height() for b in c)) for c in ax.containers)


def test_score_distributions_split_normal_and_anomalous(tmp_path):
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 1, 40), rng.normal(3, 1, 15)]
    labels = np.r_[np.zeros(40, int), np.ones(15, int)]
    fig = score_distributions(scores, labels, tmp_path / "scores.png", bins=12)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert _bar_sums(ax) == [15.0, 40.0]  # every sample counted once, in its group
    assert all(len(c) == 12 for c in ax.containers)  # common bins
    assert _ticks(ax.get_legend().get_texts()) == ["normal", "anomalous"]
    assert ax.get_xlabel() == "anomaly score"
    assert (tmp_path / "scores.png").stat().st_size > 0
    # MVTec image scores, with a density per group, into a panel of another figure
    host = Figure()
    panel = host.subplots()
    out = score_distributions([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1], ax=panel, bins=4, kde=True)
    assert out is host and len(host.axes) == 1 and len(panel.lines) == 2
    with pytest.raises(ValueError, match="as many labels as scores"):
        score_distributions([0.1, 0.2], [0])


def test_figure4_bottom_panel_is_the_score_distribution():
    rng = np.random.default_rng(1)
    n = 4
    scores = rng.random(30)
    labels = (np.arange(30) % 3 == 0).astype(int)
    d = MDSFigureData(
        indices=np.arange(n),
        classes=np.arange(n),
        is_normal=np.arange(n) == 0,
        embedding=rng.normal(size=(2 * n, 2)),
        e=rng.random(n),
        v=rng.random(n),
        radii=rng.random(n) * 0.1,
        stress=0.0,
        scores=scores,
        labels=labels,
        class_names=np.array([str(i) for i in range(n)]),
        dataset="mnist",
        normal_class_name="0",
    )
    fig = _draw(d, bins=10)
    assert len(fig.axes) == 2
    hist = fig.axes[1]
    assert _bar_sums(hist) == [10.0, 20.0]
    assert hist.get_ylabel() == "images" and "ẽ + ṽ" in hist.get_xlabel()


# ------------------------------------------------------------------------------------------------
# the report stage


def _write_oneclass_results(root, df: pd.DataFrame) -> None:
    for i, rec in enumerate(df.to_dict("records")):
        path = root / rec["dataset"] / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {k: rec[k] for k in ("dataset", "method", "teacher_config", "class", "auc")}
        path.write_text(json.dumps({"kind": RESULT_KIND, **record, "source": "s"}))


def test_report_writes_the_summary_figures_when_results_exist(tmp_path, monkeypatch):
    use_params(monkeypatch, tmp_path, ["brick", "grass"], [17, 33])
    _write_oneclass_results(tmp_path / "oneclass", _oneclass_results())
    write_mvtec_results(tmp_path, ["brick", "grass"], [17, 33])
    kw = {
        "oneclass_dir": tmp_path / "oneclass",
        "mvtec_dir": tmp_path / "mvtec",
        "multiscale_dir": tmp_path / "mvtec_multiscale",
    }
    out = tmp_path / "figures"
    written = readme_sync.write_summary_figures(out, **kw)
    assert written == {
        "oneclass_auc.png": out / "oneclass_auc.png",
        "mvtec_au_pro.png": out / "mvtec_au_pro.png",
    }
    for path in written.values():
        with Image.open(path) as im:
            assert im.format == "PNG"
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # no temp files left

    # results absent: both skipped, stale copies removed, nothing raised
    empty = {k: tmp_path / "none" / k for k in kw}
    assert readme_sync.write_summary_figures(out, **empty) == dict.fromkeys(written)
    assert list(out.iterdir()) == []


def test_write_tables_calls_the_summary_figures(tmp_path, monkeypatch):
    calls = []
    for name, value in {
        "teachers_table": "t\n",
        "oneclass_tables": ("o\n", {}),
        "mvtec_report_tables": ("m\n", {}),
        "loco_report_tables": ("l\n", {}),
        "timings_table": "s\n",
    }.items():
        monkeypatch.setattr(readme_sync, name, lambda value=value: value)
    monkeypatch.setattr(readme_sync, "mvtec_figures", lambda out: calls.append("mvtec"))
    monkeypatch.setattr(readme_sync, "write_summary_figures", lambda out: calls.append(out))
    monkeypatch.setattr("shutil.copyfile", lambda src, dst: calls.append("copy"))
    monkeypatch.setattr(readme_sync, "resolve", lambda p: tmp_path / p)
    readme_sync.write_tables(tmp_path / "figs")
    assert calls == ["mvtec", tmp_path / "figs", "copy"]
    assert (tmp_path / "figs" / "mvtec.md").read_text() == "m\n"
    assert (tmp_path / "figs" / "loco.md").read_text() == "l\n"


def test_snapshot_copies_the_summary_figures_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("UST_PARAMS", str(readme_sync.ROOT / "profiles/smoke.yaml"))
    for name in readme_sync.SNAPSHOT_FILES:
        (tmp_path / name).write_text(name)
    (tmp_path / "oneclass_auc.png").write_text("heatmap")
    stale = tmp_path / "smoke" / "mvtec_au_pro.png"
    stale.parent.mkdir()
    stale.write_text("old")
    dest = readme_sync.snapshot(tmp_path)
    assert (dest / "oneclass_auc.png").read_text() == "heatmap"
    assert not stale.exists()
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [*readme_sync.SNAPSHOT_FILES, "oneclass_auc.png"]
    )
