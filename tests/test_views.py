"""The notebook views of ust.report.views (what each chapter notebook shows), the HTML renderer and
the stage helpers behind them, on tiny fake result folders: figures with the expected axes, tables
with the expected columns and values read from the files and from ust.report.published, and the
generated ours-vs-paper sentences quoting those numbers."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import ust.report.views as views
import ust.stages.shared as stages
from ust.data.mvtec import anomaly_map_path, save_anomaly_map, validate_category
from ust.data.synthetic import make_synthetic_mvtec
from ust.experiments.params import load_params
from ust.paths import ROOT
from ust.report.published import (
    IGD_TABLE1,
    MULTISCALE,
    PAPER_PER_CLASS,
    PAPER_TABLE1,
    PAPER_TABLE2,
    PAPER_TABLE3,
    TABLE2_METHODS,
)
from ust.report.tables_mvtec import CATEGORY_FIGURES, draw_category_figures
from ust.report.views import comparison_table, figure_png, overview
from ust.report.views import mds as mds_view
from ust.report.views import multiscale as multiscale_view
from ust.report.views import mvtec as mvtec_view
from ust.report.views import oneclass as oneclass_view
from ust.report.views import teacher as teacher_view
from ust.stages.html import render_notebooks
from ust.stages.oneclass import write_scores


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------------ common


def test_comparison_table_layout_and_not_in_paper_note():
    table = comparison_table(
        [
            {"quantity": "a", "ours": 0.5, "paper": 0.75, "source": "[P] Table 3"},
            {"quantity": "b", "ours": 0.25},
        ]
    )
    assert list(table.columns) == ["ours", "paper", "ours − paper", "paper source", "note"]
    assert table.loc["a", "ours − paper"] == pytest.approx(-0.25)
    assert table.loc["a", "note"] == "" and table.loc["a", "paper source"] == "[P] Table 3"
    assert math.isnan(table.loc["b", "paper"]) and table.loc["b", "note"] == "not in the paper"


def test_figures_get_an_inline_png_formatter(monkeypatch):
    fig = Figure()
    assert figure_png(fig) is None  # nothing drawn
    fig.subplots().plot([0, 1])
    assert figure_png(fig).startswith(b"\x89PNG")
    registered = {}
    formatter = SimpleNamespace(for_type=lambda cls, fn: registered.update({cls: fn}))
    shell = SimpleNamespace(display_formatter=SimpleNamespace(formatters={"image/png": formatter}))
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    assert views.enable_inline_figures()
    assert registered == {Figure: figure_png}
    monkeypatch.setattr("IPython.get_ipython", lambda: None)
    assert not views.enable_inline_figures()


# ----------------------------------------------------------------------------------------- teacher


@pytest.fixture
def teacher_run(tmp_path):
    out = tmp_path / "teacher"
    metrics = {
        "patch_size": 33,
        "losses": "mc",
        "iterations": 3,
        "triplet_accuracy_random_init": 0.641,
        "triplet_accuracy_trained": 0.975,
    }
    _write(out / "metrics.json", metrics)
    pd.DataFrame(
        {
            "step": [1, 2, 3],
            "loss": [3.0, 2.0, 1.0],
            "loss_m": [2.0, 1.5, 0.5],
            "loss_c": [1, 0.5, 0.5],
        }
    ).to_csv(out / "losses.csv", index=False)
    return out


def test_teacher_views(teacher_run):
    fig = teacher_view.loss_curves(teacher_run)
    assert len(fig.axes) == 3 and (teacher_run / "loss_curves.png").stat().st_size > 0
    acc = teacher_view.triplet_accuracy(teacher_run)
    assert acc["triplet accuracy"].tolist() == [0.641, 0.975]
    assert acc["iterations"].tolist() == [0, 3]
    paper = load_params(ROOT / "profiles/paper.yaml")["teacher"]
    table = teacher_view.paper_comparison(teacher_run, SimpleNamespace(batch_size=8))
    assert table.loc["iterations", "paper"] == paper["iterations"]
    assert table.loc["batch size", "ours"] == 8
    assert (
        table.loc["students on (m,c): mean ROC-AUC, MNIST", "paper"]
        == PAPER_TABLE1["Ours (m,c)"]["mnist"]
    )
    text = teacher_view.ours_vs_paper(teacher_run)
    assert "0.641" in text and "0.975" in text and f"{paper['iterations']} iterations" in text
    assert f"{PAPER_TABLE1['Ours (m,c)']['cifar10']:.4f}" in text
    assert teacher_view.paper_row("kmc") == "Ours (k,m,c)"


# ---------------------------------------------------------------------------------------- oneclass


def _oneclass_folder(out, dataset, cls, aucs):
    """Result JSONs (``{(method, teacher): auc}``) and a scores.npz of one class; returns labels."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20), np.ones(60)].astype(int)
    scores = {}
    for (method, teacher), auc in aucs.items():
        key = f"{method}:{teacher}" if teacher else method
        scores[key] = labels * auc + rng.normal(0, 0.4, len(labels))
        name = f"students-{teacher}.json" if method == "students" else f"{method}.json"
        record = {
            "kind": "ust.oneclass_result",
            "dataset": dataset,
            "class": cls,
            "class_name": str(cls),
            "method": method,
            "teacher_config": teacher,
            "auc": auc,
            "n_test": len(labels),
            "n_test_anomalous": int(labels.sum()),
        }
        _write(out / name, record)
    _write(out / "metrics.json", {"auc": {}})  # not a result file: ignored
    data = SimpleNamespace(
        test_labels=torch.from_numpy(labels), test_classes=torch.from_numpy(labels * 5)
    )
    write_scores(out / "scores.npz", data, scores)
    return labels, scores


