"""Saturated per-region overlap (sPRO) and AU-sPRO of MVTec LOCO AD (thesis ch. 6;
docs/decisions.md#spro-metric).

Each ground-truth region ``C`` (one annotated defect; it may consist of several connected components
and is never split) has a saturation threshold ``s`` in pixels, ``0 < s <= |C|``. For a threshold
``t`` the predicted anomalous pixels are ``P = {score > t}`` and

    sPRO(t) = (1/k) * sum_i min(|C_i ∩ P| / s_i, 1)

over the ``k`` regions of all evaluated images. The FPR is the number of predicted pixels outside
every region divided by the number of pixels outside every region, both pooled over all evaluated
images (anomaly-free images included). Regions may overlap: a pixel in two regions counts toward
both and is never a negative.

The curve is exact: every distinct score is a threshold (plus ``t = -inf``, where every pixel is
positive), with no sampling. It is computed like ``ust.eval.metrics.au_pro`` from ONE global sort
of all scores (its ``_descending_chunks`` / ``_sweep``): in descending score order, region ``i``
adds ``1/s_i`` for each of its first ``s_i`` pixels to pass the threshold and nothing afterwards, so
each pixel carries a fixed increment. Inside a group of equal scores the order is arbitrary, but
the curve point is taken after the whole group, where ``min(|C_i ∩ P|, s_i)`` no longer depends on
that order. The thresholds ``t`` = each distinct score with ``>`` give the same points as
``metrics.pro_curve``'s ``>=`` over the distinct scores: the point of ``t = s_m`` is the point of
``>= s_(m-1)``, ``t = max`` gives (0, 0) and ``t = -inf`` gives (1, 1).

Memory is linear in the number of pixels: int32 labels (4 bytes a pixel) plus the 8-byte sort words
of ``metrics._descending_chunks``, plus one copy of the scores (float32, or float64 for float64 maps)
unless they arrive as one contiguous (N, H, W) array of that dtype, plus the curve (16 bytes a
distinct score, at most ~2^23 per binary octave for float32 scores); the per-image region work is
temporary.

Scores are unitless anomaly scores (larger = more anomalous); areas are unitless in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ust.eval.metrics import (
    _as_image_list,
    _check_limit,
    _check_maps,
    _flat_scores,
    _sweep,
    image_scores,
    roc_auc,
    trapezoid,
)

__all__ = [
    "LIMITS",
    "SUBSETS",
    "au_spro",
    "au_spro_limits",
    "evaluate_loco",
    "spro_curve",
]

# FPR integration limits of the official metrics.json (thesis Table 7.2); 0.05 is the main number.
LIMITS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 1.0)
# Anomalous test subsets of MVTec LOCO AD; each is evaluated together with all "good" images.
SUBSETS: tuple[str, ...] = ("structural_anomalies", "logical_anomalies")

# Label of region pixels whose sPRO increment is zero (past saturation): not negatives, no weight.
_SATURATED = 1


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _region_mask(mask: Any, i: int, j: int, shape: tuple[int, ...]) -> np.ndarray:
    """Validate ``regions[i][j].mask`` against the map shape; return it as a bool array."""
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(
            f"regions[{i}][{j}].mask has shape {m.shape} but anomaly_maps[{i}] has shape {shape}; "
            "masks and maps must share the ground-truth resolution"
        )
    if m.dtype == bool:
        return m
    if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
        raise ValueError(f"regions[{i}][{j}].mask has non-numeric dtype {m.dtype}")
    values = np.unique(m)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        raise ValueError(
            f"regions[{i}][{j}].mask is not binary: found values {values[:10].tolist()}; "
            "expected bool, {0, 1} or {0, 255}"
        )
    return m != 0


def _saturation(value: Any, i: int, j: int, area: int) -> float:
    """Validate ``regions[i][j].saturation`` (pixels) against the region area ``|C|``."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"regions[{i}][{j}].saturation must be a number of pixels; got {value!r}")
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"regions[{i}][{j}].saturation must be a number of pixels; got {value!r}"
        ) from None
    if not (math.isfinite(s) and 0.0 < s <= area):
        raise ValueError(
            f"regions[{i}][{j}].saturation must satisfy 0 < s <= |C| = {area} pixels "
            f"(the region's area); got {value!r}"
        )
    return s


