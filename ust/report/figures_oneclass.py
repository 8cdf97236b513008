"""Figure 4 of the paper (``docs/decisions.md#mds-figure``), drawn from the embedding the ``mds``
stage computed (:mod:`ust.experiments.mds`): MDS embedding of teacher targets and
student means, above the distributions of the anomaly scores of normal vs anomalous test samples
(:func:`score_distributions`, seaborn; usable on its own, e.g. for MVTec image scores).

For ten test images, one per class, the normalised teacher descriptor ỹ = (y^T − μ)/σ and the
students' mean prediction μ = (1/M) Σ_i S_i(x) are embedded *jointly* into 2-D with metric MDS on
Euclidean distances (20 points), so that the regression error e = ‖μ − ỹ‖² appears as the squared
length of the segment joining each pair. A circle of radius ``radius_scale``·√v is drawn around each
student mean, where v is the predictive variance (Σ over d of the ensemble variance): √v is the
root-mean-square distance of the individual students from their mean, in the same units as the
embedding (MDS preserves distances). Green marks the normal class, red the others. The bottom panel is
the histogram of ẽ + ṽ over the whole test set, split into normal and anomalous images
(:func:`score_distributions`).

MDS: ``sklearn.manifold.MDS(n_components=2, metric_mds=True, metric="euclidean",
init="classical_mds", random_state=seed)`` — scikit-learn ≥ 1.8 names the metric/non-metric switch
``metric_mds`` and the dissimilarity ``metric`` (the old ``dissimilarity=``/``metric=True`` spelling
is deprecated); the classical-MDS initialisation (the 1.10 default) is deterministic and makes
``n_init`` irrelevant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ust.io import atomic_savefig
from ust.paths import resolve

__all__ = ["MDSFigureData", "draw_mds", "score_distributions"]

NORMAL_COLOR = "tab:green"
ANOMALY_COLOR = "tab:red"


@dataclass
class MDSFigureData:
    """What Figure 4 shows (n = number of embedded images, 10 for one per class).

    Attributes:
        indices: (n,) indices into ``data.test`` of the embedded images.
        classes: (n,) their classes; ``is_normal`` (n,) bool.
        embedding: (2n, 2) MDS coordinates, teacher targets first (rows 0..n-1), then student means.
        teacher_xy, student_xy: (n, 2) views of ``embedding``.
        e: (n,) regression error ‖μ − ỹ‖² (squared units of the normalised descriptor).
        v: (n,) predictive variance (same units).
        radii: (n,) circle radii = radius_scale · √v (embedding units).
        stress: final MDS stress (sklearn's raw stress).
        scores: (N_test,) ẽ + ṽ of the whole test set; ``labels`` (N_test,) 1 = anomalous.
        class_names: (n,) names of the embedded images' classes; ``dataset`` and
            ``normal_class_name`` title the figure.
    """

    indices: np.ndarray
    classes: np.ndarray
    is_normal: np.ndarray
    embedding: np.ndarray
    e: np.ndarray
    v: np.ndarray
    radii: np.ndarray
    stress: float
    scores: np.ndarray
    labels: np.ndarray
    class_names: np.ndarray
    dataset: str = ""
    normal_class_name: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike) -> MDSFigureData:
        """Read the ``embedding.npz`` of the ``mds`` stage
        (:func:`ust.experiments.mds.save_embedding`; one array per field)."""
        with np.load(resolve(path)) as z:
            values = {f: z[f] for f in z.files}
        for key in ("stress",):
            values[key] = float(values[key])
        for key in ("dataset", "normal_class_name"):
            values[key] = str(values[key])
        return cls(**values)

    @property
    def teacher_xy(self) -> np.ndarray:
        return self.embedding[: len(self.indices)]

    @property
    def student_xy(self) -> np.ndarray:
        return self.embedding[len(self.indices) :]


def draw_mds(
    d: MDSFigureData, path: str | os.PathLike | None = None, *, bins: int = 50, dpi: int = 150
):
    """Figure 4 from the embedding the ``mds`` stage wrote (:meth:`MDSFigureData.load`); optionally
    saved (PNG/PDF by suffix, atomic, relative to the repository root). Returns the Figure."""
    fig = _draw(d, bins)
    if path is not None:
        atomic_savefig(fig, resolve(path), dpi=dpi, bbox_inches="tight")
    return fig


def _draw(d: MDSFigureData, bins: int) -> Figure:
    fig = Figure(figsize=(6.0, 7.5), layout="constrained")
    ax, hist = fig.subplots(2, 1, height_ratios=[3, 1])
    for k in range(len(d.indices)):
        color = NORMAL_COLOR if d.is_normal[k] else ANOMALY_COLOR
        (tx, ty), (sx, sy) = d.teacher_xy[k], d.student_xy[k]
        ax.plot([tx, sx], [ty, sy], color=color, lw=1.0, zorder=1)
        ax.scatter([tx], [ty], marker="x", color=color, s=40, zorder=3)
        ax.scatter([sx], [sy], marker="o", color=color, s=25, zorder=3)
        ax.add_patch(Circle((sx, sy), d.radii[k], fill=False, ec=color, lw=1.0, zorder=2))
        ax.annotate(
            str(d.class_names[k]),
            (tx, ty),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    # Circles are patches: include them in the view limits explicitly.
    r = d.radii[:, None]
    lo = min(d.teacher_xy.min(), (d.student_xy - r).min())
    hi = max(d.teacher_xy.max(), (d.student_xy + r).max())
    pad = 0.05 * (hi - lo + 1e-12)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_title(
        f"{d.dataset}: normal class {d.normal_class_name!r}; × teacher target, "
        "● student mean, circle ∝ √v",
        fontsize=9,
    )
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    score_distributions(
        d.scores,
        d.labels,
        ax=hist,
        bins=bins,
        xlabel="anomaly score ẽ + ṽ (whole test set)",
        ylabel="images",
    )
    return fig


#: hue levels of :func:`score_distributions`, in drawing order, with their colours
SCORE_HUES = {"normal": NORMAL_COLOR, "anomalous": ANOMALY_COLOR}


def score_distributions(
    scores,
    labels,
    path: str | os.PathLike | None = None,
    *,
    ax: Axes | None = None,
    bins: int | np.ndarray = 50,
    kde: bool = False,
    xlabel: str = "anomaly score",
    ylabel: str = "samples",
    dpi: int = 150,
) -> Figure:
    """Histogram of the anomaly scores of normal (green) vs anomalous (red) test samples, on common
    bins (``seaborn.histplot`` with ``hue``), optionally with a kernel density estimate per group.

    Works for any per-sample scores: one-class test images (ẽ + ṽ, Figure 4) or MVTec image scores
    (maximum of each anomaly map).

    Args:
        scores: (N,) scores; labels: (N,) 1 = anomalous, 0 = normal.
        path: PNG (or PDF by suffix) written atomically, or None; ignored when ``ax`` is given.
        ax: draw into this Axes (e.g. a panel of a larger figure) instead of a new Figure.
        bins: number of bins over the range of all scores, or the bin edges.
        kde: add a density curve per group.
        xlabel, ylabel: axis labels.

    Returns:
        the Figure drawn into (``ax.figure`` when ``ax`` is given).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if len(scores) != len(labels) or len(scores) == 0:
        raise ValueError(f"need as many labels as scores (≥ 1), got {len(labels)}/{len(scores)}")
    own = ax is None
    if own:
        fig = Figure(figsize=(5.0, 2.8), layout="constrained")
        ax = fig.subplots()
    frame = pd.DataFrame(
        {"score": scores, "test samples": np.where(labels == 1, "anomalous", "normal")}
    )
    sns.histplot(
        frame,
        x="score",
        hue="test samples",
        hue_order=list(SCORE_HUES),
        palette=SCORE_HUES,
        bins=np.histogram_bin_edges(scores, bins=bins),
        kde=kde,
        alpha=0.6,
        ax=ax,
    )
    sns.move_legend(ax, "upper right", title=None, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if own and path is not None:
        atomic_savefig(ax.figure, resolve(path), dpi=dpi, bbox_inches="tight")
    return ax.figure
