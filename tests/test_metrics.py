"""Tests for ust.eval.metrics (docs/decisions.md#au-pro-curve): AU-PRO against hand computations
and a literal port of the official MVTec AD evaluation, ROC-AUC against scikit-learn, and input
validation."""

from __future__ import annotations

from bisect import bisect

import numpy as np
import pytest
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score

import ust.eval.metrics as metrics
from ust.eval.metrics import (
    au_pro,
    evaluate_maps,
    image_roc_auc,
    image_scores,
    pixel_roc_auc,
    pro_curve,
    roc_auc,
    trapezoid,
)

# ----------------------------------------------------------------------------------------------
# Reference: literal, loop-based port of the official algorithm (mvtec_ad_evaluation
# pro_curve_util.compute_pro + generic_util.trapezoid), one threshold at a time.
# ----------------------------------------------------------------------------------------------


def ref_compute_pro(anomaly_maps, ground_truth_maps, connectivity=8):
    structure = (
        np.ones((3, 3), dtype=int)
        if connectivity == 8
        else np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    )
    ok_scores = []
    components = []
    for prediction, gt_map in zip(anomaly_maps, ground_truth_maps, strict=True):
        labeled, n_components = label(np.asarray(gt_map) > 0, structure)
        ok_scores.append(prediction[labeled == 0])
        for k in range(n_components):
            components.append(prediction[labeled == (k + 1)])
    ok_scores = np.concatenate(ok_scores)
    all_scores = np.concatenate([np.ravel(m) for m in anomaly_maps])
    fprs = [0.0]
    pros = [0.0]
    # Every distinct score is a threshold; a pixel is positive if its score >= threshold.
    for threshold in np.unique(all_scores)[::-1]:
        fprs.append(np.sum(ok_scores >= threshold) / ok_scores.size)
        pros.append(np.mean([np.sum(c >= threshold) / c.size for c in components]))
    fprs.append(1.0)
    pros.append(1.0)
    return np.clip(fprs, None, 1.0), np.clip(pros, None, 1.0)