def _validate(
    anomaly_maps, regions
) -> tuple[list[np.ndarray], list[list[tuple[np.ndarray, float]]]]:
    """Check maps and regions; return the 2-D maps and, per image, (bool mask, saturation) pairs."""
    maps = _as_image_list(anomaly_maps, "anomaly_maps")
    _check_maps(maps)
    if isinstance(regions, (str, bytes)) or not isinstance(regions, Sequence):
        raise ValueError(
            "regions must be a sequence with one sequence of regions per image; "
            f"got {type(regions).__name__}"
        )
    if len(regions) != len(maps):
        raise ValueError(
            f"got {len(maps)} anomaly maps but {len(regions)} region lists; there must be one "
            "(possibly empty) list of regions per map"
        )
    checked: list[list[tuple[np.ndarray, float]]] = []
    for i, (m, image_regions) in enumerate(zip(maps, regions, strict=True)):
        if image_regions is None:
            image_regions = ()
        if isinstance(image_regions, (str, bytes)) or not isinstance(image_regions, Iterable):
            raise ValueError(
                f"regions[{i}] must be a sequence of regions (empty for a good image); "
                f"got {type(image_regions).__name__}"
            )
        pairs = []
        for j, region in enumerate(image_regions):
            if not (hasattr(region, "mask") and hasattr(region, "saturation")):
                raise ValueError(
                    f"regions[{i}][{j}] ({type(region).__name__}) needs .mask and .saturation"
                )
            mask = _region_mask(region.mask, i, j, m.shape)
            area = int(np.count_nonzero(mask))
            if area == 0:
                raise ValueError(f"regions[{i}][{j}].mask is empty: a region needs >= 1 pixel")
            pairs.append((mask, _saturation(region.saturation, i, j, area)))
        checked.append(pairs)
    return maps, checked


# ----------------------------------------------------------------------------------------------
# Per-pixel sPRO increments as labels for metrics._sweep
# ----------------------------------------------------------------------------------------------


@dataclass
class _Labelled:
    labels: np.ndarray  # (P,) int32: 0 = outside every region, else an index into ``weights``
    weights: np.ndarray  # (L,) float64 sPRO increment of each label, already divided by k
    n_ok: int  # pixels outside every region
    k: int  # number of regions


def _add_region(weight: np.ndarray, values: np.ndarray, mask: np.ndarray, s: float) -> None:
    """Add one region's sPRO increments (unnormalised by k) to the image's flat ``weight``.

    The region's pixels in descending score order get ``1/s`` each for the first ``floor(s)``, the
    next one the remainder ``(s - floor(s)) / s`` and the rest 0, so that their running sum is
    ``min(c / s, 1)`` for the top ``c``. Equal scores are ranked arbitrarily (but
    deterministically): they share one tie group of the global sweep, whose total is unaffected.
    """
    idx = np.flatnonzero(mask)
    n_full = int(math.floor(s))
    if n_full >= idx.size:
        weight[idx] += 1.0 / s
        return
    # Ascending partition (no negation, which would wrap unsigned scores): after it the top
    # n_full scores sit above position kth and the (n_full + 1)-th largest sits at kth.
    kth = idx.size - 1 - n_full
    order = np.argpartition(values[idx], kth)
    weight[idx[order[kth + 1 :]]] += 1.0 / s
    remainder = s - n_full
    if remainder > 0.0:
        weight[idx[order[kth]]] += remainder / s


def _label(maps: list[np.ndarray], checked: list[list[tuple[np.ndarray, float]]]) -> _Labelled:
    """Give every pixel a label whose weight is its sPRO increment; see :func:`_add_region`."""
    total = sum(m.size for m in maps)
    labels = np.zeros(total, dtype=np.int32)
    table: dict[float, int] = {}  # increment -> label, shared by all images (few distinct values)
    k = 0
    n_inside = 0
    pos = 0
    for m, pairs in zip(maps, checked, strict=True):
        if pairs:
            values = m.ravel()
            weight = np.zeros(m.size, dtype=np.float64)
            union = np.zeros(m.size, dtype=bool)
            for mask, s in pairs:
                flat_mask = mask.ravel()
                union |= flat_mask
                _add_region(weight, values, flat_mask, s)
            inside = np.flatnonzero(union)
            uniq, inverse = np.unique(weight[inside], return_inverse=True)
            ids = np.array(
                [
                    _SATURATED if w == 0.0 else table.setdefault(float(w), 2 + len(table))
                    for w in uniq
                ],
                dtype=np.int32,
            )
            labels[pos + inside] = ids[inverse.ravel()]
            k += len(pairs)
            n_inside += int(inside.size)
        pos += m.size
    if k == 0:
        raise ValueError(
            "sPRO is undefined without ground-truth regions: every image has an empty region list "
            "(evaluate a set that contains anomalous images)"
        )
    n_ok = total - n_inside
    if n_ok == 0:
        raise ValueError(
            "the FPR is undefined without negative pixels: every pixel lies inside a ground-truth "
            "region (include anomaly-free images or pixels)"
        )
    weights = np.zeros(2 + len(table), dtype=np.float64)
    for w, lab in table.items():
        weights[lab] = w / k
    return _Labelled(labels=labels, weights=weights, n_ok=n_ok, k=k)


