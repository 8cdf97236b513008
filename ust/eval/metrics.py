"""Evaluation metrics for anomaly maps and one-class scores (paper §4.1-4.2;
docs/decisions.md#au-pro-curve).

PRO / AU-PRO follows the official MVTec AD evaluation code (``mvtec_ad_evaluation``:
``pro_curve_util.compute_pro`` + ``generic_util.trapezoid``):

* ground-truth regions are the connected components of every ground-truth mask, 8-connectivity by
  default (``scipy.ndimage.label`` with a 3×3 structure of ones,
  docs/decisions.md#pro-connectivity); ``connectivity=4`` gives the thesis definition. The ``k``
  regions are counted over the **whole test set** and every region has weight 1/k, whatever its
  size;
* the FPR is pooled over **all** anomaly-free pixels of all images (``test/good`` images included);
* every distinct score is a threshold (docs/decisions.md#au-pro-curve): a pixel is positive when its
  score is ``>= s`` for the threshold ``s``, i.e. ``> t`` for a ``t`` just below ``s``. Pixels that
  share a score enter the positive set together (ties are merged into one curve point);
* the curve is prefixed with (0, 0) and suffixed with (1, 1), integrated with the trapezoidal rule up
  to ``FPR = integration_limit`` (PRO linearly interpolated at exactly that FPR) and divided by
  ``integration_limit`` so that a perfect map scores 1.0.

The curve is computed with ONE global sort of all scores and cumulative sums of per-pixel
false-positive increments and per-region ``1/(|C| k)`` increments, with no Python loop over
thresholds. For float32 maps the sort is ``np.sort`` of uint64 words that pack an order-preserving
32-bit key of the score with the pixel's 32-bit region id (8 bytes a pixel, no index array, no
random gathers); other dtypes use ``np.argsort`` like the official code. The cumulative sums are
taken chunk by chunk along the sorted order, so the memory is about 12 bytes a pixel (sort words
plus int32 region ids; float32 scores given as one (N, H, W) array are not copied) plus the returned
curve; :func:`au_pro` stops collecting points once the curve has passed ``integration_limit``.

Pixel-level ROC-AUC (all pixels pooled, docs/decisions.md#pixel-roc-auc) equals
``sklearn.metrics.roc_auc_score`` on the pooled pixels but is computed with the same sorted sweep
(exact integer counts), because scikit-learn needs minutes and several GB for the ~1e8 pixels of one
category. Image-level ROC-AUC and the one-class :func:`roc_auc` call
:func:`sklearn.metrics.roc_auc_score`; the image score is the maximum of its anomaly map
(docs/decisions.md#image-score) and an image is anomalous when any ground-truth pixel is non-zero.

Inputs: ``anomaly_maps`` is either one array of shape (N, H, W) or a sequence of N two-dimensional
arrays (the images may have different sizes); ``ground_truth`` has the same shape(s) and holds binary
masks ({0, 1}, {0, 255} or bool; 1/255/True = anomalous). Scores are unitless anomaly scores (larger =
more anomalous). float32 maps are processed in float32, float64 maps in float64 (never rounded, so
distinct scores never become ties).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

__all__ = [
    "au_pro",
    "evaluate_maps",
    "image_roc_auc",
    "image_scores",
    "pixel_roc_auc",
    "pro_curve",
    "roc_auc",
    "trapezoid",
]

# Number of sorted pixels processed per step of the chunked cumulative sums (memory knob).
_CHUNK = 1 << 22

_STRUCTURES = {
    8: np.ones((3, 3), dtype=int),
    4: ndimage.generate_binary_structure(2, 1).astype(int),
}


# ----------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------


def _as_image_list(x, name: str) -> list[np.ndarray]:
    """Return ``x`` as a list of 2-D arrays (views where possible, no copies of the data)."""
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and not isinstance(x, (list, tuple))):
        arr = np.asarray(x)
        if arr.ndim != 3:
            raise ValueError(
                f"{name} must be an array of shape (N, H, W) or a sequence of (H, W) arrays; "
                f"got an array of shape {arr.shape}"
                + (" (wrap a single image as x[None])" if arr.ndim == 2 else "")
            )
        images = list(arr)
    elif isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        images = [np.asarray(a) for a in x]
        for i, a in enumerate(images):
            if a.ndim != 2:
                raise ValueError(
                    f"{name}[{i}] must be a 2-D (H, W) array; got an array of shape {a.shape}"
                )
    else:
        raise ValueError(
            f"{name} must be an array of shape (N, H, W) or a sequence of (H, W) arrays; "
            f"got {type(x).__name__}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty: at least one image is needed")
    return images


def _check_maps(maps: list[np.ndarray], name: str = "anomaly_maps") -> None:
    for i, m in enumerate(maps):
        if not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
            raise ValueError(f"{name}[{i}] has non-numeric dtype {m.dtype}")
        if np.iscomplexobj(m):
            raise ValueError(f"{name}[{i}] is complex; anomaly scores must be real")
        if np.issubdtype(m.dtype, np.floating) and np.isnan(m).any():
            raise ValueError(
                f"{name}[{i}] contains {int(np.isnan(m).sum())} NaN score(s); "
                "replace or mask them before evaluating"
            )


def _binary_mask(g: np.ndarray, i: int) -> np.ndarray:
    """Validate one ground-truth mask and return it as bool (True = anomalous)."""
    if g.dtype == bool:
        return g
    if not (np.issubdtype(g.dtype, np.number)):
        raise ValueError(f"ground_truth[{i}] has non-numeric dtype {g.dtype}")
    nonzero = g != 0
    values = g[nonzero]
    if values.size:
        v0 = values.flat[0]
        if not (v0 == 1 or v0 == 255) or not np.all(values == v0):
            found = np.unique(g)
            shown = ", ".join(str(v) for v in found[:10]) + (", ..." if found.size > 10 else "")
            raise ValueError(
                f"ground_truth[{i}] is not a binary mask: found values {{{shown}}}; expected "
                "{0, 1}, {0, 255} or bool (threshold soft or resized masks first, e.g. mask > 0.5)"
            )
    return nonzero


def _validate(anomaly_maps, ground_truth) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate maps and masks; return (list of 2-D maps, list of 2-D bool masks)."""
    maps = _as_image_list(anomaly_maps, "anomaly_maps")
    gts = _as_image_list(ground_truth, "ground_truth")
    if len(maps) != len(gts):
        raise ValueError(
            f"got {len(maps)} anomaly maps but {len(gts)} ground-truth masks; "
            "there must be one mask per map"
        )
    for i, (m, g) in enumerate(zip(maps, gts, strict=True)):
        if m.shape != g.shape:
            raise ValueError(
                f"anomaly_maps[{i}] has shape {m.shape} but ground_truth[{i}] has shape "
                f"{g.shape}; resize the map to the mask resolution (bilinear upsampling, "
                "docs/decisions.md#evaluation-resolution)"
            )
    _check_maps(maps)
    masks = [_binary_mask(g, i) for i, g in enumerate(gts)]
    return maps, masks


