"""Summary heatmaps of the report stage (seaborn): the one-class ROC-AUC of every method and normal
class (``figures/oneclass_auc.png``) and one MVTec metric of every category, scale and baseline
(``figures/mvtec_au_pro.png``).

Each function returns the :class:`matplotlib.figure.Figure` (notebooks show it inline) and, given a
path, saves it atomically. Cells are annotated with their value (3 decimals); a run that is missing
leaves its cell blank. The colour range is fixed, so figures of different runs compare directly.
Kept apart from ``figures_oneclass`` and ``figures_mvtec`` so that the stages drawing Figures 1, 4
and 5 do not depend on the tables' modules.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ust.io import atomic_savefig
from ust.paths import resolve
from ust.report.tables_oneclass import DATASET_TITLES, auc_grid

__all__ = ["METRIC_LABELS", "mvtec_metric_heatmap", "oneclass_auc_heatmap"]

#: colour-bar label of each metric :func:`mvtec_metric_heatmap` knows
METRIC_LABELS = {
    "au_pro": "AU-PRO (FPR ≤ 0.3)",
    "pixel_auroc": "pixel ROC-AUC",
    "image_auroc": "image ROC-AUC",
}
CMAP = "viridis"


def _heatmap(ax: Axes, grid: pd.DataFrame, vmin: float, vmax: float, **kwargs) -> None:
    """Annotated seaborn heatmap of ``grid`` on [``vmin``, ``vmax``], row labels horizontal and
    column labels slanted."""
    sns.heatmap(
        grid,
        ax=ax,
        annot=True,
        fmt=".3f",
        annot_kws={"fontsize": 8},
        vmin=vmin,
        vmax=vmax,
        cmap=CMAP,
        linewidths=0.5,
        **kwargs,
    )
    ax.set_ylabel("")
    ax.tick_params(axis="y", labelrotation=0)
    if max((len(t.get_text()) for t in ax.get_xticklabels()), default=0) > 3:
        for label in ax.get_xticklabels():
            label.set(rotation=45, ha="right", rotation_mode="anchor")


def _save(fig: Figure, path: str | os.PathLike | None, dpi: int) -> Figure:
    if path is not None:
        atomic_savefig(fig, resolve(path), dpi=dpi, bbox_inches="tight")
    return fig


def oneclass_auc_heatmap(
    df: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    vmin: float = 0.5,
    vmax: float = 1.0,
    dpi: int = 150,
) -> Figure:
    """Methods × normal classes grid of the one-class ROC-AUC, one panel per dataset (in name
    order), on the fixed colour range [``vmin``, ``vmax``] (0.5 = chance) with one shared colour
    bar.

    Args:
        df: results as from :func:`ust.experiments.oneclass.collect_results` (one data source per
            dataset); rows and columns as :func:`ust.report.tables_oneclass.auc_grid`.
        path: PNG (or PDF by suffix) written atomically, or None.

    Raises:
        ValueError: ``df`` is empty.
    """
    if df.empty:
        raise ValueError("no one-class results to draw")
    datasets = sorted(df["dataset"].unique())
    grids = [auc_grid(df, ds) for ds in datasets]
    width = 2.5 + 0.75 * max(g.shape[1] for g in grids)
    heights = [1.0 + 0.4 * g.shape[0] for g in grids]
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    axes = fig.subplots(len(grids), 1, height_ratios=heights, squeeze=False)[:, 0]
    for ax, ds, grid in zip(axes, datasets, grids, strict=True):
        _heatmap(ax, grid, vmin, vmax, cbar=False)
        ax.set_title(f"{DATASET_TITLES.get(ds, ds)}: ROC-AUC per normal class", fontsize=10)
        ax.set_xlabel("normal class")
    fig.colorbar(axes[0].collections[0], ax=list(axes), label="ROC-AUC")
    return _save(fig, path, dpi)


def mvtec_metric_heatmap(
    table: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    metric: str = "au_pro",
    vmin: float = 0.0,
    vmax: float = 1.0,
    dpi: int = 150,
) -> Figure:
    """Categories × methods/scales heatmap of one MVTec metric on the fixed colour range
    [``vmin``, ``vmax``].

    Args:
        table: rows = categories, columns = ``p = <p>`` per scale, ``multiscale`` and the baselines,
            as :func:`ust.report.tables_mvtec.mvtec_metric_frame` returns (from the result files).
        path: PNG (or PDF by suffix) written atomically, or None.
        metric: the metric in ``table`` (names the colour bar, see :data:`METRIC_LABELS`).

    Raises:
        ValueError: ``table`` holds no finite value.
    """
    values = table.astype(float)
    if values.empty or not np.isfinite(values.to_numpy()).any():
        raise ValueError("no MVTec results to draw")
    rows, cols = values.shape
    fig = Figure(figsize=(1.2 + 0.75 * cols, 1.0 + 0.45 * rows), layout="constrained")
    ax = fig.subplots()
    _heatmap(ax, values, vmin, vmax, cbar_kws={"label": METRIC_LABELS.get(metric, metric)})
    ax.set_xlabel("")
    return _save(fig, path, dpi)