def ref_trapezoid(x, y, x_max=None):
    x = np.asarray(x)
    y = np.asarray(y)
    finite_mask = np.logical_and(np.isfinite(x), np.isfinite(y))
    x = x[finite_mask]
    y = y[finite_mask]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + (
                (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            )
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x = x[mask]
        y = y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def ref_au_pro(maps, gts, limit, connectivity=8):
    fprs, pros = ref_compute_pro(maps, gts, connectivity)
    return ref_trapezoid(fprs, pros, x_max=limit) / limit


# ----------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------


def blob_masks(rng, n_images, h, w, p_good=0.25):
    """Masks with 1-3 rectangles/discs of random sizes; some images are anomaly-free."""
    masks = np.zeros((n_images, h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n_images):
        if rng.random() < p_good:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r = rng.integers(1, max(2, min(h, w) // 5))
            if rng.random() < 0.5:
                masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
            else:
                masks[i, max(cy - r, 0) : cy + r, max(cx - r, 0) : cx + 1] = 1
    masks[-1] = 0  # at least one good image
    masks[0, 1:3, 1:3] = 1  # at least one region
    return masks


def diagonal_blobs(h=16, w=16):
    """A mask with blobs of different sizes that touch only diagonally (1 region with 8-conn,
    2 regions with 4-conn)."""
    m = np.zeros((h, w), dtype=np.uint8)
    m[2:5, 2:5] = 1  # 3x3 blob
    m[5, 5] = 1  # single pixel touching (4, 4) diagonally
    m[9:11, 9:13] = 1  # 2x4 blob
    m[11:13, 13:14] = 1  # 2x1 blob touching (10, 12) diagonally
    return m


def tied_maps(rng, masks, decimals=2):
    """Scores rounded to `decimals` (many ties spanning normal and anomalous pixels), shifted up
    inside the anomalous regions so the curve is informative."""
    scores = rng.random(masks.shape) * 0.7 + 0.3 * masks * rng.random(masks.shape)
    return np.round(scores, decimals)


# ----------------------------------------------------------------------------------------------
# Basic properties
# ----------------------------------------------------------------------------------------------


def test_perfect_map_gives_one():
    rng = np.random.default_rng(0)
    masks = blob_masks(rng, 6, 20, 20)
    # Anomalous pixels in [0.6, 1), anomaly-free in [0, 0.4): a perfect separation.
    maps = np.where(masks > 0, 0.6 + 0.4 * rng.random(masks.shape), 0.4 * rng.random(masks.shape))
    assert au_pro(maps, masks) == pytest.approx(1.0, abs=1e-12)
    assert au_pro(maps, masks, integration_limit=0.01) == pytest.approx(1.0, abs=1e-12)
    assert pixel_roc_auc(maps, masks) == pytest.approx(1.0)


def test_inverted_map_gives_zero():
    rng = np.random.default_rng(1)
    masks = blob_masks(rng, 6, 20, 20)
    maps = np.where(masks > 0, 0.4 * rng.random(masks.shape), 0.6 + 0.4 * rng.random(masks.shape))
    # No region pixel becomes positive before every anomaly-free pixel is: PRO = 0 for FPR < 1.
    assert au_pro(maps, masks) == pytest.approx(0.0, abs=1e-12)
    assert au_pro(maps, masks, integration_limit=1.0) == pytest.approx(0.0, abs=1e-12)
    assert pixel_roc_auc(maps, masks) == pytest.approx(0.0)


def test_random_maps_give_half_the_limit():
    # For scores independent of the ground truth PRO(FPR) ~ FPR, so AU-PRO(0.3) ~ 0.3 / 2 = 0.15.
    rng = np.random.default_rng(2)
    masks = blob_masks(rng, 60, 64, 64)
    maps = rng.random(masks.shape, dtype=np.float32)
    assert au_pro(maps, masks) == pytest.approx(0.15, abs=0.02)
    assert au_pro(maps, masks, integration_limit=1.0) == pytest.approx(0.5, abs=0.03)
    assert pixel_roc_auc(maps, masks) == pytest.approx(0.5, abs=0.02)


# ----------------------------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------------------------


def test_ties_hand_computed():
    # scores          gt
    # 0.9 0.5 0.5     1 1 0
    # 0.5 0.1 0.1     0 0 0
    # One region {0.9, 0.5}; anomaly-free scores {0.5, 0.5, 0.1, 0.1} (n_ok = 4).
    # t = 0.9: FPR 0,   PRO 1/2
    # t = 0.5: the region pixel and two normal pixels (all 0.5) enter together: FPR 2/4, PRO 1
    # t = 0.1: FPR 1,   PRO 1
    # Curve (0,0) (0,.5) (.5,1) (1,1) (1,1). PRO at FPR 0.3 = 0.5 + 0.5 * 0.3/0.5 = 0.8,
    # area = 0.5 * (0.5 + 0.8) * 0.3 = 0.195, AU-PRO(0.3) = 0.195 / 0.3 = 0.65.
    # (Entering tied pixels one at a time would give 1.0 or 0.5 + ... depending on the order.)
    # AU-PRO(1.0) = 0.5 * (0.5 + 1) * 0.5 + 1 * 0.5 = 0.875.
    maps = np.array([[[0.9, 0.5, 0.5], [0.5, 0.1, 0.1]]])
    gt = np.array([[[1, 1, 0], [0, 0, 0]]])
    assert au_pro(maps, gt) == pytest.approx(0.65, abs=1e-12)
    assert au_pro(maps, gt, integration_limit=1.0) == pytest.approx(0.875, abs=1e-12)
    fpr, pro = pro_curve(maps, gt)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 1, 1, 1])


def test_two_regions_of_different_size_in_different_images_hand_computed():
    # Image 1: scores 0.8 0.6 0.4 0.2, gt 1 1 1 0 -> region A (size 3) {0.8, 0.6, 0.4}
    # Image 2: scores 0.7 0.3 0.5 0.1, gt 1 0 0 0 -> region B (size 1) {0.7}
    # k = 2 regions over the whole set; anomaly-free {0.2, 0.3, 0.5, 0.1} (n_ok = 4).
    # t=0.8: PRO (1/3 + 0)/2 = 1/6, FPR 0      t=0.7: PRO (1/3 + 1)/2 = 2/3, FPR 0
    # t=0.6: PRO (2/3 + 1)/2 = 5/6, FPR 0      t=0.5: FPR 1/4
    # t=0.4: PRO 1, FPR 1/4                    then FPR 1/2, 3/4, 1 at PRO 1.
    # AU-PRO(0.3) = (0.25 * 5/6 + 0.05 * 1) / 0.3 = (31/120) / 0.3 = 31/36.
    # (Pixel-weighted instead of region-weighted overlap would give a different value.)
    maps = [np.array([[0.8, 0.6, 0.4, 0.2]]), np.array([[0.7, 0.3, 0.5, 0.1]])]
    gts = [np.array([[1, 1, 1, 0]]), np.array([[1, 0, 0, 0]])]
    assert au_pro(maps, gts) == pytest.approx(31 / 36, abs=1e-12)
    fpr, pro = pro_curve(maps, gts)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1, 1])
    np.testing.assert_allclose(pro, [0, 1 / 6, 2 / 3, 5 / 6, 5 / 6, 1, 1, 1, 1, 1])


