"""Figures of the MVTec AD experiments: Figure 1 / 6 style panels, the receptive-field comparison of
Figure 5 and PRO curves (the categories × methods heatmap is in :mod:`ust.report.figures_summary`).
Matplotlib with the Agg backend; every function saves a PNG (atomically, when given a path) and
returns the :class:`matplotlib.figure.Figure` (for notebooks).

Inputs are lists with one entry per example: images as (H, W), (H, W, 3) or (3, H, W) arrays or
tensors in [0, 1]; masks as (H, W) binary arrays; anomaly maps as (h, w) arrays of scores (any
resolution: they are drawn stretched over the image).

Which test images a category's figures show is a fixed rule, never a choice by score
(:func:`first_of_each_defect`, docs/decisions.md#figure-selection): the first anomaly-free image,
then the first image of every defect type. :func:`draw_category_panels` applies it and reads only
what the pipeline wrote (the data set's images and masks, the runs' TIFF maps); this module never
imports the method, the training loops or the stages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ust.data.dataset import GOOD  # noqa: E402
from ust.data.mvtec import (  # noqa: E402
    load_anomaly_map,
    load_image,
    load_mask,
    validate_category,
)
from ust.eval.metrics import trapezoid  # noqa: E402
from ust.io import atomic_savefig  # noqa: E402
from ust.paths import resolve  # noqa: E402

__all__ = [
    "draw_category_panels",
    "first_of_each_defect",
    "plot_figure1",
    "plot_pro_curves",
    "plot_receptive_fields",
]

MAP_CMAP = "inferno"

S = TypeVar("S")


def first_of_each_defect(samples: Sequence[S]) -> list[S]:
    """The test images a category's figures show (docs/decisions.md#figure-selection): the first
    anomaly-free sample (``defect == "good"``), then the first sample of every defect type, the
    types in the order they first occur in ``samples``. Pure: it reads only ``sample.defect`` and
    keeps the given order within each type, so the same data set always gives the same rows; a
    category without good test images simply has no good row."""
    first: dict[str, S] = {}
    for sample in samples:
        first.setdefault(sample.defect, sample)
    good = [first.pop(GOOD)] if GOOD in first else []
    return good + list(first.values())


def _hwc(image: Any) -> np.ndarray:
    """Image → float array (H, W) or (H, W, 3) in [0, 1] for ``imshow``."""
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W), (H, W, 3) or (3, H, W), got shape {a.shape}")
    return np.clip(a, 0.0, 1.0)


def _array(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)


def _show_image(ax, image: np.ndarray) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def _outline(ax, mask: Any, shape: tuple[int, int]) -> None:
    """Red contour of a binary mask, stretched to an image of ``shape`` = (H, W)."""
    m = _array(mask) > 0
    if m.any():
        h, w = m.shape
        H, W = shape
        ax.contour(
            np.linspace(0, W - 1, w),
            np.linspace(0, H - 1, h),
            m.astype(float),
            levels=[0.5],
            colors="red",
            linewidths=1.0,
        )


def _show_map(ax, score_map: Any, shape: tuple[int, int], vmin=None, vmax=None):
    H, W = shape
    return ax.imshow(
        _array(score_map),
        cmap=MAP_CMAP,
        vmin=vmin,
        vmax=vmax,
        extent=(-0.5, W - 0.5, H - 0.5, -0.5),
        interpolation="bilinear",
    )


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        atomic_savefig(fig, resolve(path), dpi=120, bbox_inches="tight")
    plt.close(fig)  # keep pyplot's registry empty; the Figure object stays usable
    return fig


def plot_figure1(
    images: Sequence[Any],
    masks: Sequence[Any],
    maps: Sequence[Any],
    path: str | os.PathLike | None,
    *,
    titles: Sequence[str] | None = None,
    shared_scale: bool = False,
) -> Figure:
    """One row per example (e.g. per category): input, input with the ground truth outlined in red,
    and the anomaly map (colour bar in score units).

    Args:
        images: N images (see module doc); masks: N binary (H', W') masks; maps: N (h, w) maps.
        path: PNG file to write (parents created) or None.
        titles: N row labels (e.g. category names).
        shared_scale: one colour scale for every row (min/max over all maps), so that maps of
            different images compare directly; False: each row's own min/max.
    """
    n = len(images)
    if not (len(masks) == len(maps) == n) or n == 0:
        raise ValueError(
            f"need as many masks and maps as images (≥ 1), got {n}/{len(masks)}/{len(maps)}"
        )
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    lo = hi = None
    if shared_scale:
        lo = min(float(_array(m).min()) for m in maps)
        hi = max(float(_array(m).max()) for m in maps)
    for i in range(n):
        img = _hwc(images[i])
        shape = img.shape[:2]
        _show_image(axes[i, 0], img)
        _show_image(axes[i, 1], img)
        _outline(axes[i, 1], masks[i], shape)
        im = _show_map(axes[i, 2], maps[i], shape, vmin=lo, vmax=hi)
        axes[i, 2].set_xticks([])
        axes[i, 2].set_yticks([])
        if not shared_scale:
            fig.colorbar(im, ax=axes[i, 2], fraction=0.046, pad=0.04)
        elif i == 0:  # one bar for the one scale, beside the first row without shrinking its map
            fig.colorbar(im, cax=axes[0, 2].inset_axes((1.04, 0.0, 0.06, 1.0)))
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]))
    for ax, title in zip(axes[0], ("input", "ground truth", "anomaly score")):
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_receptive_fields(
    images: Sequence[Any],
    maps_by_scale: Mapping[Any, Sequence[Any]],
    path: str | os.PathLike | None,
    *,
    masks: Sequence[Any] | None = None,
    titles: Sequence[str] | None = None,
    shared_scale: bool = False,
) -> Figure:
    """Figure-5-style comparison: one row per image, columns = input then one map per scale.

    Args:
        images: N images; maps_by_scale: ``{p: [N maps] for each scale, "multiscale": [N maps]}``
            (columns in the mapping's order; integer keys are labelled ``p = k``).
        path: PNG file to write or None.
        masks: optional N masks outlined in red on the input.
        titles: optional N row labels.
        shared_scale: one colour scale for every map of the figure (min/max over all of them, one
            colour bar on the first row), so rows compare too; False: per row.
    Each row shares one colour scale over its maps (min/max of the row), so scales compare directly.
    """
    n = len(images)
    keys = list(maps_by_scale)
    if n == 0 or not keys or any(len(maps_by_scale[k]) != n for k in keys):
        raise ValueError("need ≥ 1 image and, for every scale, one map per image")
    cols = 1 + len(keys)
    fig, axes = plt.subplots(n, cols, figsize=(2.4 * cols, 2.4 * n), squeeze=False)
    every = [_array(maps_by_scale[k][i]) for k in keys for i in range(n)]
    shared = (min(float(m.min()) for m in every), max(float(m.max()) for m in every))
    for i in range(n):
        img = _hwc(images[i])
        shape = img.shape[:2]
        _show_image(axes[i, 0], img)
        if masks is not None:
            _outline(axes[i, 0], masks[i], shape)
        row = [_array(maps_by_scale[k][i]) for k in keys]
        lo, hi = min(float(m.min()) for m in row), max(float(m.max()) for m in row)
        if shared_scale:
            lo, hi = shared
        for j, m in enumerate(row, start=1):
            im = _show_map(axes[i, j], m, shape, vmin=lo, vmax=hi)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        if shared_scale and i == 0:  # beside the first row, without shrinking its last map
            fig.colorbar(im, cax=axes[0, -1].inset_axes((1.04, 0.0, 0.06, 1.0)))
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]))
    axes[0, 0].set_title("input")
    for j, k in enumerate(keys, start=1):
        axes[0, j].set_title(f"p = {k}" if isinstance(k, (int, np.integer)) else str(k))
    fig.tight_layout()
    return _save(fig, path)


def plot_pro_curves(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike | None,
    limit: float = 0.3,
) -> Figure:
    """PRO over the false-positive rate up to ``limit``; the legend gives each curve's AU-PRO
    (trapezoid up to ``limit``, divided by it, as :func:`ust.eval.metrics.au_pro`).

    Args:
        curves: ``{name: (fpr, pro)}``, two 1-D arrays each (FPR non-decreasing, both in [0, 1]).
        path: PNG file to write or None.
        limit: FPR integration limit (0.3 for MVTec AD).
    """
    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (fpr, pro) in curves.items():
        fpr, pro = _array(fpr), _array(pro)
        area = trapezoid(fpr, pro, x_max=limit) / limit
        keep = fpr <= limit
        x = np.r_[fpr[keep], limit]
        y = np.r_[pro[keep], np.interp(limit, fpr, pro)]
        ax.plot(x, y, label=f"{name} (AU-PRO {area:.3f})")
    ax.set_xlim(0, limit)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("per-region overlap")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _read_maps(run: Path, category: str, samples: Sequence[Any]) -> list[np.ndarray]:
    """The TIFF maps a run wrote for ``samples``: ``<run>/maps/<category>/test/<defect>/<id>.tiff``."""
    base = run / "maps" / category / "test"
    return [load_anomaly_map(base / f"{s.image_id}.tiff") for s in samples]


def draw_category_panels(
    category: str,
    data_root: str | os.PathLike,
    scale_dirs: Mapping[int, str | os.PathLike],
    multiscale_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    names: Mapping[str, str] | None = None,
) -> dict[str, Figure]:
    """Figure 1 (input, ground truth outlined in red, multiscale map) and Figure 5 (input, then the
    map of every scale of ``scale_dirs = {p: single-scale run folder}`` and the multiscale map) of
    one category, with one row per :func:`first_of_each_defect` test image (the first good image,
    then the first image of every defect type) and one colour scale for the whole figure.

    Reads only files the pipeline wrote: the MVTec-layout data set at ``data_root`` (images and
    masks) and the runs' TIFF maps (``multiscale_dir`` is the multiscale run folder). Writes
    ``<out_dir>/figure1.png`` and ``<out_dir>/figure5_scales.png`` (or ``names``' file names for
    the keys ``figure1`` and ``figure5``) when ``out_dir`` is given; returns ``{"figure1",
    "figure5"}`` → :class:`Figure`.
    """
    index = validate_category(resolve(data_root), category)
    samples = first_of_each_defect(index.test)
    images = [load_image(s.path).permute(1, 2, 0).numpy() for s in samples]
    masks = [load_mask(s.mask_path, s.size).numpy() for s in samples]  # all False when good
    fused = _read_maps(resolve(multiscale_dir), category, samples)
    by_scale: dict[Any, list[np.ndarray]] = {
        int(p): _read_maps(resolve(d), category, samples) for p, d in scale_dirs.items()
    }
    by_scale["multiscale"] = fused
    titles = [s.image_id for s in samples]
    files = {"figure1": "figure1.png", "figure5": "figure5_scales.png", **(names or {})}
    paths = {k: None if out_dir is None else resolve(out_dir) / v for k, v in files.items()}
    return {
        "figure1": plot_figure1(
            images, masks, fused, paths["figure1"], titles=titles, shared_scale=True
        ),
        "figure5": plot_receptive_fields(
            images, by_scale, paths["figure5"], masks=masks, titles=titles, shared_scale=True
        ),
    }
