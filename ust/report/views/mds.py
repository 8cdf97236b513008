"""Notebook 40 (Figure 4: MDS of teacher targets and student means): the histogram of the anomaly
scores of normal and anomalous test images, the run's ROC-AUC beside the paper's Table 6/7 number for
the same class, and what Figure 4 shows in numbers (regression error e and predictive variance v of
the normal against the anomalous embedded images).

Inputs: the stage's ``metrics.json`` (``auc``, ``mds_stress``), the ``mds`` section of the active
parameters (dataset, normal class, teacher losses) and, for e and v, the
:class:`ust.report.figures_oneclass.MDSFigureData` the figure was drawn from.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ust.io import read_json
from ust.paths import resolve
from ust.report.figures_oneclass import MDSFigureData, draw_mds, score_distributions
from ust.report.tables_oneclass import DATASET_TITLES, published_row
from ust.report.views import comparison_table, number

__all__ = ["ev_ratios", "figure4", "ours_vs_paper", "paper_comparison", "score_histogram"]


def figure4(out_dir: str | os.PathLike) -> tuple[Figure, MDSFigureData]:
    """Figure 4 drawn from ``<out_dir>/embedding.npz`` (written by the stage) and saved as
    ``<out_dir>/figure4_mds.png``; returns (figure, the embedding it shows)."""
    out = resolve(out_dir)
    embedding = MDSFigureData.load(out / "embedding.npz")
    return draw_mds(embedding, out / "figure4_mds.png"), embedding


def score_histogram(result: dict) -> Figure:
    """Histogram (with a density estimate per group) of ẽ + ṽ over the whole test set, normal
    against anomalous images; ``result``: :func:`ust.experiments.oneclass.run_students` output
    (``scores`` and ``labels``, (N_test,) each)."""
    return score_distributions(
        result["scores"],
        result["labels"],
        kde=True,
        xlabel="anomaly score ẽ + ṽ (whole test set)",
        ylabel="test images",
    )


def ev_ratios(embedding: MDSFigureData) -> dict[str, float]:
    """Mean e and mean v of the anomalous embedded images divided by those of the normal ones
    (> 1: anomalous images lie farther from their targets / the students disagree more)."""
    normal, anomalous = embedding.is_normal, ~embedding.is_normal
    return {
        "e": float(np.mean(embedding.e[anomalous]) / max(np.mean(embedding.e[normal]), 1e-12)),
        "v": float(np.mean(embedding.v[anomalous]) / max(np.mean(embedding.v[normal]), 1e-12)),
    }


def _setting():
    from ust.experiments.config import load_config

    return load_config().mds


def paper_comparison(
    out_dir: str | os.PathLike, embedding: MDSFigureData | None = None
) -> pd.DataFrame:
    """The run's ROC-AUC beside the paper's Table 6/7 value of the students on the same teacher
    configuration and normal class, the MDS stress, and (with ``embedding``) the e and v ratios of
    :func:`ev_ratios`; layout of :func:`ust.report.views.comparison_table`."""
    m = read_json(resolve(out_dir) / "metrics.json")
    mds = _setting()
    key = f"Ours ({','.join(mds.teacher_losses)})"
    pub = published_row(mds.dataset, key)
    paper = pub.per_class[mds.normal_class] if pub and pub.per_class else None
    rows = [
        {
            "quantity": f"ROC-AUC, {DATASET_TITLES.get(mds.dataset, mds.dataset)} class "
            f"{mds.normal_class}",
            "ours": m["auc"],
            "paper": paper,
            "source": f"{pub.source}: {key}" if paper is not None else "",
        },
        {"quantity": "MDS stress", "ours": m["mds_stress"], "note": "not printed by the paper"},
    ]
    if embedding is not None:
        note = "paper: > 1 (Figure 4, drawn, not measured)"
        rows += [
            {"quantity": f"mean {k} anomalous / normal", "ours": v, "note": note}
            for k, v in ev_ratios(embedding).items()
        ]
    return comparison_table(rows)


def ours_vs_paper(out_dir: str | os.PathLike, embedding: MDSFigureData) -> str:
    """One sentence: the ROC-AUC beside the paper's, and whether the anomalous images show the
    larger e and v that Figure 4 of the paper draws."""
    table = paper_comparison(out_dir, embedding)
    auc = table.iloc[0]
    mds = _setting()
    ratios = ev_ratios(embedding)
    text = (
        f"Figure 4 ({DATASET_TITLES.get(mds.dataset, mds.dataset)}, normal class "
        f"{mds.normal_class}, {mds.students} students): ROC-AUC {number(auc['ours'])}"
    )
    if not np.isnan(auc["paper"]):
        text += f" against {number(auc['paper'])} ({auc['paper source']})"
    return text + (
        f"; the anomalous embedded images have {ratios['e']:.2f}× the normal images' mean "
        f"regression error e and {ratios['v']:.2f}× their predictive variance v (the paper's "
        "Figure 4 draws both larger for anomalous images)."
    )
