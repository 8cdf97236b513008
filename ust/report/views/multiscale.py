"""Notebook 31 (MVTec AD, multiscale and baselines, paper §4.2, Tables 2 and 3, Figures 1 and 5):
the category's rows of Tables 2 and 3 beside the paper's, all three metrics of every method, a bar
chart of every method's AU-PRO with the paper's values, and one generated sentence. Figures 1 and 5
and the PRO curves are drawn by :func:`ust.report.tables_mvtec.draw_category_figures`.

Inputs: the multiscale run folder (``table.json`` with each scale and the fusion,
``baselines.json``, ``ssim_ae.json``; read by :func:`ust.report.tables_mvtec.category_summary`). The
paper's numbers: :data:`ust.report.published.PAPER_TABLE3` and ``PAPER_TABLE2`` (the 15 MVTec AD
categories only).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ust.report.published import MULTISCALE, PAPER_TABLE2, PAPER_TABLE3, TABLE2_METHODS
from ust.report.tables_mvtec import category_summary
from ust.report.views import comparison_table, number

__all__ = ["au_pro_chart", "metrics_table", "ours_vs_paper", "paper_comparison"]

METRICS = ("au_pro", "pixel_auroc", "image_auroc")


def _scale_keys(summary: dict) -> list[str]:
    """``p<p>`` keys of a :func:`category_summary`, by receptive field."""
    return sorted((k for k in summary if k[1:].isdigit() and k[0] == "p"), key=lambda k: int(k[1:]))


def _label(key: str) -> str:
    return f"p = {key[1:]}" if key[1:].isdigit() else key


def metrics_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every method of the multiscale run in ``out_dir`` (each scale, the fusion, each baseline
    run) × ``au_pro`` (FPR ≤ 0.3), ``pixel_auroc``, ``image_auroc`` (floats in [0, 1])."""
    summary = category_summary(out_dir)
    keys = [*_scale_keys(summary), MULTISCALE, *(m for m in TABLE2_METHODS if m in summary)]
    keys = [k for k in keys if k in summary]
    return pd.DataFrame(
        [[float(summary[k][m]) for m in METRICS] for k in keys],
        index=pd.Index([_label(k) for k in keys], name="method"),
        columns=list(METRICS),
    )


def paper_comparison(category: str, out_dir: str | os.PathLike) -> pd.DataFrame:
    """AU-PRO of each scale and the fusion beside the paper's Table 3 row of ``category``, and of
    each Table 2 baseline beside the paper's Table 2 row (layout of
    :func:`ust.report.views.comparison_table`; rows labelled ``Table 3: …`` / ``Table 2: …``).
    Categories outside the paper get the note "not in the paper"."""
    summary = category_summary(out_dir)
    t3, t2 = PAPER_TABLE3.get(category), PAPER_TABLE2.get(category)
    missing = f"not in the paper: it has the 15 MVTec AD categories, not {category!r}"
    rows = []
    for key in [*_scale_keys(summary), MULTISCALE]:
        if key not in summary:
            continue
        scale = int(key[1:]) if key != MULTISCALE else MULTISCALE
        paper = t3.get(scale) if t3 else None
        rows.append(
            {
                "quantity": f"Table 3: {_label(key)}",
                "ours": summary[key]["au_pro"],
                "paper": paper,
                "source": "[P] Table 3" if paper is not None else "",
                "note": "" if t3 else missing,
            }
        )
    for i, method in enumerate(TABLE2_METHODS):
        if method in summary:
            rows.append(
                {
                    "quantity": f"Table 2: {method}",
                    "ours": summary[method]["au_pro"],
                    "paper": t2[i] if t2 else None,
                    "source": "[P] Table 2" if t2 else "",
                    "note": "" if t2 else missing,
                }
            )
    return comparison_table(rows)


def au_pro_chart(category: str, out_dir: str | os.PathLike) -> Figure:
    """Horizontal bars of every method's AU-PRO (FPR ≤ 0.3) in the multiscale run of ``out_dir``,
    the paper's value for the same category drawn as a black tick where it exists; x in [0, 1]."""
    table = paper_comparison(category, out_dir)
    labels = [q.split(": ", 1)[1] for q in table.index]
    y = np.arange(len(table))
    fig = Figure(figsize=(5.5, 0.9 + 0.32 * len(table)), layout="constrained")
    ax = fig.subplots()
    colours = ["tab:blue" if q.startswith("Table 3") else "tab:orange" for q in table.index]
    ax.barh(y, table["ours"], color=colours, alpha=0.8, label="ours")
    has_paper = table["paper"].notna().to_numpy()
    if has_paper.any():
        ax.scatter(
            table["paper"][has_paper], y[has_paper], marker="|", s=250, color="black", label="paper"
        )
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AU-PRO (FPR ≤ 0.3)")
    ax.set_title(f"{category}: students (blue) and Table 2 baselines (orange)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    return fig


def ours_vs_paper(category: str, out_dir: str | os.PathLike) -> str:
    """One sentence: the fusion's AU-PRO against the best single scale and the best baseline, then
    the paper's numbers for the same category when it has them."""
    table = paper_comparison(category, out_dir)
    scales = table[table.index.str.startswith("Table 3: p = ")]
    baselines = table[table.index.str.startswith("Table 2: ")]
    fused = table.loc[f"Table 3: {MULTISCALE}"] if f"Table 3: {MULTISCALE}" in table.index else None

    def best(rows: pd.DataFrame, column: str) -> str:
        """``"<method> (<value>)"`` of the largest ``column`` in ``rows``, "–" when none."""
        if rows[column].notna().any():
            name = rows[column].idxmax()
            return f"{name.split(': ', 1)[1]} ({number(rows.loc[name, column])})"
        return "–"

    text = (
        f"{category}: multiscale AU-PRO {number(fused['ours'] if fused is not None else None)}, "
        f"best single scale {best(scales, 'ours')}, best baseline {best(baselines, 'ours')}"
    )
    if not table["paper"].notna().any():
        return text + f"; {table['note'].iloc[0]}."
    return (
        text + f"; the paper: multiscale {number(fused['paper'] if fused is not None else None)}, "
        f"best single scale {best(scales, 'paper')}, best baseline {best(baselines, 'paper')}."
    )