def _score_dtype(maps: list[np.ndarray]) -> np.dtype:
    """float32 for float32 (and smaller) inputs, float64 otherwise: never merges distinct scores."""
    dt = np.result_type(np.float32, *[m.dtype for m in maps])
    if dt.itemsize > 8:
        dt = np.dtype(np.float64)
    return dt


def _flat_scores(maps: list[np.ndarray], anomaly_maps) -> np.ndarray:
    """All scores as one 1-D array (a view when the input already is a contiguous (N, H, W) array)."""
    dt = _score_dtype(maps)
    if isinstance(anomaly_maps, np.ndarray) and anomaly_maps.dtype == dt:
        if anomaly_maps.flags.c_contiguous:
            return anomaly_maps.reshape(-1)
    total = sum(m.size for m in maps)
    out = np.empty(total, dtype=dt)
    pos = 0
    for m in maps:
        out[pos : pos + m.size] = m.ravel()
        pos += m.size
    return out


@dataclass
class _Regions:
    labels: np.ndarray  # (P,) int32 global region id per pixel, 0 = anomaly-free
    sizes: np.ndarray  # (k,) int64 pixel count of each region (region id j -> sizes[j - 1])
    n_ok: int  # number of anomaly-free pixels over the whole set

    @property
    def k(self) -> int:
        return int(self.sizes.size)