AUCS = {("students", "mc"): 0.9, ("1nn", "mc"): 0.8, ("1nn_pixels", ""): 0.7, ("igd", ""): 0.6}


def test_oneclass_scores_roc_curves_and_mnist_comparison(tmp_path):
    labels, scores = _oneclass_folder(tmp_path, "mnist", 3, AUCS)
    read_labels, read = oneclass_view.read_scores(tmp_path)
    assert read_labels.tolist() == labels.tolist() and set(read) == set(scores)
    np.testing.assert_allclose(read["students:mc"], scores["students:mc"], rtol=1e-6)
    fig = oneclass_view.roc_curves(tmp_path)
    assert len(fig.axes) == 1
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0].startswith("students:mc (AUC") and len(legend) == len(scores)

    table = oneclass_view.paper_comparison(tmp_path)
    mnist = PAPER_PER_CLASS["mnist"]
    assert table.index[0] == "students:mc ROC-AUC"
    assert table.loc["students:mc ROC-AUC", "paper"] == mnist["Ours (m,c)"][0][3]
    assert table.loc["students:mc ROC-AUC", "ours"] == 0.9
    assert table.loc["1nn:mc ROC-AUC", "paper"] == mnist["1-NN"][0][3]
    assert "(kc) teacher" in table.loc["1nn:mc ROC-AUC", "note"]
    assert table.loc["igd ROC-AUC", "paper"] == IGD_TABLE1["Scratch / Ours (IGD)"]["mnist"]
    assert "mean over the ten classes" in table.loc["igd ROC-AUC", "note"]
    assert math.isnan(table.loc["1nn_pixels ROC-AUC", "paper"])
    assert table.loc["OCGAN (published only)", "paper"] == mnist["OCGAN"][0][3]

    text = oneclass_view.ours_vs_paper(tmp_path)
    diff = 0.9 - mnist["Ours (m,c)"][0][3]
    assert "ROC-AUC 0.900" in text and f"{mnist['Ours (m,c)'][0][3]:.3f}" in text
    assert f"{diff:+.3f}" in text and "80 test images (60 anomalous)" in text


