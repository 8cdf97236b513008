"""Summary figures of the report stage: heatmaps (seaborn) of the one-class ROC-AUC of every method
and normal class (``figures/oneclass_auc.png``) and of one MVTec metric of every category, scale and
baseline (``figures/mvtec_au_pro.png``), and the grid of test images and maps across categories
(:func:`plot_defect_grid`: the README's Figures 1 and 5).

Each function returns the :class:`matplotlib.figure.Figure` (notebooks show it inline) and, given a
path, saves it atomically. Cells are annotated with their value (3 decimals); a run that is missing
leaves its cell blank. The colour range is fixed, so figures of different runs compare directly.
Kept apart from ``figures_oneclass`` and ``figures_mvtec`` so that the stages drawing Figures 1, 4
and 5 do not depend on the tables' modules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ust.io import atomic_savefig
from ust.paths import resolve
from ust.report.figures_mvtec import _array, _hwc, _outline, _show_image, _show_map
from ust.report.tables_oneclass import DATASET_TITLES, auc_grid

__all__ = ["METRIC_LABELS", "mvtec_metric_heatmap", "oneclass_auc_heatmap", "plot_defect_grid"]

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


def plot_defect_grid(
    blocks: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None,
    *,
    panel: float = 1.45,
) -> Figure:
    """Categories below each other, test images side by side: per category one row of inputs with
    the ground truth outlined in red, then one row per map kind (e.g. ``multiscale`` for Figure 1,
    every scale and multiscale for Figure 5), all maps of a category on one colour scale (min/max
    over its maps, one colour bar at the row ends).

    ``blocks``: one mapping per category with ``name``, ``titles`` (K column labels, e.g.
    ``good/000``, ``blur/000``), ``images`` and ``masks`` (K each, see the module doc) and
    ``maps`` = ``{row label: K maps}``. Categories may have different K; unused panels are
    hidden. Returns the figure (and writes ``path`` when given)."""
    if not blocks:
        raise ValueError("need at least one category block")
    cols = max(len(b["images"]) for b in blocks)
    rows = sum(1 + len(b["maps"]) for b in blocks)
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 0.8, panel * rows), squeeze=False)
    r = 0
    for block in blocks:
        k = len(block["images"])
        if not (len(block["masks"]) == len(block["titles"]) == k) or any(
            len(m) != k for m in block["maps"].values()
        ):
            raise ValueError(f"category {block['name']}: every row needs {k} panels")
        shapes = []
        for j in range(cols):
            ax = axes[r, j]
            if j >= k:
                ax.set_axis_off()
                continue
            img = _hwc(block["images"][j])
            shapes.append(img.shape[:2])
            _show_image(ax, img)
            _outline(ax, block["masks"][j], img.shape[:2])
            ax.set_title(str(block["titles"][j]), fontsize=8)
        axes[r, 0].set_ylabel(f"{block['name']}\ninput", fontsize=9)
        every = [_array(m) for maps in block["maps"].values() for m in maps]
        lo = min(float(m.min()) for m in every)
        hi = max(float(m.max()) for m in every)
        for label, maps in block["maps"].items():
            r += 1
            for j in range(cols):
                ax = axes[r, j]
                if j >= k:
                    ax.set_axis_off()
                    continue
                im = _show_map(ax, maps[j], shapes[j], vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 0].set_ylabel(str(label), fontsize=9)
            fig.colorbar(im, cax=axes[r, k - 1].inset_axes((1.04, 0.0, 0.06, 1.0)))
        r += 1
    fig.tight_layout()
    plt.close(fig)  # keep pyplot's registry empty; the Figure object stays usable
    return _save(fig, path, dpi=120)