def _label_regions(masks: list[np.ndarray], connectivity: int) -> _Regions:
    """Connected components of every mask, numbered consecutively over the whole set."""
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be 4 or 8 (pixel neighbourhood); got {connectivity!r}")
    structure = _STRUCTURES[connectivity]
    total = sum(m.size for m in masks)
    labels = np.zeros(total, dtype=np.int32)
    sizes: list[np.ndarray] = []
    offset = 0
    pos = 0
    for mask in masks:
        n_pix = mask.size
        if mask.any():
            lab, n = ndimage.label(mask, structure=structure, output=np.int32)
            counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            np.add(lab, offset, out=lab, where=lab > 0)
            labels[pos : pos + n_pix] = lab.ravel()
            sizes.append(counts.astype(np.int64))
            offset += n
        pos += n_pix
    sizes_arr = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    if offset >= np.iinfo(np.int32).max:
        raise ValueError("too many ground-truth regions for int32 labels")
    n_ok = total - int(sizes_arr.sum())
    if sizes_arr.size == 0:
        raise ValueError(
            "PRO is undefined without anomalous ground-truth pixels: every mask is empty "
            "(evaluate a set that contains defective images)"
        )
    if n_ok == 0:
        raise ValueError(
            "the FPR is undefined without anomaly-free pixels: every ground-truth pixel is "
            "anomalous (include anomaly-free images or pixels)"
        )
    return _Regions(labels=labels, sizes=sizes_arr, n_ok=n_ok)


def _check_limit(integration_limit) -> float:
    try:
        limit = float(integration_limit)
    except (TypeError, ValueError):
        raise ValueError(
            f"integration_limit must be a number in (0, 1]; got {integration_limit!r}"
        ) from None
    if not (0.0 < limit <= 1.0):
        raise ValueError(
            f"integration_limit must lie in (0, 1] (an FPR); got {integration_limit!r}, "
            "e.g. 0.3 for the MVTec AU-PRO"
        )
    return limit


# ----------------------------------------------------------------------------------------------
# One sorted sweep: PRO curve and ROC area from cumulative sums over the descending score order
# ----------------------------------------------------------------------------------------------


def _float32_sort_key(x: np.ndarray) -> np.ndarray:
    """uint32 keys ordered like the float32 scores ``x`` (no NaN); -0.0 and +0.0 get equal keys."""
    bits = (x + np.float32(0.0)).view(np.uint32)  # x + 0 turns -0.0 into +0.0
    return np.where(bits >= np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))


def _descending_chunks(scores: np.ndarray, labels: np.ndarray):
    """Yield ``(start, key, lab, next_key)`` over all pixels in descending score order.

    ``key`` (equal exactly when the scores are equal) and ``lab`` (the pixel's label) are arrays for
    the sorted positions ``start .. start + len - 1``; ``next_key`` is the key at the next position
    (``None`` after the last chunk), so a tie group crossing a chunk boundary can be detected.

    One global sort: for float32 scores the monotone 32-bit key of the score and the 32-bit label
    are packed into one uint64 and sorted in place with ``np.sort`` (no index array, no random
    gathers); otherwise ``np.argsort`` of the scores (as in the official code) and gathers.
    The order inside a group of equal scores is irrelevant because ties are merged.
    """
    n = scores.size
    if scores.dtype == np.float32:
        packed = np.empty(n, dtype=np.uint64)
        for a in range(0, n, _CHUNK):
            b = min(a + _CHUNK, n)
            seg = packed[a:b]
            seg[:] = _float32_sort_key(scores[a:b])
            seg <<= np.uint64(32)
            seg |= labels[a:b].astype(np.uint64)
        packed.sort()
        words = packed.view(np.uint32).reshape(n, 2)
        lo, hi = (0, 1) if sys.byteorder == "little" else (1, 0)
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            rows = words[n - stop : n - start][::-1]
            next_key = words[n - stop - 1, hi] if stop < n else None
            yield start, rows[:, hi], rows[:, lo], next_key
    else:
        order = np.argsort(scores)[::-1]
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            idx = order[start:stop]
            next_key = scores[order[stop]] if stop < n else None
            yield start, scores[idx], labels[idx], next_key