def test_oneclass_fashion_mnist_compares_with_igd_table1_means(tmp_path):
    _oneclass_folder(tmp_path, "fashion_mnist", 0, AUCS)
    table = oneclass_view.paper_comparison(tmp_path)
    assert math.isnan(table.loc["students:mc ROC-AUC", "paper"])
    assert table.loc["igd ROC-AUC", "paper"] == IGD_TABLE1["Scratch / Ours (IGD)"]["fashion_mnist"]
    fashion = IGD_TABLE1["SSL / Ours (IGD)"]["fashion_mnist"]
    assert table.loc["SSL / Ours (IGD) (published only)", "paper"] == fashion
    assert "print no number" in oneclass_view.ours_vs_paper(tmp_path)


# ------------------------------------------------------------------------------------------- mvtec


@pytest.fixture(scope="module")
def mvtec_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec_data")
    make_synthetic_mvtec(
        root, ["brick"], image_size=32, n_train=2, n_test_good=1, n_test_defect_per_type=1
    )
    return root


def _run_folder(out, data_root, category, p, au_pro, offset=0.0):
    """A finished single-scale run: maps (value = offset + row index), PRO curve, thresholds."""
    index = validate_category(data_root, category)
    for i, s in enumerate(index.test):
        save_anomaly_map(
            anomaly_map_path(out / "maps", category, s.defect, s.image_id),
            np.full(s.size, offset + i, dtype=np.float32),
        )
    fpr = np.linspace(0, 1, 11)
    (out / "pro_curve.csv").write_text(
        "fpr,pro\n" + "".join(f"{a},{min(1.0, 2 * a)}\n" for a in fpr)
    )
    _write(
        out / "thresholds.json",
        {
            "max": 3.0,
            "quantile": 2.0,
            "k_sigma": 2.5,
            "max_area": 2.8,
            "segmentation": {"rule": "quantile", "threshold": 2.0},
        },
    )
    metrics = {
        "category": category,
        "au_pro": au_pro,
        "pixel_auroc": 0.7,
        "image_auroc": 0.6,
        "integration_limit": 0.3,
        "p": p,
        "n_test": len(index.test),
    }
    return _write(out / "metrics.json", metrics).parent


def test_single_scale_views(tmp_path, mvtec_data):
    run = _run_folder(tmp_path / "p33", mvtec_data, "brick", 33, 0.5)
    fig = mvtec_view.anomaly_maps(mvtec_data, "brick", run, examples=3)
    assert len(fig.axes) == 3 * 3  # (input, ground truth, map) per row
    assert len(fig.axes[2].child_axes) == 1  # one colour bar (one scale), beside the first row
    limits = {fig.axes[i].images[0].get_clim() for i in (2, 5, 8)}
    assert len(limits) == 1  # one colour scale for every map
    index = validate_category(mvtec_data, "brick")
    shown = mvtec_view.example_samples(index, 3)
    assert not shown[0].is_anomalous and shown[1].defect == index.defect_types[0]

    pro = mvtec_view.pro_curve(run)
    assert len(pro.axes) == 1 and "AU-PRO" in pro.axes[0].get_legend().get_texts()[0].get_text()
    thresholds = mvtec_view.thresholds(run)
    assert list(thresholds.columns) == ["threshold", "rule", "segmentation"]
    assert thresholds.loc["quantile", "threshold"] == 2.0
    assert thresholds["segmentation"].tolist() == [False, True, False, False]

    table = mvtec_view.paper_comparison(run)
    assert math.isnan(table.loc["AU-PRO, brick, p = 33", "paper"])
    assert table.loc["AU-PRO, brick, p = 33", "note"].startswith("not in the paper")
    assert "not in the paper" in mvtec_view.ours_vs_paper(run)


