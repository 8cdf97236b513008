"""Notebook 30 (MVTec AD, one receptive field, paper §4.2, one column of Table 3): test images with
their ground truth and anomaly maps on one colour scale, the PRO curve up to FPR 0.3, the
segmentation thresholds, and this scale's AU-PRO beside the paper's Table 3.

Inputs: the files of one single-scale run folder (``metrics.json``, ``pro_curve.csv``,
``thresholds.json``, ``maps/<category>/test/<defect>/<id>.tiff``; see
:mod:`ust.experiments.mvtec_single`) and the MVTec-layout data it ran on. The paper's numbers come
from :data:`ust.report.published.PAPER_TABLE3` (the 15 MVTec AD categories only).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ust.data.mvtec import (
    CategoryIndex,
    TestSample,
    load_anomaly_map,
    load_image,
    load_mask,
    validate_category,
)
from ust.io import read_json
from ust.paths import resolve
from ust.report.figures_mvtec import first_of_each_defect, plot_figure1, plot_pro_curves
from ust.report.published import MULTISCALE, PAPER_TABLE3
from ust.report.views import comparison_table, number

__all__ = [
    "THRESHOLD_RULES",
    "anomaly_maps",
    "example_samples",
    "ours_vs_paper",
    "paper_au_pro",
    "paper_comparison",
    "pro_curve",
    "read_pro_curve",
    "thresholds",
]

#: what each rule of ``thresholds.json`` selects on the anomaly-free validation maps
#: (:mod:`ust.eval.thresholds`)
THRESHOLD_RULES = {
    "max": "largest validation score (no validation pixel flagged)",
    "quantile": "0.99-quantile of the validation pixels",
    "k_sigma": "μ + 2.326 σ of the validation pixels",
    "max_area": "smallest t leaving no validation component of ≥ 0.1 % of the image",
}


def example_samples(index: CategoryIndex, n: int | None = None) -> list[TestSample]:
    """The test images of :func:`anomaly_maps`: the first anomaly-free one and the first image of
    each defect type (:func:`ust.report.figures_mvtec.first_of_each_defect`,
    docs/decisions.md#figure-selection); with ``n``, the first ``n`` of those followed by further
    defective images in order."""
    if n is None:
        return first_of_each_defect(index.test)
    good = [s for s in index.test if not s.is_anomalous][:1]
    defective = [s for s in index.test if s.is_anomalous]
    firsts = [next(s for s in defective if s.defect == d) for d in index.defect_types]
    rest = [s for s in defective if s not in firsts]
    return (good + firsts + rest)[:n]


def anomaly_maps(
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    examples: int | None = None,
) -> Figure:
    """Rows of (input, ground truth outlined in red, anomaly map ẽ + ṽ) for
    :func:`example_samples` of the run in ``out_dir`` (by default the first good image and the
    first image of every defect type); every map on the same colour scale (min/max over the shown
    maps, score units), so that a dark map means a low score."""
    index = validate_category(resolve(data_root), category)
    samples = example_samples(index, examples)
    maps_dir = resolve(out_dir) / "maps" / category / "test"
    return plot_figure1(
        [load_image(s.path).permute(1, 2, 0).numpy() for s in samples],
        [load_mask(s.mask_path, s.size).numpy() for s in samples],
        [load_anomaly_map(maps_dir / f"{s.image_id}.tiff") for s in samples],
        None,
        titles=[s.image_id for s in samples],
        shared_scale=True,
    )


def read_pro_curve(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, pro)`` of ``<run_dir>/pro_curve.csv``: two (K,) arrays, FPR ascending in [0, 1]."""
    data = np.loadtxt(resolve(run_dir) / "pro_curve.csv", delimiter=",", skiprows=1, ndmin=2)
    return data[:, 0], data[:, 1]


def pro_curve(out_dir: str | os.PathLike, limit: float = 0.3) -> Figure:
    """The run's per-region overlap against the false positive rate up to ``limit``, its AU-PRO
    (normalised area up to ``limit``) in the legend."""
    m = read_json(resolve(out_dir) / "metrics.json")
    return plot_pro_curves({f"{m['category']}, p = {m['p']}": read_pro_curve(out_dir)}, None, limit)


def thresholds(out_dir: str | os.PathLike) -> pd.DataFrame:
    """``thresholds.json`` as a table: one row per rule, columns ``threshold`` (score units of
    ẽ + ṽ), ``rule`` (what it selects) and ``segmentation`` (True for the rule the run used for
    its ``segmentation/`` masks)."""
    values = read_json(resolve(out_dir) / "thresholds.json")
    used = values.get("segmentation", {}).get("rule")
    rules = [k for k in values if k != "segmentation"]
    return pd.DataFrame(
        {
            "threshold": [float(values[k]) for k in rules],
            "rule": [THRESHOLD_RULES.get(k, "") for k in rules],
            "segmentation": [k == used for k in rules],
        },
        index=pd.Index(rules, name="rule name"),
    )


def paper_au_pro(category: str, scale: int | str) -> float | None:
    """The paper's Table 3 AU-PRO of ``category`` at receptive field ``scale`` (or
    ``"multiscale"``); None when the category (or scale) is not in the paper."""
    return PAPER_TABLE3.get(category, {}).get(scale)


def _not_in_paper(category: str) -> str:
    return f"not in the paper: its Table 3 has the 15 MVTec AD categories, not {category!r}"


def paper_comparison(out_dir: str | os.PathLike, scale_label: str | None = None) -> pd.DataFrame:
    """AU-PRO (FPR ≤ 0.3) of the run in ``out_dir`` beside the paper's Table 3 (same category and
    receptive field, or multiscale for a fused run), then pixel and image ROC-AUC (which the paper
    does not print); layout of :func:`ust.report.views.comparison_table`. ``scale_label``: the
    row label of the scale (default ``p = <p>`` from ``metrics.json``)."""
    m = read_json(resolve(out_dir) / "metrics.json")
    category, scale = m["category"], m.get("p", MULTISCALE)
    label = scale_label or (f"p = {scale}" if scale != MULTISCALE else MULTISCALE)
    paper = paper_au_pro(category, scale)
    au_pro = {
        "quantity": f"AU-PRO, {category}, {label}",
        "ours": m["au_pro"],
        "paper": paper,
        "source": "[P] Table 3" if paper is not None else "",
        "note": "" if paper is not None else _not_in_paper(category),
    }
    others = [
        {
            "quantity": f"{name}, {category}, {label}",
            "ours": m[key],
            "note": "not printed by the paper",
        }
        for key, name in (("pixel_auroc", "pixel ROC-AUC"), ("image_auroc", "image ROC-AUC"))
    ]
    return comparison_table([au_pro, *others])


def ours_vs_paper(out_dir: str | os.PathLike) -> str:
    """One sentence: this run's AU-PRO, pixel and image ROC-AUC, beside the paper's Table 3 value
    for the same category and receptive field when it exists."""
    m = read_json(resolve(out_dir) / "metrics.json")
    category, p = m["category"], m["p"]
    text = (
        f"{category}, p = {p}: AU-PRO {number(m['au_pro'])} (FPR ≤ {m.get('integration_limit', 0.3)}), "
        f"pixel ROC-AUC {number(m['pixel_auroc'])}, image ROC-AUC {number(m['image_auroc'])} on "
        f"{m.get('n_test', '?')} test images"
    )
    paper = paper_au_pro(category, p)
    if paper is None:
        return text + f"; {_not_in_paper(category)}."
    return (
        text + f"; the paper's Table 3 gives AU-PRO {number(paper)} for {category} at p = {p} "
        f"(difference {m['au_pro'] - paper:+.3f})."
    )
