"""Pictures of a detector's output: heat-map overlays (PNG) and notebook figures.

Every heat map uses the same colour scale for all images, :meth:`Detector.display_range`: from the
median validation score m to 2t − m, so the threshold t sits in the middle of the scale. A per-image
min–max scale would paint the most normal pixel of a good image as hot as a defect. Pixels above
the threshold are outlined.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ust.io import atomic_write

CMAP = "inferno"
CONTOUR_RGB = (0, 255, 255)
MAX_ALPHA = 0.6  # opacity of the heat map where the score reaches the top of the colour scale


def _rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) tensor or (H, W[, 3]) array in [0, 1] → float (H, W, 3) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    a = np.asarray(image, dtype=np.float64)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Inner boundary (bool, same shape) of the regions of a bool (H, W) mask, ``width`` px."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def overlay(
    image: torch.Tensor | np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float,
    value_range: tuple[float, float],
) -> np.ndarray:
    """The image with the heat map blended in and the ``map > threshold`` regions outlined.

    Args:
        image: (3, H, W) tensor or (H, W[, 3]) array in [0, 1] at the map's size.
        anomaly_map: float (H, W) scores.
        threshold: score threshold of the outline.
        value_range: (vmin, vmax) of the colour scale, the same for every image.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    import matplotlib

    rgb = _rgb(image)
    a = np.asarray(anomaly_map, dtype=np.float64)
    if a.shape != rgb.shape[:2]:
        raise ValueError(f"map {a.shape} and image {rgb.shape[:2]} sizes differ")
    vmin, vmax = value_range
    level = np.clip((a - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    heat = matplotlib.colormaps[CMAP](level)[..., :3]
    alpha = (MAX_ALPHA * level)[..., None]  # normal pixels keep the image visible
    out = np.rint(255 * ((1 - alpha) * rgb + alpha * heat)).astype(np.uint8)
    width = max(1, round(min(a.shape) / 256))
    out[outline(a > threshold, width)] = CONTOUR_RGB
    return out


def save_overlay(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) image as PNG, atomically."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def plot_overlays(
    overlays: Sequence[np.ndarray | str | os.PathLike],
    titles: Sequence[str],
    value_range: tuple[float, float],
    threshold: float,
    *,
    ncols: int = 4,
):
    """A grid of overlays (arrays or PNG files) with the shared colour bar; returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = max(1, len(overlays))
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols + 1, 3 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, item, title in zip(axes.ravel(), overlays, titles):
        ax.imshow(np.asarray(Image.open(item)) if isinstance(item, str | os.PathLike) else item)
        ax.set_title(title, fontsize=9)
    bar = ScalarMappable(Normalize(*value_range), cmap=CMAP)
    cb = fig.colorbar(bar, ax=axes.ravel().tolist(), shrink=0.8, label="anomaly score ẽ + ṽ")
    cb.ax.axhline(threshold, color="cyan", linewidth=2)
    return fig


def plot_score_histogram(
    validation_scores: Sequence[float],
    scores: Sequence[float],
    threshold: float,
    *,
    labels: tuple[str, str] = ("validation (good)", "predicted"),
):
    """Histogram of image scores: the held-out good images against new ones, with the threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = np.concatenate([np.asarray(validation_scores, float), np.asarray(scores, float)])
    bins = np.histogram_bin_edges(np.append(values, threshold), bins=20)
    ax.hist(validation_scores, bins=bins, alpha=0.6, label=labels[0])
    ax.hist(scores, bins=bins, alpha=0.6, label=labels[1])
    ax.axvline(threshold, color="black", linestyle="--", label=f"image threshold {threshold:.3g}")
    ax.set_xlabel("image score (maximum of the anomaly map)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_prediction_overlays(detector: Any, summary: Any, *, max_images: int = 8):
    """The overlays a :func:`ust.detector.batch.predict_to_folder` run wrote (the first
    ``max_images``), titled with name and score, with the shared colour bar; returns the Figure."""
    rows = summary.rows[:max_images]
    return plot_overlays(
        [summary.out_dir / "overlays" / f"{r['name']}.png" for r in rows],
        [
            f"{r['name']}: {r['score']:.3g}" + (" (anomalous)" if r["anomalous"] else "")
            for r in rows
        ],
        detector.display_range(summary.pixel_threshold),
        summary.pixel_threshold,
    )


def plot_prediction_scores(detector: Any, summary: Any):
    """Histogram of the image scores of a :func:`ust.detector.batch.predict_to_folder` run
    against the detector's validation images, with the threshold; returns the Figure."""
    return plot_score_histogram(
        detector.calibration.image_scores, [r["score"] for r in summary.rows], summary.threshold
    )