def test_single_scale_comparison_with_table3(tmp_path):
    run = tmp_path / "carpet"
    _write(
        run / "metrics.json",
        {
            "category": "carpet",
            "p": 33,
            "au_pro": 0.8,
            "pixel_auroc": 0.9,
            "image_auroc": 0.7,
            "n_test": 5,
        },
    )
    table = mvtec_view.paper_comparison(run)
    assert table.loc["AU-PRO, carpet, p = 33", "paper"] == PAPER_TABLE3["carpet"][33]
    assert table.loc["AU-PRO, carpet, p = 33", "paper source"] == "[P] Table 3"
    assert table.loc["pixel ROC-AUC, carpet, p = 33", "ours"] == 0.9
    text = mvtec_view.ours_vs_paper(run)
    assert "AU-PRO 0.800" in text and f"{PAPER_TABLE3['carpet'][33]:.3f}" in text
    assert f"{0.8 - PAPER_TABLE3['carpet'][33]:+.3f}" in text


def _multiscale_folder(out, category, scales):
    table = {
        str(p): {"au_pro": 0.1 * i + 0.3, "pixel_auroc": 0.6, "image_auroc": 0.5}
        for i, p in enumerate(scales)
    }
    table[MULTISCALE] = {"au_pro": 0.7, "pixel_auroc": 0.8, "image_auroc": 0.9}
    _write(out / "table.json", table)
    base = {m: {"au_pro": 0.2, "pixel_auroc": 0.5, "image_auroc": 0.5} for m in TABLE2_METHODS[:-1]}
    base["1nn"]["au_pro"] = 0.4
    _write(out / "baselines.json", base)
    _write(out / "ssim_ae.json", {"au_pro": 0.1, "pixel_auroc": 0.4, "image_auroc": 0.3})
    return out


def test_multiscale_tables_chart_and_sentence(tmp_path):
    out = _multiscale_folder(tmp_path / "carpet", "carpet", (17, 33, 65))
    metrics = multiscale_view.metrics_table(out)
    assert list(metrics.columns) == ["au_pro", "pixel_auroc", "image_auroc"]
    assert list(metrics.index[:4]) == ["p = 17", "p = 33", "p = 65", MULTISCALE]
    assert metrics.loc["ssim_ae", "image_auroc"] == 0.3
    table = multiscale_view.paper_comparison("carpet", out)
    assert table.loc["Table 3: p = 17", "paper"] == PAPER_TABLE3["carpet"][17]
    assert table.loc[f"Table 3: {MULTISCALE}", "paper"] == PAPER_TABLE3["carpet"][MULTISCALE]
    for i, method in enumerate(TABLE2_METHODS):
        assert table.loc[f"Table 2: {method}", "paper"] == PAPER_TABLE2["carpet"][i]
    chart = multiscale_view.au_pro_chart("carpet", out)
    assert len(chart.axes) == 1 and len(chart.axes[0].patches) == 4 + len(TABLE2_METHODS)
    text = multiscale_view.ours_vs_paper("carpet", out)
    assert "multiscale AU-PRO 0.700" in text and "best single scale p = 65 (0.500)" in text
    assert "best baseline 1nn (0.400)" in text
    assert f"the paper: multiscale {PAPER_TABLE3['carpet'][MULTISCALE]:.3f}" in text
    other = _multiscale_folder(tmp_path / "grass", "grass", (17,))
    assert multiscale_view.paper_comparison("grass", other)["paper"].isna().all()
    assert "not in the paper" in multiscale_view.ours_vs_paper("grass", other)