def test_connectivity_hand_computed():
    # scores          gt        8-conn: one region of 3 px; 4-conn: {(0,0),(0,1)} and {(1,2)}
    # 0.9 0.2 0.5     1 1 0     anomaly-free: 0.5 and five 0.0 (n_ok = 6)
    # 0.0 0.0 0.8     0 0 1
    # 0.0 0.0 0.0     0 0 0
    # t=0.9: PRO8 = 1/3, PRO4 = (1/2 + 0)/2 = 1/4      t=0.8: PRO8 = 2/3, PRO4 = (1/2 + 1)/2 = 3/4
    # t=0.5: FPR 1/6                                    t=0.2: PRO 1 (both), FPR 1/6
    # AU-PRO8(0.3) = (1/6 * 2/3 + (0.3 - 1/6) * 1) / 0.3 = (11/45) / 0.3 = 22/27
    # AU-PRO4(0.3) = (1/6 * 3/4 + (0.3 - 1/6) * 1) / 0.3 = (31/120) / 0.3 = 31/36
    maps = np.array([[[0.9, 0.2, 0.5], [0.0, 0.0, 0.8], [0.0, 0.0, 0.0]]])
    gt = np.array([[[1, 1, 0], [0, 0, 1], [0, 0, 0]]])
    assert au_pro(maps, gt) == pytest.approx(22 / 27, abs=1e-12)
    assert au_pro(maps, gt, connectivity=8) == pytest.approx(22 / 27, abs=1e-12)
    assert au_pro(maps, gt, connectivity=4) == pytest.approx(31 / 36, abs=1e-12)