@dataclass
class _Sweep:
    fpr: np.ndarray | None  # (M,) PRO-curve FPRs incl. (0, 0) and (1, 1); None without weights
    pro: np.ndarray | None  # (M,) PRO values
    roc_auc: float | None  # pixel ROC-AUC; None unless requested


def _sweep(
    scores: np.ndarray,
    labels: np.ndarray,
    n_ok: int,
    weights: np.ndarray | None = None,
    fpr_stop: float | None = None,
    roc: bool = False,
) -> _Sweep:
    """Threshold sweep over all distinct scores, descending, with ties merged.

    Args:
        scores: (P,) float scores, no NaN.
        labels: (P,) non-negative ints, 0 = anomaly-free pixel; for PRO the global region id.
        n_ok: number of zero labels.
        weights: (k + 1,) float64 PRO increment per label (``weights[j] = 1 / (|C_j| k)``,
            ``weights[0] = 0``); ``None`` skips the PRO curve.
        fpr_stop: stop collecting PRO points after the first point with FPR > ``fpr_stop``
            (enough for :func:`trapezoid` with ``x_max = fpr_stop``).
        roc: also accumulate the exact trapezoidal pixel ROC area over the whole sweep.
    """
    n = scores.size
    n_pos = n - n_ok
    collecting = weights is not None
    fpr_parts: list[np.ndarray] = [np.zeros(1)]
    pro_parts: list[np.ndarray] = [np.zeros(1)]
    fp_carry = 0
    pro_carry = 0.0
    last_fp = last_tp = 0  # last ROC point (counts)
    area2 = 0  # Python int: 2 * (ROC area) * n_pos * n_ok, exact
    chunks = _descending_chunks(scores, labels)
    try:
        for start, key, lab, next_key in chunks:
            # Keep the last pixel of every group of equal scores: that point carries all of the
            # group's FP and PRO increments (the official keep_mask).
            keep = np.empty(key.size, dtype=bool)
            np.not_equal(key[1:], key[:-1], out=keep[:-1])
            keep[-1] = True if next_key is None else bool(next_key != key[-1])
            kept = np.flatnonzero(keep)
            del keep
            fp = np.cumsum(lab == 0, dtype=np.int64)
            fp += fp_carry
            fp_carry = int(fp[-1])
            fp_kept = fp[kept]
            del fp
            if roc and kept.size:
                tp_kept = (kept + (start + 1)) - fp_kept  # pixels so far minus false positives
                fp_prev = np.concatenate(([last_fp], fp_kept[:-1]))
                tp_prev = np.concatenate(([last_tp], tp_kept[:-1]))
                area2 += int(np.sum((fp_kept - fp_prev) * (tp_kept + tp_prev)))
                last_fp, last_tp = int(fp_kept[-1]), int(tp_kept[-1])
            if collecting:
                pro = np.cumsum(weights[lab])
                pro += pro_carry
                pro_carry = float(pro[-1])
                fpr_kept = fp_kept / n_ok
                fpr_parts.append(fpr_kept)
                pro_parts.append(pro[kept])
                del pro
                if fpr_stop is not None and fpr_kept.size and fpr_kept[-1] > fpr_stop:
                    collecting = False
            if not collecting and not roc:
                break
    finally:
        chunks.close()
    fpr = pro = None
    if weights is not None:
        fpr_parts.append(np.ones(1))
        pro_parts.append(np.ones(1))
        fpr = np.concatenate(fpr_parts)
        pro = np.concatenate(pro_parts)
        # As in the official code: cumulative rounding must not push the curve above 1.
        np.clip(fpr, None, 1.0, out=fpr)
        np.clip(pro, None, 1.0, out=pro)
    auc = area2 / (2 * n_pos * n_ok) if roc else None
    return _Sweep(fpr=fpr, pro=pro, roc_auc=auc)


