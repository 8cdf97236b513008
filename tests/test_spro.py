"""Tests for ust.eval.spro (docs/decisions.md#spro-metric): AU-sPRO against AU-PRO, against a
literal threshold-by-threshold reference, hand-computed cases, input validation and the
evaluate_loco structure."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.ndimage import label

import ust.eval.metrics as metrics
from ust.data.dataset import Region
from ust.eval.metrics import au_pro, pro_curve, trapezoid
from ust.eval.spro import (
    LIMITS,
    au_spro,
    au_spro_limits,
    evaluate_loco,
    spro_curve,
)

# ----------------------------------------------------------------------------------------------
# Reference: the definition taken literally, one threshold at a time.
# ----------------------------------------------------------------------------------------------


def ref_spro_curve(maps, regions):
    """Every distinct score t (descending) and t = -inf; P = {score > t}; plain numpy counts."""
    all_scores = np.concatenate([np.ravel(m) for m in maps]).astype(np.float64)
    thresholds = list(np.unique(all_scores)[::-1]) + [-np.inf]
    negatives = []
    parts = []
    for m, image_regions in zip(maps, regions, strict=True):
        union = np.zeros(m.shape, dtype=bool)
        for r in image_regions:
            union |= r.mask
            parts.append((m[r.mask].astype(np.float64), float(r.saturation)))
        negatives.append(m[~union].astype(np.float64))
    negatives = np.concatenate(negatives)
    fprs, spros = [], []
    for t in thresholds:
        fprs.append(np.sum(negatives > t) / negatives.size)
        spros.append(np.mean([min(np.sum(v > t) / s, 1.0) for v, s in parts]))
    return np.array(fprs), np.array(spros)


def ref_au_spro(maps, regions, limit):
    fprs, spros = ref_spro_curve(maps, regions)
    return trapezoid(fprs, spros, x_max=limit) / limit


# ----------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------


def _rect(shape, rng):
    h, w = shape
    y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + rng.integers(2, 5), x0 : x0 + rng.integers(2, 5)] = True
    return mask


def loco_like(rng, n_images=6, shape=(9, 11), n_good=2, decimals=1):
    """Quantised maps (many ties) and regions with s < |C|, overlaps and disconnected regions."""
    maps, regions = [], []
    for i in range(n_images):
        image_regions = []
        if i >= n_good:
            for j in range(rng.integers(1, 4)):
                mask = _rect(shape, rng)
                if j == 1:  # a disconnected region: two rectangles, one annotation
                    mask |= _rect(shape, rng)
                area = int(mask.sum())
                s = [area, max(1, area // 2), area * rng.uniform(0.2, 1.0)][j % 3]
                image_regions.append(Region(mask, s))
            if len(image_regions) > 1:  # force an overlap between the first two regions
                first = image_regions[0].mask
                ys, xs = np.nonzero(first)
                second = image_regions[1].mask.copy()
                second[ys[0], xs[0]] = True
                image_regions[1] = Region(second, min(image_regions[1].saturation, second.sum()))
        union = np.zeros(shape, dtype=bool)
        for r in image_regions:
            union |= r.mask
        m = np.round(rng.random(shape) + 0.5 * union, decimals)
        maps.append(m)
        regions.append(image_regions)
    return maps, regions


def component_regions(masks):
    """Connected components (8-connectivity, as metrics.au_pro) with s = |C|."""
    out = []
    for mask in masks:
        lab, n = label(mask, np.ones((3, 3), dtype=int))
        out.append([Region(lab == c, int((lab == c).sum())) for c in range(1, n + 1)])
    return out


# ----------------------------------------------------------------------------------------------
# Agreement with AU-PRO and with the literal reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_equals_au_pro_when_saturation_is_the_area(limit):
    rng = np.random.default_rng(0)
    masks = np.zeros((7, 24, 20), dtype=bool)
    for i in range(2, 7):  # images 0 and 1 are good
        for _ in range(rng.integers(1, 4)):
            masks[i] |= _rect((24, 20), rng)
    maps = (rng.random(masks.shape) + 0.4 * masks).astype(np.float32)
    regions = component_regions(masks)
    assert au_spro(maps, regions, integration_limit=limit) == pytest.approx(
        au_pro(maps, masks, integration_limit=limit), abs=1e-12
    )
    fpr, spro = spro_curve(list(maps), regions)
    ref_fpr, ref_pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(spro, ref_pro, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 7])  # 7: tie groups straddle chunk boundaries
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_matches_literal_reference(monkeypatch, dtype, chunk):
    if chunk is not None:
        monkeypatch.setattr(metrics, "_CHUNK", chunk)
    rng = np.random.default_rng(1)
    maps, regions = loco_like(rng)
    if dtype == np.uint8:
        maps = [(m * 10).astype(np.uint8) for m in maps]
    else:
        maps = [m.astype(dtype) for m in maps]
    assert any(r.saturation < r.mask.sum() for rs in regions for r in rs)
    for limit in LIMITS:
        expected = ref_au_spro(maps, regions, limit)
        assert au_spro(maps, regions, integration_limit=limit) == pytest.approx(expected, abs=1e-6)
    areas = au_spro_limits(maps, regions)
    assert list(areas) == ["0.01", "0.05", "0.1", "0.3", "1.0"]
    for key, value in areas.items():
        assert value == pytest.approx(ref_au_spro(maps, regions, float(key)), abs=1e-6)
    # Point by point: the fast curve has the reference's points plus one duplicate of (1, 1).
    fpr, spro = spro_curve(maps, regions)
    ref_fpr, ref_spro = ref_spro_curve(maps, regions)
    assert fpr.shape == (ref_fpr.size + 1,)
    np.testing.assert_allclose(fpr[:-1], ref_fpr, atol=1e-12)
    np.testing.assert_allclose(spro[:-1], ref_spro, atol=1e-12)
    assert (fpr[-1], spro[-1]) == (1.0, 1.0)


def test_many_seeds_and_fractional_saturations_match_reference():
    for seed in range(2, 8):
        rng = np.random.default_rng(seed)
        maps, regions = loco_like(rng, n_images=5, shape=(7, 8), n_good=1, decimals=2)
        for limit in (0.05, 0.3, 1.0):
            assert au_spro(maps, regions, limit) == pytest.approx(
                ref_au_spro(maps, regions, limit), abs=1e-6
            )


# ----------------------------------------------------------------------------------------------
# Hand-computed cases
# ----------------------------------------------------------------------------------------------


def _half_covered(saturation):
    mask = np.zeros((10, 10), dtype=bool)
    mask[:2] = True  # 20 pixels
    score = np.zeros((10, 10), dtype=np.float32)
    score[0] = 1.0  # exactly half of the region scores high, nothing outside it does
    return [score], [[Region(mask, saturation)]]


def test_saturation_half_covered_region_counts_as_one():
    maps, regions = _half_covered(10)
    fpr, spro = spro_curve(maps, regions)
    # Cumulative float64 sums of 1/s, as in metrics.pro_curve: equal up to rounding.
    np.testing.assert_allclose(fpr, [0.0, 0.0, 1.0, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(spro, [0.0, 1.0, 1.0, 1.0], rtol=0, atol=1e-15)
    assert au_spro(maps, regions) == pytest.approx(1.0, abs=1e-15)


def test_without_saturation_half_covered_region_counts_as_half():
    maps, regions = _half_covered(20)
    fpr, spro = spro_curve(maps, regions)
    np.testing.assert_allclose(spro, [0.0, 0.5, 1.0, 1.0], rtol=0, atol=1e-15)
    # sPRO is 0.5 at FPR 0 and rises linearly to 1 at FPR 1: 0.5 + 0.05 / 4 over [0, 0.05].
    assert au_spro(maps, regions, 0.05) == pytest.approx(0.5125, abs=1e-12)


def test_fractional_saturation():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0] = True  # 4 pixels
    score = np.zeros((4, 4))
    score[0] = [4.0, 3.0, 2.0, 1.0]
    _, spro = spro_curve([score], [[Region(mask, 2.5)]])
    # min(c / 2.5, 1) for c = 0, 1, 2, 3, 4 top pixels; then the rest of the image.
    np.testing.assert_allclose(spro, [0.0, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0], atol=1e-15)


def test_overlapping_regions_are_not_negatives_and_count_twice():
    a = np.zeros((6, 6), dtype=bool)
    b = np.zeros((6, 6), dtype=bool)
    a[0, :4] = True
    b[0, 2:] = True  # shares two pixels with a
    score = np.zeros((6, 6), dtype=np.float32)
    score[0, 2:4] = 1.0  # only the shared pixels
    regions = [[Region(a, 2), Region(b, 4)]]
    fpr, spro = spro_curve([score], regions)
    assert fpr[1] == 0.0  # the shared pixels are not false positives
    assert spro[1] == pytest.approx((1.0 + 0.5) / 2, abs=1e-15)
    assert (fpr[2], spro[2]) == (1.0, 1.0)


def test_duck_typed_regions_and_mask_encodings_agree():
    rng = np.random.default_rng(3)
    maps, regions = loco_like(rng)
    as_namespace = [
        [SimpleNamespace(mask=r.mask.astype(np.uint8) * 255, saturation=r.saturation) for r in rs]
        for rs in regions
    ]
    as_none = [rs if rs else None for rs in regions]
    expected = au_spro(maps, regions)
    assert au_spro(maps, as_namespace) == expected
    assert au_spro(maps, as_none) == expected
    assert au_spro(np.stack(maps).astype(np.float32), regions) == pytest.approx(expected, abs=1e-6)


def test_region_is_frozen():
    r = Region(np.ones((2, 2), dtype=bool), 3, defect="missing_pushpin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.saturation = 4
    assert (r.defect, r.saturation) == ("missing_pushpin", 3)


def test_deterministic_bit_for_bit(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK", 13)
    rng = np.random.default_rng(4)
    maps, regions = loco_like(rng, n_images=8, shape=(16, 16), decimals=6)
    first = spro_curve(maps, regions)
    second = spro_curve(maps, regions)
    assert first[0].tobytes() == second[0].tobytes()
    assert first[1].tobytes() == second[1].tobytes()
    assert au_spro_limits(maps, regions) == au_spro_limits(maps, regions)


def test_image_order_does_not_matter():
    rng = np.random.default_rng(5)
    maps, regions = loco_like(rng)
    order = [3, 0, 5, 1, 4, 2]
    shuffled = au_spro_limits([maps[i] for i in order], [regions[i] for i in order])
    for key, value in au_spro_limits(maps, regions).items():
        assert shuffled[key] == pytest.approx(value, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# evaluate_loco
# ----------------------------------------------------------------------------------------------


def _tiny_loco():
    z = np.zeros((4, 4))
    good_a = z.copy()
    good_b = z.copy()
    good_b[3, 3] = 0.75
    structural = z.copy()
    s_mask = np.zeros((4, 4), dtype=bool)
    s_mask[0, :2] = True
    structural[s_mask] = 1.0
    logical = z.copy()
    l_mask = np.zeros((4, 4), dtype=bool)
    l_mask[1:3, 1:3] = True
    logical[1, 1] = 0.5  # one region pixel, enough for s = 1
    logical[3, 0] = 0.6  # one false positive, above the region pixel
    maps = [good_a, structural, good_b, logical]
    regions = [[], [Region(s_mask, 2)], [], [Region(l_mask, 1, "missing")]]
    subsets = ["good", "structural_anomalies", "good", "logical_anomalies"]
    return maps, regions, subsets


def test_evaluate_loco_hand_computed():
    maps, regions, subsets = _tiny_loco()
    out = evaluate_loco(maps, regions, subsets)
    assert set(out) == {"localization", "classification"}
    spro = out["localization"]["auc_spro"]
    auc = out["classification"]["auc_roc"]
    assert list(spro) == ["structural_anomalies", "logical_anomalies", "mean"]
    assert list(auc) == ["structural_anomalies", "logical_anomalies", "mean"]
    keys = ["0.01", "0.05", "0.1", "0.3", "1.0"]
    # Structural + good: both region pixels (score 1) pass before any negative -> 1 everywhere.
    assert spro["structural_anomalies"] == {key: pytest.approx(1.0, abs=1e-12) for key in keys}
    # Logical + good: 44 negatives; two false positives (0.75, 0.6) come before the region pixel,
    # so sPRO is 0 up to FPR 2/44 and 1 after it: area = 1 - (2/44) / limit (0 below 2/44).
    for key in keys:
        limit = float(key)
        expected = max(0.0, 1.0 - (2 / 44) / limit)
        assert spro["logical_anomalies"][key] == pytest.approx(expected, abs=1e-12)
        assert spro["mean"][key] == pytest.approx((1.0 + expected) / 2, abs=1e-12)
    # Image scores: good {0, 0.75}, structural 1 -> 1.0; logical 0.6 beats one of two -> 0.5.
    assert auc == {"structural_anomalies": 1.0, "logical_anomalies": 0.5, "mean": 0.75}
    assert json.loads(json.dumps(out)) == out
    assert all(type(v) is float for v in spro["mean"].values())


def test_evaluate_loco_matches_au_spro_on_each_subset():
    rng = np.random.default_rng(6)
    maps, regions = loco_like(rng, n_images=7, n_good=3)
    subsets = ["good"] * 3 + ["structural_anomalies", "logical_anomalies"] * 2
    out = evaluate_loco(maps, regions, subsets)
    for name in ("structural_anomalies", "logical_anomalies"):
        chosen = [i for i, s in enumerate(subsets) if s in ("good", name)]
        expected = au_spro_limits([maps[i] for i in chosen], [regions[i] for i in chosen])
        assert out["localization"]["auc_spro"][name] == expected


def test_evaluate_loco_input_errors():
    maps, regions, subsets = _tiny_loco()
    with pytest.raises(ValueError, match=r"subsets\[1\] is 'structural'"):
        evaluate_loco(maps, regions, ["good", "structural", "good", "logical_anomalies"])
    with pytest.raises(ValueError, match=r"subsets\[1\] is 'good' but image 1 has 1 region"):
        evaluate_loco(maps, regions, ["good", "good", "good", "logical_anomalies"])
    with pytest.raises(ValueError, match="no 'logical_anomalies' image"):
        evaluate_loco(maps[:3], regions[:3], subsets[:3])
    with pytest.raises(ValueError, match="sequence of 4 subset names"):
        evaluate_loco(maps, regions, subsets[:3])


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def _valid():
    maps = [np.zeros((4, 4)), np.ones((4, 5)), np.full((3, 3), 0.5)]
    mask1 = np.zeros((4, 5), dtype=bool)
    mask1[0, :3] = True
    mask2 = np.zeros((3, 3), dtype=bool)
    mask2[1, 1] = True
    return maps, [[], [Region(mask1, 2)], [Region(mask2, 1)]]


def test_valid_input_passes():
    maps, regions = _valid()
    assert 0.0 <= au_spro(maps, regions) <= 1.0


def test_shape_mismatch_names_image_and_region():
    maps, regions = _valid()
    regions[1].append(Region(np.ones((5, 4), dtype=bool), 1))
    with pytest.raises(
        ValueError,
        match=r"regions\[1\]\[1\]\.mask has shape \(5, 4\) but anomaly_maps\[1\] has shape \(4, 5\)",
    ):
        au_spro(maps, regions)


@pytest.mark.parametrize("saturation", [0, -1.0, 4, 3.5, float("nan"), "many", True])
def test_bad_saturation(saturation):
    maps, regions = _valid()
    regions[1][0] = Region(regions[1][0].mask, saturation)
    with pytest.raises(ValueError, match=r"regions\[1\]\[0\]\.saturation"):
        au_spro(maps, regions)


def test_saturation_message_gives_the_area():
    maps, regions = _valid()
    regions[2][0] = Region(regions[2][0].mask, 2)
    with pytest.raises(ValueError, match=r"0 < s <= \|C\| = 1 pixels"):
        spro_curve(maps, regions)


def test_nan_score_names_image():
    maps, regions = _valid()
    maps[2][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"anomaly_maps\[2\] contains 1 NaN"):
        au_spro(maps, regions)


def test_no_negative_pixel():
    mask = np.ones((3, 3), dtype=bool)
    with pytest.raises(ValueError, match="FPR is undefined without negative pixels"):
        au_spro([np.zeros((3, 3))], [[Region(mask, 2)]])


def test_no_region():
    with pytest.raises(ValueError, match="sPRO is undefined without ground-truth regions"):
        au_spro([np.zeros((3, 3)), np.ones((3, 3))], [[], None])


def test_empty_and_non_binary_masks_and_missing_attributes():
    maps, regions = _valid()
    regions[0] = [Region(np.zeros((4, 4), dtype=bool), 1)]
    with pytest.raises(ValueError, match=r"regions\[0\]\[0\]\.mask is empty"):
        au_spro(maps, regions)
    maps, regions = _valid()
    regions[0] = [Region(np.full((4, 4), 0.5), 1)]
    with pytest.raises(ValueError, match=r"regions\[0\]\[0\]\.mask is not binary"):
        au_spro(maps, regions)
    maps, regions = _valid()
    regions[2] = [np.ones((3, 3), dtype=bool)]
    with pytest.raises(
        ValueError, match=r"regions\[2\]\[0\] \(ndarray\) needs \.mask and \.saturation"
    ):
        au_spro(maps, regions)


def test_length_mismatch_and_bad_limits():
    maps, regions = _valid()
    with pytest.raises(ValueError, match="got 3 anomaly maps but 2 region lists"):
        au_spro(maps, regions[:2])
    with pytest.raises(ValueError, match="integration_limit must lie in"):
        au_spro(maps, regions, integration_limit=0.0)
    with pytest.raises(ValueError, match="limits is empty"):
        au_spro_limits(maps, regions, limits=())