def test_trapezoid_interpolates_at_limit():
    # Segment (0, 0) -> (1, 1): PRO(0.3) = 0.3, area = 0.5 * 0.3 * 0.3 = 0.045.
    assert trapezoid([0, 1], [0, 1], x_max=0.3) == pytest.approx(0.045)
    # x_max is a sample: no correction; vertical step at x = 0 contributes nothing.
    assert trapezoid([0, 0, 0.5, 1], [0, 1, 1, 1], x_max=0.5) == pytest.approx(0.5)
    assert trapezoid([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.75)


def test_roc_auc_hand_computed():
    # Anomalous scores {0.2, 0.5}, normal {0.3, 0.1}: 3 of the 4 (anomalous, normal) pairs are
    # ranked correctly -> 0.75.
    assert roc_auc([0.3, 0.2, 0.5, 0.1], [0, 1, 1, 0]) == pytest.approx(0.75)
    assert roc_auc(
        np.array([0.3, 0.2, 0.5, 0.1]), np.array([False, True, True, False])
    ) == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------------
# Agreement with the literal port of the official code
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_matches_official_reference_with_ties(limit, connectivity):
    rng = np.random.default_rng(10 + connectivity)
    masks = blob_masks(rng, 8, 24, 24)
    masks[1] = diagonal_blobs(24, 24)
    maps = tied_maps(rng, masks)
    assert len(np.unique(maps)) < maps.size // 10  # genuinely many ties
    expected = ref_au_pro(list(maps), list(masks), limit, connectivity)
    assert au_pro(maps, masks, integration_limit=limit, connectivity=connectivity) == pytest.approx(
        expected, abs=1e-6
    )


def test_connectivity_changes_result_on_diagonal_blobs():
    rng = np.random.default_rng(3)
    masks = np.stack([diagonal_blobs(), np.zeros((16, 16), np.uint8)])
    maps = tied_maps(rng, masks)
    a4 = au_pro(maps, masks, connectivity=4)
    a8 = au_pro(maps, masks, connectivity=8)
    assert a4 == pytest.approx(ref_au_pro(list(maps), list(masks), 0.3, 4), abs=1e-6)
    assert a8 == pytest.approx(ref_au_pro(list(maps), list(masks), 0.3, 8), abs=1e-6)
    assert abs(a4 - a8) > 1e-3


def test_pro_curve_matches_reference_curve():
    rng = np.random.default_rng(4)
    masks = blob_masks(rng, 5, 16, 16)
    maps = tied_maps(rng, masks, decimals=1)
    fpr, pro = pro_curve(maps, masks)
    ref_fpr, ref_pro = ref_compute_pro(list(maps), list(masks))
    assert fpr.shape == (np.unique(maps).size + 2,)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(pro, ref_pro, atol=1e-12)
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # packed-key sort / argsort paths
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_chunked_sweep_and_early_stop_match_reference(monkeypatch, limit, dtype):
    # Tiny chunks: tie groups straddle chunk boundaries and au_pro stops collecting early.
    monkeypatch.setattr(metrics, "_CHUNK", 7)
    rng = np.random.default_rng(5)
    masks = blob_masks(rng, 4, 12, 12)
    maps = tied_maps(rng, masks, decimals=2).astype(dtype)
    expected = ref_au_pro(list(maps), list(masks), limit)
    assert au_pro(maps, masks, integration_limit=limit) == pytest.approx(expected, abs=1e-9)
    fpr, pro = pro_curve(maps, masks)
    ref_fpr, ref_pro = ref_compute_pro(list(maps), list(masks))
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(pro, ref_pro, atol=1e-12)
    sk = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_roc_auc(maps, masks) == pytest.approx(sk, abs=1e-12)
    out = evaluate_maps(maps, masks, integration_limit=limit)
    assert out["au_pro"] == pytest.approx(expected, abs=1e-9)
    assert out["pixel_auroc"] == pytest.approx(sk, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_signed_zero_and_infinite_scores(dtype):
    # -0.0 and +0.0 are the same score (one tie group); negatives and +-inf sort correctly.
    rng = np.random.default_rng(12)
    masks = blob_masks(rng, 4, 10, 10)
    values = np.array([-np.inf, -2.5, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0, np.inf])
    maps = rng.choice(values, size=masks.shape).astype(dtype)
    maps[masks > 0] = np.abs(maps[masks > 0])  # a little signal
    assert np.signbit(maps[maps == 0]).any() and not np.signbit(maps[maps == 0]).all()
    for limit in (0.05, 0.3, 1.0):
        assert au_pro(maps, masks, integration_limit=limit) == pytest.approx(
            ref_au_pro(list(maps.astype(np.float64)), list(masks), limit), abs=1e-9
        )
    fpr, _ = pro_curve(maps, masks)
    assert fpr.size == np.unique(maps).size + 2  # np.unique treats -0.0 == +0.0
    # scikit-learn rejects inf: compare on finite scores with the same ranking.
    finite = np.nan_to_num(maps.astype(np.float64), posinf=1e300, neginf=-1e300)
    assert pixel_roc_auc(maps, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), finite.ravel()), abs=1e-12
    )


def test_continuous_float64_scores_match_reference():
    rng = np.random.default_rng(6)
    masks = blob_masks(rng, 4, 12, 12)
    maps = rng.random(masks.shape) + 0.2 * masks
    for limit in (0.05, 0.3):
        assert au_pro(maps, masks, integration_limit=limit) == pytest.approx(
            ref_au_pro(list(maps), list(masks), limit), abs=1e-9
        )


def test_float64_scores_are_not_rounded_to_float32():
    # 1 + 1e-12 and 1 are distinct in float64 but equal in float32: as distinct scores the region
    # pixel enters first (AU-PRO 1); merged as a tie it would enter with a false positive.
    maps = np.array([[[1.0 + 1e-12, 1.0, 0.0]]])
    gt = np.array([[[1, 0, 0]]])
    assert au_pro(maps, gt) == pytest.approx(1.0, abs=1e-12)
    assert au_pro(maps.astype(np.float32), gt) < 0.9


# ----------------------------------------------------------------------------------------------
# Input formats
# ----------------------------------------------------------------------------------------------


