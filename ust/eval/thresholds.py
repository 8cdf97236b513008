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

Whole images are decided by the image threshold of :func:`calibrate_image_threshold` instead: a
rank of the held-out good images' image scores chosen for a target false-alarm rate
(docs/decisions.md#image-threshold); an image is anomalous if its score > that threshold.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- image threshold
# Accept / reject of whole images (docs/decisions.md#image-threshold). The pixel rules above set
# where a map is outlined; deciding an image by its maximum against a pixel quantile rejects almost
# every good image (its largest pixel exceeds the 0.99 quantile of all pixels). An image is
# anomalous when its score (the map's maximum) exceeds the image threshold below, calibrated on the
# image scores of the held-out good images for a target false-alarm rate α.

_RATE_SLACK = 1e-9  # α·(n + 1) that misses an integer by float rounding (0.07·100) still counts


def _check_rate(false_alarm_rate: float) -> float:
    alpha = float(false_alarm_rate)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"false-alarm rate must be in (0, 1), got {false_alarm_rate}")
    return alpha


def _percent(rate: float) -> str:
    return f"{100 * rate:.3g} %"


def achievable_false_alarm_rate(n: int) -> float:
    """The smallest false-alarm rate a rank-based threshold can promise with ``n`` good images:
    1/(n + 1), the rate of the maximum (docs/decisions.md#image-threshold)."""
    if n < 1:
        raise ValueError(f"need at least one good validation image, got {n}")
    return 1.0 / (n + 1)


def good_images_needed(false_alarm_rate: float) -> int:
    """The smallest number n of good validation images with 1/(n + 1) ≤ ``false_alarm_rate``,
    i.e. ⌈1/α⌉ − 1 (99 for 1 %, 19 for 5 %; docs/decisions.md#image-threshold)."""
    alpha = _check_rate(false_alarm_rate)
    return max(1, math.ceil(1.0 / alpha - _RATE_SLACK) - 1)


def _rank(n: int, alpha: float) -> int:
    """The largest k ≤ n with k/(n + 1) ≤ α (0 when even the maximum cannot promise α)."""
    return min(n, math.floor(alpha * (n + 1) + _RATE_SLACK))


@dataclass(frozen=True)
class ImageThreshold:
    """An image threshold and what it promises (docs/decisions.md#image-threshold).

    An image is anomalous when its score is strictly greater than ``threshold`` (a new good image
    whose score ties the threshold is accepted).

    Attributes:
        threshold: the ``rank``-th largest good validation image score (score units).
        requested_rate: the target false-alarm rate α.
        supported_rate: what the threshold promises: P(new good image rejected) ≤ rank/(n + 1).
            At most ``requested_rate`` when ``supported``; else 1/(n + 1), the best n allows.
        n_images: number of good validation image scores n.
        images_needed: the smallest n that supports ``requested_rate`` (⌈1/α⌉ − 1).
        rank: k, the threshold's rank from the top (1: the maximum).
    """

    threshold: float
    requested_rate: float
    supported_rate: float
    n_images: int
    images_needed: int
    rank: int

    @property
    def supported(self) -> bool:
        """Whether the n good images are enough to promise ``requested_rate``."""
        return self.n_images >= self.images_needed

    @property
    def message(self) -> str:
        """What to tell the user when the target is not supported; empty when it is."""
        if self.supported:
            return ""
        n = self.n_images
        return (
            f"with {n} good validation image{'s' if n != 1 else ''} the smallest false-alarm "
            f"rate a threshold can promise is 1/{n + 1} = {_percent(self.supported_rate)}; a "
            f"target of {_percent(self.requested_rate)} needs at least {self.images_needed} good "
            "images: give more with --val-images DIR or a larger --val-fraction"
        )

    @property
    def summary(self) -> str:
        """One line stating the threshold and its promise, e.g. for ``ust fit``'s output."""
        which = "largest" if self.rank == 1 else f"{_ordinal(self.rank)} largest"
        return (
            f"image threshold {self.threshold:.6g} (the {which} of {self.n_images} good "
            f"validation image scores): false-alarm rate ≤ {self.rank}/{self.n_images + 1} = "
            f"{_percent(self.supported_rate)} (target {_percent(self.requested_rate)})"
        )


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def calibrate_image_threshold(good_scores: Any, false_alarm_rate: float) -> ImageThreshold:
    """The image threshold for a target false-alarm rate α from n good validation image scores.

    Conformal rank rule (docs/decisions.md#image-threshold): if the scores of the n validation
    images and of a new good image are exchangeable, the new score exceeds the k-th largest of the
    n with probability ≤ k/(n + 1) (equality without ties; ties only lower it, as the decision is
    ``score > threshold``). The threshold is the k-th largest score for the largest k with
    k/(n + 1) ≤ α. When α < 1/(n + 1) no k qualifies: the maximum (k = 1) is returned, with
    ``supported`` False and a :attr:`~ImageThreshold.message` saying how many images α needs.

    Args:
        good_scores: image scores (maps' maxima) of the held-out good images, any order.
        false_alarm_rate: target α in (0, 1).

    Raises:
        ValueError: no scores, non-finite scores, or α outside (0, 1).
    """
    alpha = _check_rate(false_alarm_rate)
    scores = np.sort(np.asarray(good_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("no good validation image scores given")
    if not np.isfinite(scores).all():
        raise ValueError("good validation image scores contain NaN or infinite values")
    n = int(scores.size)
    k = max(1, _rank(n, alpha))
    return ImageThreshold(
        threshold=float(scores[n - k]),
        requested_rate=alpha,
        supported_rate=k / (n + 1),
        n_images=n,
        images_needed=good_images_needed(alpha),
        rank=k,
    )


def image_threshold(good_scores: Any, false_alarm_rate: float) -> float:
    """The threshold of :func:`calibrate_image_threshold` alone (docs/decisions.md#image-threshold);
    it never raises for a target stricter than the scores support (check ``supported`` there)."""
    return calibrate_image_threshold(good_scores, false_alarm_rate).threshold