def _pro_weights(regions: _Regions) -> np.ndarray:
    """Per-label PRO increment 1 / (|C| k); 0 for anomaly-free pixels."""
    weights = np.zeros(regions.k + 1, dtype=np.float64)
    weights[1:] = 1.0 / (regions.sizes * float(regions.k))
    return weights


# ----------------------------------------------------------------------------------------------
# Curve and integration
# ----------------------------------------------------------------------------------------------


def trapezoid(x, y, x_max: float | None = None) -> float:
    """Area under a curve with the trapezoidal rule, optionally only up to ``x_max``.

    Port of ``generic_util.trapezoid`` of the official MVTec AD evaluation: if ``x_max`` is not a
    sample of ``x``, the y value at ``x_max`` is linearly interpolated between its two neighbours and
    the partial trapezoid up to ``x_max`` is added. Non-finite points are dropped.

    Args:
        x: (M,) abscissae sorted in non-decreasing order (may repeat; e.g. FPR in [0, 1]).
        y: (M,) ordinates (e.g. PRO in [0, 1]).
        x_max: upper integration limit, inside ``[x[0], x[-1]]``; ``None`` = whole curve.

    Returns:
        The area as a Python float (units of x times units of y).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays of equal length; got {x.shape} and {y.shape}")
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        x = x[finite]
        y = y[finite]
    correction = 0.0
    if x_max is not None:
        if not np.any(x == x_max):
            ins = int(np.searchsorted(x, x_max, side="right"))  # == bisect.bisect(x, x_max)
            if not 0 < ins < x.size:
                raise ValueError(f"x_max={x_max} lies outside the sampled range [{x[0]}, {x[-1]}]")
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (
                x[ins] - x[ins - 1]
            )
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x = x[mask]
        y = y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def pro_curve(anomaly_maps, ground_truth, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap (PRO) curve over a whole test set, the curve :func:`au_pro` integrates.

    Args:
        anomaly_maps: (N, H, W) array or sequence of N (H_i, W_i) arrays of real anomaly scores
            (unitless, larger = more anomalous; no NaN).
        ground_truth: same shape(s); binary masks ({0, 1}, {0, 255} or bool; non-zero = anomalous).
        connectivity: 8 (official MVTec code, default) or 4 (thesis) for the connected components.

    Returns:
        ``(fpr, pro)``: two float64 arrays of shape (M + 2,), M = number of distinct scores. ``fpr``
        is non-decreasing, starts at 0 and ends at 1; ``pro`` (mean over all k regions of the
        fraction of the region's pixels with score >= threshold) likewise starts at 0 and ends at 1.
        Point m (1 <= m <= M) is the m-th largest distinct score used as threshold.
    """
    maps, masks = _validate(anomaly_maps, ground_truth)
    regions = _label_regions(masks, connectivity)
    scores = _flat_scores(maps, anomaly_maps)
    sweep = _sweep(scores, regions.labels, regions.n_ok, weights=_pro_weights(regions))
    return sweep.fpr, sweep.pro