def test_list_of_different_size_images():
    rng = np.random.default_rng(7)
    shapes = [(5, 7), (8, 3), (10, 10), (4, 6)]
    gts = [np.zeros(s, dtype=np.uint8) for s in shapes]
    gts[0][1:3, 2:5] = 1
    gts[1][6:8, 0:2] = 1
    gts[2][0, 0] = 1
    gts[2][5:9, 5:7] = 1
    maps = [
        np.round(rng.random(s) + 0.3 * g, 2).astype(np.float32)
        for s, g in zip(shapes, gts, strict=True)
    ]
    for limit in (0.05, 0.3, 1.0):
        assert au_pro(maps, gts, integration_limit=limit) == pytest.approx(
            ref_au_pro(maps, gts, limit), abs=1e-6
        )
    y = np.concatenate([g.ravel() for g in gts])
    s = np.concatenate([m.ravel() for m in maps])
    assert pixel_roc_auc(maps, gts) == pytest.approx(roc_auc_score(y, s))
    np.testing.assert_array_equal(image_scores(maps), [m.max() for m in maps])


def test_mask_encodings_and_containers_agree():
    rng = np.random.default_rng(8)
    masks = blob_masks(rng, 5, 16, 16)
    maps = tied_maps(rng, masks).astype(np.float32)
    base = au_pro(maps, masks)
    assert au_pro(maps, masks * 255) == pytest.approx(base, abs=1e-12)
    assert au_pro(maps, masks.astype(bool)) == pytest.approx(base, abs=1e-12)
    assert au_pro(maps, masks.astype(np.float32)) == pytest.approx(base, abs=1e-12)
    assert au_pro(list(maps), list(masks)) == pytest.approx(base, abs=1e-12)
    assert au_pro(maps.astype(np.float64), masks) == pytest.approx(base, abs=1e-12)
    assert base == pytest.approx(ref_au_pro(list(maps), list(masks), 0.3), abs=1e-6)


def test_pixel_and_image_roc_auc_match_sklearn():
    rng = np.random.default_rng(9)
    masks = blob_masks(rng, 10, 12, 12, p_good=0.4)
    maps = rng.random(masks.shape) + 0.5 * masks
    y_pix = masks.ravel() > 0
    assert pixel_roc_auc(maps, masks) == pytest.approx(
        roc_auc_score(y_pix, maps.ravel()), abs=1e-12
    )
    y_img = masks.reshape(10, -1).max(axis=1) > 0
    s_img = maps.reshape(10, -1).max(axis=1)
    assert 0 < y_img.sum() < 10
    assert image_roc_auc(maps, masks) == pytest.approx(roc_auc_score(y_img, s_img), abs=1e-12)
    np.testing.assert_array_equal(image_scores(maps), s_img)


def test_image_roc_auc_hand_computed():
    # Image maxima 0.9 (anomalous), 0.4 (good), 0.6 (anomalous), 0.7 (good):
    # pairs (0.9>0.4, 0.9>0.7, 0.6>0.4, 0.6<0.7) -> 3/4.
    maps = np.zeros((4, 3, 3))
    for i, v in enumerate([0.9, 0.4, 0.6, 0.7]):
        maps[i, 1, 1] = v
    masks = np.zeros((4, 3, 3), dtype=np.uint8)
    masks[0, 0, 0] = masks[2, 2, 2] = 1
    assert image_roc_auc(maps, masks) == pytest.approx(0.75)