def test_draw_category_figures_returns_and_saves_figures(tmp_path, mvtec_data):
    dirs = {p: _run_folder(tmp_path / f"p{p}", mvtec_data, "brick", p, 0.5, p) for p in (17, 33)}
    multi = _run_folder(tmp_path / "multi", mvtec_data, "brick", 0, 0.6)
    figures = draw_category_figures("brick", dirs, multi, data_root=mvtec_data)
    # one row per figure-rule image: the first good one, then the first of every defect type
    rows = 1 + len(validate_category(mvtec_data, "brick").defect_types)
    assert set(figures) == set(CATEGORY_FIGURES)
    titles = [ax.get_ylabel() for ax in figures["figure5"].axes if ax.get_ylabel()]
    assert titles[0].startswith("good")
    assert len(titles) == rows
    assert len(figures["figure1"].axes) == rows * 3
    assert len(figures["figure5"].axes) == rows * (1 + 2 + 1)
    for key in ("figure1", "figure5"):  # one colour scale per category: one bar, first row
        axes = figures[key].axes
        assert sum(len(ax.child_axes) for ax in axes) == 1
        maps = axes[2::3] if key == "figure1" else [a for i, a in enumerate(axes) if i % 4]
        assert len({ax.images[-1].get_clim() for ax in maps}) == 1
    assert len(figures["pro_curves"].axes[0].get_lines()) == 3
    assert all((multi / name).stat().st_size > 0 for name in CATEGORY_FIGURES.values())


# --------------------------------------------------------------------------------------------- mds


def test_mds_views(tmp_path, monkeypatch):
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    mds = load_params(ROOT / "profiles/smoke.yaml")["mds"]
    _write(tmp_path / "metrics.json", {"auc": 0.95, "mds_stress": 12.5})
    embedding = SimpleNamespace(
        is_normal=np.array([True, False, False]),
        e=np.array([1.0, 2.0, 4.0]),
        v=np.array([0.5, 1.0, 0.5]),
    )
    assert mds_view.ev_ratios(embedding) == {"e": 3.0, "v": 1.5}
    table = mds_view.paper_comparison(tmp_path, embedding)
    paper = PAPER_PER_CLASS[mds["dataset"]][f"Ours ({','.join(mds['teacher_losses'])})"][0]
    quantity = f"ROC-AUC, MNIST class {mds['normal_class']}"
    assert table.loc[quantity, "paper"] == paper[mds["normal_class"]]
    assert table.loc["mean e anomalous / normal", "ours"] == 3.0
    assert table.loc["MDS stress", "ours"] == 12.5
    text = mds_view.ours_vs_paper(tmp_path, embedding)
    assert "ROC-AUC 0.950" in text and "3.00×" in text and "1.50×" in text
    hist = mds_view.score_histogram(
        {"scores": np.r_[np.zeros(5), np.ones(5)], "labels": [0] * 5 + [1] * 5}
    )
    assert len(hist.axes) == 1


# ---------------------------------------------------------------------------------------- overview


SUMMARY = {
    "profile": "smoke",
    "teachers": {"p33-mc": {"triplet_accuracy_random_init": 0.6, "triplet_accuracy_trained": 0.9}},
    "oneclass_mean_auc": {"mnist": {"students:mc": 0.97, "1nn:mc": 0.95, "igd": 0.9}},
    "mvtec": {
        "carpet": {
            "p17": {"au_pro": 0.5, "pixel_auroc": 0.6, "image_auroc": 0.7},
            MULTISCALE: {"au_pro": 0.8, "pixel_auroc": 0.9, "image_auroc": 0.95},
        }
    },
}


def test_overview_tables_and_sentence():
    teachers = overview.teachers_table(SUMMARY)
    assert teachers.loc["p33-mc", "triplet_accuracy_trained"] == 0.9
    means = overview.oneclass_means(SUMMARY)
    assert list(means.columns) == ["ours mnist", "paper mnist"]
    assert means.index[0] == "students:mc"
    assert means.loc["students:mc", "paper mnist"] == PAPER_TABLE1["Ours (m,c)"]["mnist"]
    assert means.loc["1nn:mc", "paper mnist"] == PAPER_TABLE1["1-NN"]["mnist"]
    assert means.loc["igd", "paper mnist"] == IGD_TABLE1["Scratch / Ours (IGD)"]["mnist"]
    mvtec = overview.mvtec_table(SUMMARY, "image_auroc")
    assert mvtec.loc["carpet", MULTISCALE] == 0.95 and list(mvtec.columns)[0] == "p17"
    text = overview.ours_vs_paper(SUMMARY)
    assert "MNIST students:mc mean ROC-AUC 0.970" in text
    assert f"{PAPER_TABLE1['Ours (m,c)']['mnist']:.4f}" in text
    assert f"0.800 against its {PAPER_TABLE3['carpet'][MULTISCALE]:.3f}" in text
    assert "make reproduce" in overview.ours_vs_paper(None)
    assert overview.oneclass_means(None).empty and overview.mvtec_table(None).empty