def au_pro(
    anomaly_maps, ground_truth, integration_limit: float = 0.3, connectivity: int = 8
) -> float:
    """Normalised area under the PRO curve up to a false-positive rate
    (docs/decisions.md#au-pro-curve).

    Identical to the official MVTec AD evaluation (``compute_pro`` + ``trapezoid(x_max=limit)``
    divided by ``limit``): regions are connected components counted over the whole set, the FPR is
    pooled over all anomaly-free pixels of all images, every distinct score is a threshold with ties
    merged, and PRO is linearly interpolated at exactly ``FPR = integration_limit``.

    Args:
        anomaly_maps: (N, H, W) array or sequence of N (H_i, W_i) arrays of real anomaly scores
            (unitless, larger = more anomalous; no NaN). Use float32 for large sets.
        ground_truth: same shape(s); binary masks ({0, 1}, {0, 255} or bool; non-zero = anomalous).
            At least one anomalous and one anomaly-free pixel are required.
        integration_limit: FPR up to which the curve is integrated, in (0, 1]; 0.3 for MVTec AD,
            0.05 / 0.01 / 1.0 for the other thesis variants.
        connectivity: 8 (official code, default) or 4 (thesis definition) for the GT regions.

    Returns:
        AU-PRO in [0, 1] as a Python float (1.0 = every region fully detected before any false
        positive; about ``integration_limit / 2`` for random scores).
    """
    limit = _check_limit(integration_limit)
    maps, masks = _validate(anomaly_maps, ground_truth)
    regions = _label_regions(masks, connectivity)
    scores = _flat_scores(maps, anomaly_maps)
    sweep = _sweep(
        scores, regions.labels, regions.n_ok, weights=_pro_weights(regions), fpr_stop=limit
    )
    return trapezoid(sweep.fpr, sweep.pro, x_max=limit) / limit


# ----------------------------------------------------------------------------------------------
# ROC-AUC
# ----------------------------------------------------------------------------------------------


def roc_auc(scores, labels) -> float:
    """ROC-AUC of scalar anomaly scores (one-class experiments,
    docs/decisions.md#oneclass-protocol).

    Args:
        scores: (n,) real anomaly scores, larger = more anomalous (no NaN).
        labels: (n,) binary labels, 1/True = anomalous, 0/False = normal; both must be present.

    Returns:
        Area under the ROC curve in [0, 1] (Python float), via ``sklearn.metrics.roc_auc_score``.
    """
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D; got shapes {s.shape} and {y.shape}")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"scores and labels must have the same length; got {s.size} and {y.size}")
    if not np.issubdtype(s.dtype, np.number) or np.iscomplexobj(s):
        raise ValueError(f"scores must be real numbers; got dtype {s.dtype}")
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s)")
    if y.dtype != bool:
        if not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"labels must be 0/1 or bool; got dtype {y.dtype}")
        bad = ~((y == 0) | (y == 1))
        if bad.any():
            raise ValueError(
                f"labels must be 0/1 or bool (1 = anomalous); found values {np.unique(y)[:10]}"
            )
        y = y == 1
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            "ROC-AUC needs both classes: "
            f"found {n_pos} anomalous (label 1) and {y.size - n_pos} normal (label 0) samples"
        )
    return float(roc_auc_score(y, s))


def _pixel_labels(masks: list[np.ndarray]) -> np.ndarray:
    """(P,) uint8 pooled ground truth, 1 = anomalous."""
    y = np.empty(sum(m.size for m in masks), dtype=np.uint8)
    pos = 0
    for m in masks:
        y[pos : pos + m.size] = m.ravel()
        pos += m.size
    return y