def test_evaluate_maps_returns_python_floats():
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 6, 16, 16, p_good=0.4)
    maps = tied_maps(rng, masks).astype(np.float32)
    out = evaluate_maps(maps, masks, integration_limit=0.3)
    assert set(out) == {"au_pro", "pixel_auroc", "image_auroc"}
    assert all(type(v) is float for v in out.values())
    assert out["au_pro"] == pytest.approx(au_pro(maps, masks), abs=1e-12)
    assert out["pixel_auroc"] == pytest.approx(pixel_roc_auc(maps, masks), abs=1e-12)
    assert out["image_auroc"] == pytest.approx(image_roc_auc(maps, masks), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _ok_pair():
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[0, 1, 1] = 1.0
    gts = np.zeros((2, 4, 4), dtype=np.uint8)
    gts[0, 1, 1] = 1
    return maps, gts


def test_shape_mismatch_names_index_and_shapes():
    maps, gts = _ok_pair()
    bad_gts = [gts[0], np.zeros((4, 5), np.uint8)]
    with pytest.raises(
        ValueError,
        match=r"anomaly_maps\[1\] has shape \(4, 4\) but ground_truth\[1\] has shape \(4, 5\)",
    ):
        au_pro(list(maps), bad_gts)
    with pytest.raises(ValueError, match=r"2 anomaly maps but 1 ground-truth masks"):
        au_pro(maps, gts[:1])
    with pytest.raises(ValueError, match=r"shape \(N, H, W\).*\(4, 4\)"):
        au_pro(maps[0], gts[0])
    with pytest.raises(ValueError, match=r"ground_truth\[0\] must be a 2-D"):
        au_pro(list(maps), [gts[0][None], gts[1]])
    with pytest.raises(ValueError, match=r"anomaly_maps is empty"):
        au_pro([], [])


def test_non_binary_mask_reports_values():
    maps, gts = _ok_pair()
    gts[1, 0, 0] = 2
    with pytest.raises(
        ValueError, match=r"ground_truth\[1\] is not a binary mask: found values \{0, 2\}"
    ):
        au_pro(maps, gts)
    gts[1, 0, 0] = 0
    gts[0, 2, 2] = 255  # 1 and 255 mixed in one mask
    with pytest.raises(
        ValueError, match=r"ground_truth\[0\] is not a binary mask: found values \{0, 1, 255\}"
    ):
        pixel_roc_auc(maps, gts)
    soft = gts.astype(np.float32) * 0.5
    with pytest.raises(ValueError, match=r"not a binary mask: found values \{0.0, 0.5"):
        image_roc_auc(maps, soft)


def test_no_anomalous_pixel():
    maps, gts = _ok_pair()
    with pytest.raises(ValueError, match=r"PRO is undefined without anomalous ground-truth pixels"):
        au_pro(maps, np.zeros_like(gts))
    with pytest.raises(
        ValueError, match=r"pixel ROC-AUC needs anomalous and anomaly-free pixels: found 0"
    ):
        pixel_roc_auc(maps, np.zeros_like(gts))


def test_no_anomaly_free_pixel():
    maps, gts = _ok_pair()
    with pytest.raises(ValueError, match=r"FPR is undefined without anomaly-free pixels"):
        au_pro(maps, np.ones_like(gts))
    with pytest.raises(
        ValueError, match=r"image ROC-AUC needs both anomalous and anomaly-free images: found 2"
    ):
        image_roc_auc(maps, np.ones_like(gts))


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5, float("nan")])
def test_integration_limit_out_of_range(limit):
    maps, gts = _ok_pair()
    with pytest.raises(ValueError, match=r"integration_limit must lie in \(0, 1\]"):
        au_pro(maps, gts, integration_limit=limit)
    with pytest.raises(ValueError, match=r"integration_limit must lie in \(0, 1\]"):
        evaluate_maps(maps, gts, integration_limit=limit)


def test_bad_connectivity():
    maps, gts = _ok_pair()
    with pytest.raises(ValueError, match=r"connectivity must be 4 or 8.*got 6"):
        au_pro(maps, gts, connectivity=6)
    with pytest.raises(ValueError, match=r"connectivity must be 4 or 8"):
        pro_curve(maps, gts, connectivity=2)


def test_nan_in_maps():
    maps, gts = _ok_pair()
    maps[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"anomaly_maps\[1\] contains 1 NaN score"):
        au_pro(maps, gts)
    with pytest.raises(ValueError, match=r"anomaly_maps\[1\] contains 1 NaN score"):
        image_scores(maps)
    with pytest.raises(ValueError, match=r"anomaly_maps\[1\] contains 1 NaN score"):
        evaluate_maps(maps, gts)


def test_roc_auc_input_checks():
    with pytest.raises(ValueError, match=r"same length; got 3 and 2"):
        roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match=r"needs both classes: found 0 anomalous"):
        roc_auc([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match=r"labels must be 0/1 or bool"):
        roc_auc([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match=r"scores contain 1 NaN"):
        roc_auc([0.1, np.nan, 0.3], [0, 1, 0])
    with pytest.raises(ValueError, match=r"must be 1-D"):
        roc_auc([[0.1, 0.2]], [[0, 1]])


def test_pixel_roc_auc_hand_computed_with_ties():
    # Anomalous scores {0.5, 0.9}, anomaly-free {0.5, 0.1}: pairs (0.5 vs 0.5) tie -> 1/2,
    # (0.5 > 0.1), (0.9 > 0.5), (0.9 > 0.1) -> (0.5 + 3) / 4 = 0.875.
    maps = np.array([[[0.5, 0.9], [0.5, 0.1]]], dtype=np.float32)
    gt = np.array([[[1, 1], [0, 0]]])
    assert pixel_roc_auc(maps, gt) == pytest.approx(0.875, abs=1e-12)
