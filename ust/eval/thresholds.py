"""Segmentation thresholds estimated on anomaly maps of the anomaly-free validation split.

[Th] §4.5 / §4.6.4 (docs/decisions.md#segmentation-thresholds). A pixel is predicted anomalous if
A(p) > t, so each rule returns the t it selects on validation maps that contain no anomalies:

- ``max``: the largest validation score (no validation pixel is flagged);
- ``quantile``: the p-quantile of all validation pixels, p = 0.99 (linear interpolation);
- ``k_sigma``: μ + kσ over all validation pixels, k = 2.326 ≈ Φ⁻¹(0.99) (population σ);
- ``max_area``: the smallest t at which no connected component of {A > t} in any validation map
  covers 0.1 % of its image area or more (8-connectivity as in docs/decisions.md#pro-connectivity).

Maps are numpy arrays (N, H, W), a single (H, W) map, or a list of (H, W) maps of any sizes
(torch CPU tensors work too). Scores are arbitrary real units (the anomaly-score scale).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from ust.io import atomic_write

DEFAULT_QUANTILE = 0.99
DEFAULT_K = 2.326  # Φ⁻¹(0.99) = 2.3263…, docs/decisions.md#segmentation-thresholds
DEFAULT_MAX_AREA_FRACTION = 0.001


def _as_maps(maps: Any) -> list[np.ndarray]:
    """Maps → list of float64 (H, W) arrays; rejects empty input and non-finite values."""
    if isinstance(maps, np.ndarray) or hasattr(maps, "numpy"):
        arr = np.asarray(maps, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"maps must be (N, H, W) or (H, W), got shape {arr.shape}")
        out = list(arr)
    elif isinstance(maps, Sequence):
        out = [np.asarray(m, dtype=np.float64) for m in maps]
        if any(m.ndim != 2 for m in out):
            raise ValueError("every map in the list must be 2-D (H, W)")
    else:
        raise TypeError(f"maps must be an array or a list of arrays, got {type(maps).__name__}")
    if not out or all(m.size == 0 for m in out):
        raise ValueError("no validation maps given")
    if not all(np.isfinite(m).all() for m in out):
        raise ValueError("validation maps contain NaN or infinite values")
    return out


def _values(maps: Any) -> np.ndarray:
    return np.concatenate([m.ravel() for m in _as_maps(maps)])


def threshold_max(maps: Any) -> float:
    """Maximum score over all validation pixels."""
    return float(_values(maps).max())


def threshold_quantile(maps: Any, q: float = DEFAULT_QUANTILE) -> float:
    """q-quantile (linear interpolation) of all validation pixel scores, q in [0, 1]."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    return float(np.quantile(_values(maps), q))


def threshold_k_sigma(maps: Any, k: float = DEFAULT_K) -> float:
    """μ + k·σ of all validation pixel scores (σ with ddof = 0)."""
    v = _values(maps)
    return float(v.mean() + k * v.std())


def _largest_component(mask: np.ndarray, structure: np.ndarray) -> int:
    labels, n = ndimage.label(mask, structure=structure)
    return int(np.bincount(labels.ravel())[1:].max()) if n else 0


def threshold_max_area(
    maps: Any, max_area_fraction: float = DEFAULT_MAX_AREA_FRACTION, connectivity: int = 8
) -> float:
    """Smallest validation score t such that every connected component of {A > t} in every map is
    smaller than ``max_area_fraction`` of that map's area (pixels). Binary search over the sorted
    distinct scores (components only shrink as t grows)."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    ms = _as_maps(maps)
    candidates = np.unique(np.concatenate([m.ravel() for m in ms]))

    def ok(t: float) -> bool:
        return all(_largest_component(m > t, structure) < max_area_fraction * m.size for m in ms)

    lo, hi = 0, len(candidates) - 1  # ok(candidates[hi]) holds: nothing exceeds the maximum
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


def estimate_thresholds(
    maps: Any,
    q: float = DEFAULT_QUANTILE,
    k: float = DEFAULT_K,
    max_area_fraction: float = DEFAULT_MAX_AREA_FRACTION,
) -> dict[str, float]:
    """All rules at once: ``{"max", "quantile", "k_sigma", "max_area"}`` → threshold."""
    ms = _as_maps(maps)
    return {
        "max": threshold_max(ms),
        "quantile": threshold_quantile(ms, q),
        "k_sigma": threshold_k_sigma(ms, k),
        "max_area": threshold_max_area(ms, max_area_fraction),
    }


def binarize(anomaly_map: Any, threshold: float) -> np.ndarray:
    """Segmentation of a map: uint8 array of the same shape, 255 where A > threshold, else 0."""
    a = np.asarray(anomaly_map)
    return np.where(a > threshold, 255, 0).astype(np.uint8)


def save_segmentation(path: str | os.PathLike, mask: Any) -> Path:
    """Write a 2-D segmentation (bool, {0, 1} or {0, 255}) as an 8-bit 0/255 PNG, atomically
    (temp file in the same folder, then ``os.replace``). Parents are created."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"segmentation must be 2-D (H, W), got shape {m.shape}")
    img = Image.fromarray(np.where(m > 0, 255, 0).astype(np.uint8))
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))
