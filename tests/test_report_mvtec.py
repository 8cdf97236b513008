"""MVTec tables of ust.report: the paper's numbers typed into ust.report.published reproduce the
recomputed means (docs/decisions.md#published-table-errata), and the tables read the result layout
results/mvtec/<category>/p<p>/ and results/mvtec_multiscale/<category>/ for the scales of the
parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from ust.data.mvtec import CATEGORIES
from ust.experiments.outputs import single_scale_run_dir
from ust.experiments.params import load_params
from ust.paths import ROOT
from ust.report import readme_sync
from ust.report.published import (
    MULTISCALE,
    PAPER_TABLE2,
    PAPER_TABLE3,
    QUOTED_TABLE2,
    TABLE2_METHODS,
)
from ust.report.tables_mvtec import (
    baseline_teacher_p,
    category_summary,
    multiscale_run,
    mvtec_metric_frame,
    mvtec_tables,
    patch_sizes,
)
from ust.stages.mvtec import single_scale_dirs

METRICS = ("au_pro", "pixel_auroc", "image_auroc")


def _metrics(value: float) -> dict:
    """A metrics dict whose three metrics differ, so a test sees which one a table read."""
    return {"au_pro": value, "pixel_auroc": value / 2, "image_auroc": value / 4}


def write_mvtec_results(
    root, categories, scales, *, baselines=True, skip=()
) -> dict[tuple[str, str], float]:
    """Fake stage outputs in the layout of the stages ``mvtec`` and ``mvtec_multiscale``:
    ``root/mvtec/<cat>/p<p>/metrics.json`` and ``root/mvtec_multiscale/<cat>/`` with
    ``metrics.json``, ``table.json``, ``baselines.json`` and ``ssim_ae.json`` (shapes as written by
    ust.experiments). ``skip`` holds (category, column) pairs left out. Returns the AU-PRO written,
    keyed (category, column) with columns "p<p>", "multiscale" and the baseline names."""
    rng = np.random.default_rng(len(categories) * 100 + len(scales))
    written: dict[tuple[str, str], float] = {}
    for cat in categories:
        table = {}
        for p in scales:
            if (cat, f"p{p}") in skip:
                continue
            value = round(float(rng.uniform(0.1, 0.9)), 6)
            run = root / "mvtec" / cat / f"p{p}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({**_metrics(value), "n_test": 8}))
            table[str(p)] = _metrics(value)
            written[cat, f"p{p}"] = value
        if (cat, MULTISCALE) in skip:
            continue
        multi = root / "mvtec_multiscale" / cat
        multi.mkdir(parents=True)
        value = round(float(rng.uniform(0.1, 0.9)), 6)
        (multi / "metrics.json").write_text(json.dumps({**_metrics(value), "scales": list(scales)}))
        table[MULTISCALE] = _metrics(value)
        written[cat, MULTISCALE] = value
        (multi / "table.json").write_text(json.dumps(table))
        if not baselines:
            continue
        base = {}
        for method in TABLE2_METHODS[:-1]:
            written[cat, method] = round(float(rng.uniform(0.1, 0.9)), 6)
            base[method] = {**_metrics(written[cat, method]), "n_fit": 10, "fit_seconds": 0.1}
        (multi / "baselines.json").write_text(json.dumps(base))
        written[cat, "ssim_ae"] = round(float(rng.uniform(0.1, 0.9)), 6)
        (multi / "ssim_ae.json").write_text(
            json.dumps({**_metrics(written[cat, "ssim_ae"]), "patch": 128, "stride": 30})
        )
    return written


def use_params(monkeypatch, tmp_path, categories, scales, baseline_p=None) -> dict:
    """Activate a copy of the smoke profile with the given MVTec categories and scales."""
    params = load_params(ROOT / "profiles/smoke.yaml")
    params["mvtec"] = {"categories": list(categories), "patch_sizes": list(scales)}
    if baseline_p is not None:
        params["mvtec_baselines"]["p"] = baseline_p
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("UST_PARAMS", str(path))
    return params


def _row(text: str, first: str) -> list[str]:
    """The cells of the Markdown row starting with ``| first |``."""
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {first} |")]
    return [c.strip() for c in line.strip("|").split("|")]


# ------------------------------------------------------------------------------------------------
# published numbers


def test_published_tables_cover_all_categories_and_recompute_to_the_printed_means():
    assert set(PAPER_TABLE2) == set(PAPER_TABLE3) == set(QUOTED_TABLE2) == set(CATEGORIES)
    # [P] Table 2 means recomputed from the rows: 1-NN 0.640, OC-SVM 0.479, K-Means 0.4237,
    # ℓ2-AE 0.7907, VAE 0.639, SSIM-AE 0.6946, AnoGAN 0.4470 (printed 0.443), CNN-FD 0.5159;
    # [P] Table 3: 0.8661, 0.9053 (printed 0.900), 0.8574, 0.9140.
    t2 = np.mean(list(PAPER_TABLE2.values()), axis=0)
    np.testing.assert_allclose(t2, [0.6405, 0.4794, 0.4237, 0.7907, 0.639, 0.6946], atol=6e-4)
    np.testing.assert_allclose(
        np.mean(list(QUOTED_TABLE2.values()), axis=0), [0.447, 0.5159], atol=6e-4
    )
    # Table 3 is keyed by the paper's columns: p = 17, 33, 65 and multiscale
    assert all(list(row) == [17, 33, 65, MULTISCALE] for row in PAPER_TABLE3.values())
    t3 = np.mean([list(row.values()) for row in PAPER_TABLE3.values()], axis=0)
    np.testing.assert_allclose(t3, [0.8661, 0.9053, 0.8574, 0.914], atol=6e-4)
    assert PAPER_TABLE3["carpet"][33] == 0.893 and PAPER_TABLE3["zipper"][MULTISCALE] == 0.951


# ------------------------------------------------------------------------------------------------
# layout and scales


def test_result_layout_paths(tmp_path):
    run = single_scale_run_dir(tmp_path / "mvtec", "brick", 33)
    assert run == tmp_path / "mvtec" / "brick" / "p33"
    assert multiscale_run(tmp_path / "ms", "brick") == tmp_path / "ms" / "brick"
    assert single_scale_run_dir("results/mvtec", "a", 17) == ROOT / "results/mvtec/a/p17"


def test_scales_and_baseline_teacher_come_from_the_parameters(tmp_path, monkeypatch):
    use_params(monkeypatch, tmp_path, ["brick"], [33, 9], baseline_p=33)
    assert patch_sizes() == [9, 33]
    assert patch_sizes([65, 17, 17]) == [17, 65]
    assert baseline_teacher_p() == 33
    assert list(single_scale_dirs("brick", tmp_path)) == [33, 9]  # in the order of params.yaml


# ------------------------------------------------------------------------------------------------
# tables


def test_tables_mark_missing_results_and_quote_the_paper(tmp_path):
    t3, t2 = mvtec_tables(
        tmp_path / "mvtec",
        ["carpet", "my_part"],
        "test data",
        "smoke",
        multiscale_dir=tmp_path / "mvtec_multiscale",
        scales=[17, 33, 65],
        baseline_p=65,
    )
    assert (
        "| category | p = 17 | p = 33 | p = 65 | multiscale | paper p=17 / 33 / 65 / multi |" in t3
    )
    assert "| carpet | – | – | – | – | 0.795 / 0.893 / 0.695 / 0.879 |" in t3
    assert "| my_part | – | – | – | – | – (not in the paper) |" in t3
    assert "| mean | – | – | – | – | |" in t3
    assert "0.204 / 0.469 |" in t2  # AnoGAN / CNN-FD of carpet, quoted
    assert "quoted from [P], not re-run" in t2
    with pytest.raises(KeyError):
        QUOTED_TABLE2["my_part"]


def test_tables_read_the_new_layout(tmp_path):
    cats, scales = ["carpet", "brick"], [17, 33, 65]
    got = write_mvtec_results(tmp_path, cats, scales, skip={("brick", "p33")})
    t3, t2 = mvtec_tables(
        tmp_path / "mvtec",
        cats,
        "fake",
        "test",
        multiscale_dir=tmp_path / "mvtec_multiscale",
        scales=scales,
        baseline_p=65,
    )
    carpet = _row(t3, "carpet")
    assert carpet[1:5] == [f"{got['carpet', c]:.3f}" for c in ("p17", "p33", "p65", MULTISCALE)]
    assert carpet[5] == "0.795 / 0.893 / 0.695 / 0.879"
    brick = _row(t3, "brick")
    assert brick[2] == "–" and brick[1] == f"{got['brick', 'p17']:.3f}"
    mean = _row(t3, "mean")
    assert mean[1] == f"{np.mean([got['carpet', 'p17'], got['brick', 'p17']]):.3f}"
    assert mean[2] == f"{got['carpet', 'p33']:.3f}"  # the mean of the runs that exist
    assert (
        "| category | ours p=65 | multiscale | 1nn | ocsvm | kmeans | l2ae | vae | ssim_ae |" in t2
    )
    row2 = _row(t2, "carpet")
    assert row2[1:9] == [f"{got['carpet', c]:.3f}" for c in ("p65", MULTISCALE, *TABLE2_METHODS)]
    assert row2[9] == "–"  # the raw_nn floor column: not run here
    assert row2[10] == " / ".join(f"{v:.3f}" for v in PAPER_TABLE2["carpet"])
    assert "Baselines on the p = 65 teacher's descriptors" in t2
    # the multiscale summary (summary.json) comes from the multiscale run folder
    summary = category_summary(multiscale_run(tmp_path / "mvtec_multiscale", "carpet"))
    assert summary["p33"]["au_pro"] == got["carpet", "p33"]
    assert summary["multiscale"]["pixel_auroc"] == got["carpet", MULTISCALE] / 2
    assert summary["ssim_ae"]["au_pro"] == got["carpet", "ssim_ae"]


def test_tables_adapt_to_the_scales_run(tmp_path):
    write_mvtec_results(tmp_path, ["grid"], [9, 17], baselines=False)
    t3, t2 = mvtec_tables(
        tmp_path / "mvtec",
        ["grid"],
        "fake",
        "test",
        multiscale_dir=tmp_path / "mvtec_multiscale",
        scales=[9, 17],
        baseline_p=17,
    )
    assert "| category | p = 9 | p = 17 | multiscale | paper p=9 / 17 / multi |" in t3
    assert _row(t3, "grid")[-1] == "– / 0.920 / 0.952"  # the paper has no p = 9 column
    assert "| category | ours p=17 | multiscale |" in t2
    assert _row(t2, "grid")[3:9] == ["–"] * 6  # no baselines run


def test_metric_frame_reads_each_metric_and_drops_absent_columns(tmp_path):
    got = write_mvtec_results(tmp_path, ["carpet", "brick"], [17, 33], skip={("brick", "p17")})
    kw = {"results_dir": tmp_path / "mvtec", "multiscale_dir": tmp_path / "mvtec_multiscale"}
    frame = mvtec_metric_frame(["carpet", "brick"], [17, 33], **kw)
    assert list(frame.index) == ["carpet", "brick"]
    assert list(frame.columns) == ["p = 17", "p = 33", MULTISCALE, *TABLE2_METHODS]
    assert frame.loc["carpet", "p = 33"] == got["carpet", "p33"]
    assert np.isnan(frame.loc["brick", "p = 17"])
    pixel = mvtec_metric_frame(["carpet"], [17, 33], metric="pixel_auroc", **kw)
    assert pixel.loc["carpet", "vae"] == got["carpet", "vae"] / 2
    # a scale without any run and baselines not run: no column
    write_mvtec_results(tmp_path / "b", ["grid"], [17], baselines=False)
    frame = mvtec_metric_frame(
        ["grid"], [17, 65], results_dir=tmp_path / "b/mvtec", multiscale_dir=tmp_path / "b/x"
    )
    assert list(frame.columns) == ["p = 17"]


def test_report_tables_use_the_new_layout_and_the_profile_scales(tmp_path, monkeypatch):
    use_params(monkeypatch, tmp_path, ["brick", "grass"], [33, 17])
    got = write_mvtec_results(tmp_path, ["brick", "grass"], [17, 33])
    text, summary = readme_sync.mvtec_report_tables(
        tmp_path / "mvtec", tmp_path / "mvtec_multiscale"
    )
    assert "| category | p = 17 | p = 33 | multiscale | paper p=17 / 33 / multi |" in text
    table3 = text.split("#### Baselines")[0]
    assert _row(table3, "grass")[1:4] == [
        f"{got['grass', c]:.3f}" for c in ("p17", "p33", MULTISCALE)
    ]
    assert "#### Baselines (Table 2)" in text and "| category | ours p=65 |" in text
    assert set(summary) == {"brick", "grass"}
    assert summary["brick"]["p17"]["au_pro"] == got["brick", "p17"]
    assert summary["grass"]["1nn"]["au_pro"] == got["grass", "1nn"]


def test_stage_timings_group_the_renamed_mvtec_stages(tmp_path, monkeypatch):
    for name, seconds in {
        "30_mvtec-brick-p17": 60.0,
        "30_mvtec-brick-p33": 30.0,
        "31_mvtec_multiscale-brick": 90.0,
        "31_mvtec_multiscale-grass": 30.0,
    }.items():
        meta = {"papermill": {"duration": seconds}}
        (tmp_path / f"{name}.ipynb").write_text(
            json.dumps({"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5})
        )
    monkeypatch.setenv("UST_PARAMS", str(ROOT / "profiles/smoke.yaml"))
    table = readme_sync.timings_table(tmp_path)
    assert "| mvtec (single scale) | 2 | 1.5 | 45 | 60 |" in table
    assert "| mvtec_multiscale (multiscale + baselines) | 2 | 2.0 | 60 | 90 |" in table