def _curve(maps, checked, anomaly_maps, fpr_stop: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, spro) from one sorted sweep; stops collecting once FPR > ``fpr_stop``."""
    lab = _label(maps, checked)
    scores = _flat_scores(maps, anomaly_maps)
    sweep = _sweep(scores, lab.labels, lab.n_ok, weights=lab.weights, fpr_stop=fpr_stop)
    return sweep.fpr, sweep.pro


def _areas(fpr: np.ndarray, spro: np.ndarray, limits: Sequence[float]) -> dict[str, float]:
    return {str(limit): trapezoid(fpr, spro, x_max=limit) / limit for limit in limits}


def _check_limits(limits: Iterable[float]) -> tuple[float, ...]:
    checked = tuple(_check_limit(limit) for limit in limits)
    if not checked:
        raise ValueError("limits is empty: give at least one FPR integration limit in (0, 1]")
    return checked


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def spro_curve(anomaly_maps, regions) -> tuple[np.ndarray, np.ndarray]:
    """Exact sPRO curve over a test set: sPRO against the pooled FPR at every distinct score.

    Args:
        anomaly_maps: sequence of N float arrays (H_i, W_i), or one (N, H, W) array, of real anomaly
            scores (unitless, larger = more anomalous; no NaN). float32 is kept as float32.
        regions: sequence of N sequences; ``regions[i]`` holds the ground-truth regions of image i
            (empty or None for a good image). A region is any object with ``.mask`` (bool (H_i, W_i)
            array; {0, 1}/{0, 255} also accepted) and ``.saturation`` (pixels, ``0 < s <= |mask|``),
            e.g. :class:`ust.data.dataset.Region`. Regions are used as given, never split into components.

    Returns:
        ``(fpr, spro)``: float64 arrays of shape (M + 2,), M = number of distinct scores. ``fpr`` is
        non-decreasing from 0 to 1, ``spro`` likewise. Point 0 is ``t = max`` (nothing positive),
        point m >= 1 is ``P = {score >= m-th largest distinct score}`` and the last point (1, 1)
        is ``t = -inf``.

    Raises:
        ValueError: mismatched lengths or shapes, NaN scores, a non-binary or empty mask, a
            saturation outside ``(0, |C|]``, no region at all, or no pixel outside every region.
    """
    maps, checked = _validate(anomaly_maps, regions)
    return _curve(maps, checked, anomaly_maps, fpr_stop=None)


def au_spro(anomaly_maps, regions, integration_limit: float = 0.05) -> float:
    """Normalised area under the sPRO curve up to an FPR limit (docs/decisions.md#spro-metric).

    The curve of :func:`spro_curve` is integrated with the trapezoidal rule up to
    ``FPR = integration_limit`` (sPRO linearly interpolated there) and divided by the limit,
    exactly like ``ust.eval.metrics.au_pro``.

    Args:
        anomaly_maps: N (H_i, W_i) score arrays or one (N, H, W) array (see :func:`spro_curve`).
        regions: N sequences of regions with ``.mask`` and ``.saturation`` (see :func:`spro_curve`).
        integration_limit: FPR limit in (0, 1]; 0.05 is the MVTec LOCO AD main number.

    Returns:
        AU-sPRO in [0, 1] as a Python float (1.0 = every region saturated before any false
        positive).
    """
    limit = _check_limit(integration_limit)
    maps, checked = _validate(anomaly_maps, regions)
    fpr, spro = _curve(maps, checked, anomaly_maps, fpr_stop=limit)
    return trapezoid(fpr, spro, x_max=limit) / limit


def au_spro_limits(anomaly_maps, regions, limits: Iterable[float] = LIMITS) -> dict[str, float]:
    """AU-sPRO for several FPR limits from one sort (the ``auc_spro`` entries of metrics.json).

    Args:
        anomaly_maps: N (H_i, W_i) score arrays or one (N, H, W) array (see :func:`spro_curve`).
        regions: N sequences of regions with ``.mask`` and ``.saturation`` (see :func:`spro_curve`).
        limits: FPR limits, each in (0, 1]; default 0.01, 0.05, 0.1, 0.3, 1.0.

    Returns:
        ``{str(limit): AU-sPRO}`` with Python-float values, keys as in the official metrics.json
        (``"0.01"``, ``"0.05"``, ``"0.1"``, ``"0.3"``, ``"1.0"``).
    """
    checked_limits = _check_limits(limits)
    maps, checked = _validate(anomaly_maps, regions)
    fpr, spro = _curve(maps, checked, anomaly_maps, fpr_stop=max(checked_limits))
    return _areas(fpr, spro, checked_limits)


def _subset_indices(subsets: Sequence[str], checked, n: int) -> dict[str, list[int]]:
    """Image indices per subset name; validates the names and that good images have no region."""
    if isinstance(subsets, (str, bytes)) or len(subsets) != n:
        raise ValueError(f"subsets must be a sequence of {n} subset names, one per anomaly map")
    allowed = ("good", *SUBSETS)
    index: dict[str, list[int]] = {name: [] for name in allowed}
    for i, name in enumerate(subsets):
        if name not in index:
            raise ValueError(f"subsets[{i}] is {name!r}; expected one of {allowed}")
        if name == "good" and checked[i]:
            raise ValueError(
                f"subsets[{i}] is 'good' but image {i} has {len(checked[i])} region(s)"
            )
        index[name].append(i)
    for name in allowed:
        if not index[name]:
            raise ValueError(f"no {name!r} image: MVTec LOCO AD evaluation needs all three subsets")
    return index


def evaluate_loco(maps, regions, subsets: Sequence[str], limits: Iterable[float] = LIMITS) -> dict:
    """All MVTec LOCO AD metrics of one category, in the structure of the official metrics.json.

    Each anomalous subset (structural, logical) is evaluated on its own anomalous images plus ALL
    good test images; ``mean`` is the arithmetic mean of the two subsets. Localization is AU-sPRO
    (one sort per subset); classification is the image ROC-AUC with the map maximum as the image
    score and the subset name as the label (docs/decisions.md#spro-metric).

    Args:
        maps: N (H_i, W_i) score arrays or one (N, H, W) array (see :func:`spro_curve`).
        regions: N sequences of regions; empty for every good image.
        subsets: N names, each "good", "logical_anomalies" or "structural_anomalies".
        limits: FPR limits of AU-sPRO, each in (0, 1].

    Returns:
        ``{"localization": {"auc_spro": {"structural_anomalies": {limit: v}, "logical_anomalies":
        {limit: v}, "mean": {limit: v}}}, "classification": {"auc_roc": {"structural_anomalies": v,
        "logical_anomalies": v, "mean": v}}}`` with Python floats, limit keys as in
        :func:`au_spro_limits`.
    """
    checked_limits = _check_limits(limits)
    image_list, checked = _validate(maps, regions)
    index = _subset_indices(subsets, checked, len(image_list))
    scores = image_scores(image_list)
    localization: dict[str, dict[str, float]] = {}
    classification: dict[str, float] = {}
    for name in SUBSETS:
        chosen = sorted(index["good"] + index[name])
        sub_maps = [image_list[i] for i in chosen]
        fpr, spro = _curve(
            sub_maps, [checked[i] for i in chosen], sub_maps, fpr_stop=max(checked_limits)
        )
        localization[name] = _areas(fpr, spro, checked_limits)
        labels = np.array([subsets[i] != "good" for i in chosen])
        classification[name] = roc_auc(scores[chosen], labels)
    localization["mean"] = {
        key: (localization[SUBSETS[0]][key] + localization[SUBSETS[1]][key]) / 2
        for key in localization[SUBSETS[0]]
    }
    classification["mean"] = (classification[SUBSETS[0]] + classification[SUBSETS[1]]) / 2
    return {
        "localization": {"auc_spro": localization},
        "classification": {"auc_roc": classification},
    }