def pixel_roc_auc(anomaly_maps, ground_truth) -> float:
    """Pixel-level ROC-AUC over all pixels of all images pooled (full curve,
    docs/decisions.md#pixel-roc-auc).

    The value is that of ``sklearn.metrics.roc_auc_score(pooled_masks, pooled_scores)`` (every
    distinct score a threshold, trapezoidal area; the tests check agreement to 1e-12), computed
    with the same single sort and cumulative integer counts as :func:`au_pro`, because
    scikit-learn needs ~2 minutes and ~5 GB for the 1e8 pixels of one MVTec category.

    Args:
        anomaly_maps: (N, H, W) array or sequence of (H_i, W_i) arrays of real anomaly scores.
        ground_truth: same shape(s); binary masks ({0, 1}, {0, 255} or bool; non-zero = anomalous).
            Both anomalous and anomaly-free pixels are required.

    Returns:
        Area under the pixel ROC curve in [0, 1], a Python float.
    """
    maps, masks = _validate(anomaly_maps, ground_truth)
    y = _pixel_labels(masks)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            "pixel ROC-AUC needs anomalous and anomaly-free pixels: "
            f"found {n_pos} anomalous of {y.size} pixels"
        )
    scores = _flat_scores(maps, anomaly_maps)
    return float(_sweep(scores, y, y.size - n_pos, roc=True).roc_auc)


def image_scores(anomaly_maps) -> np.ndarray:
    """Image-level anomaly score = maximum of each anomaly map (docs/decisions.md#image-score).

    Args:
        anomaly_maps: (N, H, W) array or sequence of N (H_i, W_i) arrays (no NaN).

    Returns:
        (N,) float64 array, the per-image maximum score.
    """
    maps = _as_image_list(anomaly_maps, "anomaly_maps")
    _check_maps(maps)
    return np.array([float(np.max(m)) for m in maps], dtype=np.float64)


def _image_roc_auc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    scores = np.array([float(np.max(m)) for m in maps], dtype=np.float64)
    labels = np.array([bool(m.any()) for m in masks])
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise ValueError(
            "image ROC-AUC needs both anomalous and anomaly-free images: "
            f"found {n_pos} image(s) with anomalous ground truth out of {labels.size}"
        )
    return float(roc_auc_score(labels, scores))


def image_roc_auc(anomaly_maps, ground_truth) -> float:
    """Image-level ROC-AUC: score = max of the map, label = any GT pixel > 0
    (docs/decisions.md#image-score).

    Args:
        anomaly_maps: (N, H, W) array or sequence of (H_i, W_i) arrays of real anomaly scores.
        ground_truth: same shape(s); binary masks. Both defective and defect-free images needed.

    Returns:
        ``sklearn.metrics.roc_auc_score`` over the N images, a Python float.
    """
    maps, masks = _validate(anomaly_maps, ground_truth)
    return _image_roc_auc(maps, masks)


def evaluate_maps(
    anomaly_maps, ground_truth, integration_limit: float = 0.3, connectivity: int = 8
) -> dict[str, float]:
    """All map-level metrics of one category at once (the dict written to ``metrics.json``).

    Inputs are validated, flattened and sorted once. See :func:`au_pro`, :func:`pixel_roc_auc` and
    :func:`image_roc_auc` for the definitions.

    Args:
        anomaly_maps: (N, H, W) array or sequence of (H_i, W_i) arrays of real anomaly scores,
            at ground-truth resolution.
        ground_truth: same shape(s); binary masks ({0, 1}, {0, 255} or bool).
        integration_limit: FPR limit of AU-PRO, in (0, 1].
        connectivity: 8 (default, official) or 4 for the PRO regions.

    Returns:
        ``{"au_pro": float, "pixel_auroc": float, "image_auroc": float}`` (Python floats).
    """
    limit = _check_limit(integration_limit)
    maps, masks = _validate(anomaly_maps, ground_truth)
    regions = _label_regions(masks, connectivity)
    image_auroc = _image_roc_auc(maps, masks)
    scores = _flat_scores(maps, anomaly_maps)
    # One sweep for both: PRO points up to the limit, ROC counts over the whole curve.
    sweep = _sweep(
        scores,
        regions.labels,
        regions.n_ok,
        weights=_pro_weights(regions),
        fpr_stop=limit,
        roc=True,
    )
    return {
        "au_pro": trapezoid(sweep.fpr, sweep.pro, x_max=limit) / limit,
        "pixel_auroc": float(sweep.roc_auc),
        "image_auroc": image_auroc,
    }