def test_overview_reads_markdown_tables_and_figures(tmp_path, capsys):
    (tmp_path / "t.md").write_text(
        "intro line\n\n#### First (Table 3)\n\nData: x.\n\n| a | b \\| c | d |\n|---|---|---|\n"
        "| x | 0.5 | – |\n| y | 0.25 | 3 |\n\n#### Second\n\n| k |\n|---|\n| 1 |\n"
    )
    tables = overview.markdown_tables(tmp_path / "t.md")
    assert list(tables) == ["First (Table 3)", "Second"]
    first = tables["First (Table 3)"]
    assert list(first.columns) == ["a", "b | c", "d"] and first.attrs["caption"] == "Data: x."
    assert first["b | c"].tolist() == [0.5, 0.25] and math.isnan(first.loc[0, "d"])
    assert tables["Second"]["k"].tolist() == [1]

    assert overview.load_summary(tmp_path) is None
    assert "make reproduce" in capsys.readouterr().out
    _write(tmp_path / "summary.json", SUMMARY)
    assert overview.load_summary(tmp_path) == SUMMARY
    assert "profile `smoke`" in capsys.readouterr().out
    fig = Figure()
    fig.subplots().plot([0, 1])
    fig.savefig(tmp_path / "figure1_mvtec.png")
    assert overview.figure("figure1_mvtec.png", tmp_path).data.startswith(b"\x89PNG")
    assert "not produced yet" in overview.figure("figure4_mds.png", tmp_path)._repr_markdown_()


# -------------------------------------------------------------------------------------------- html


def test_render_notebooks_writes_one_html_per_notebook(tmp_path):
    fig = Figure()
    fig.subplots().plot([0, 1])
    png = figure_png(fig)
    for name in ("a", "b"):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("fig")
        cell.outputs = [
            nbformat.v4.new_output(
                "display_data", data={"image/png": __import__("base64").b64encode(png).decode()}
            )
        ]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# notebook {name}"), cell]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    written = render_notebooks(tmp_path, tmp_path / "html")
    assert [p.name for p in written] == ["a.html", "b.html"]
    html = written[0].read_text()
    assert "notebook a" in html and "data:image/png;base64" in html
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        render_notebooks(tmp_path / "html", tmp_path / "none")


# ------------------------------------------------------------------------------------------ stages


def test_substitutes_only_outside_the_pipeline_outputs(tmp_path, monkeypatch):
    assert not stages.builds_substitutes("results/oneclass/mnist-0")
    assert not stages.builds_substitutes(ROOT / "figures")
    assert not stages.builds_substitutes(None)
    assert stages.builds_substitutes("scratch/oneclass/mnist-0")
    assert stages.builds_substitutes(tmp_path)
    assert stages.substitutes_dir(tmp_path) == tmp_path / "substitutes"

    missing = tmp_path / "no" / "teacher.pt"
    monkeypatch.setattr(stages, "stage_teacher_file", lambda p, losses: missing)
    monkeypatch.setattr(stages, "TEACHERS", str(tmp_path / "no"))
    with pytest.raises(FileNotFoundError, match="dvc repro teacher"):
        stages.stage_teacher(33, "mc", out_dir="results/oneclass/mnist-0")
    called = []
    monkeypatch.setattr(stages, "substitute_teacher", lambda p, losses, out: called.append(out))
    monkeypatch.setattr("ust.method.teacher.load_teacher", lambda path, device="cpu": "teacher")
    assert stages.stage_teacher(33, "mc", out_dir=tmp_path) == "teacher"
    assert called == [tmp_path]
