"""Threshold selection on anomaly-free validation maps ([Th] §4.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ust.eval.thresholds import (
    binarize,
    estimate_thresholds,
    save_segmentation,
    threshold_k_sigma,
    threshold_max,
    threshold_max_area,
    threshold_quantile,
)


def test_max_quantile_ksigma_on_hand_made_values():
    maps = np.arange(200, dtype=np.float64).reshape(2, 10, 10)  # values 0..199
    assert threshold_max(maps) == 199.0
    # linear interpolation: 0.99 * 199 = 197.01
    assert threshold_quantile(maps, 0.99) == pytest.approx(197.01)
    assert threshold_quantile(maps, 0.5) == pytest.approx(99.5)
    mu, sigma = 99.5, np.sqrt((200**2 - 1) / 12)  # population σ of 0..199
    assert threshold_k_sigma(maps, k=2.326) == pytest.approx(mu + 2.326 * sigma)
    assert threshold_k_sigma(maps, k=0) == pytest.approx(99.5)


def test_list_of_maps_of_different_sizes_and_tensors():
    maps = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0, 6.0]]), torch.tensor([[7.0]])]
    assert threshold_max(maps) == 7.0
    assert threshold_quantile(maps, 1.0) == 7.0
    assert threshold_k_sigma(maps, k=1) == pytest.approx(3.5 + np.std(np.arange(8.0)))
    assert threshold_max(torch.ones(3, 4, 4)) == 1.0
    assert threshold_max(np.full((4, 4), 2.0)) == 2.0  # a single (H, W) map


def test_max_area_threshold():
    # 40×40 = 1600 px: 0.1 % → components must have < 1.6 px, i.e. single pixels only.
    m = np.zeros((40, 40))
    m[5, 5] = 9.0  # isolated pixel: allowed
    m[20, 20:23] = [5.0, 6.0, 7.0]  # 3-px component: must be cut until ≤ 1 px remains
    assert threshold_max_area(m) == 6.0
    m2 = np.zeros((40, 40))
    m2[10, 10], m2[11, 11] = 8.0, 4.0  # diagonal neighbours: one component under 8-connectivity
    assert threshold_max_area(m2) == 4.0
    assert threshold_max_area(m2, connectivity=4) == 0.0
    # large allowance: everything above the minimum may stay
    assert threshold_max_area(m, max_area_fraction=0.5) == 0.0
    with pytest.raises(ValueError, match="connectivity"):
        threshold_max_area(m, connectivity=6)


def test_estimate_thresholds_keys_and_ordering():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 32, 32))
    t = estimate_thresholds(maps)
    assert set(t) == {"max", "quantile", "k_sigma", "max_area"}
    assert t["quantile"] == pytest.approx(np.quantile(maps, 0.99))
    assert t["k_sigma"] == pytest.approx(maps.mean() + 2.326 * maps.std())
    assert t["quantile"] < t["max"] and t["max_area"] <= t["max"]
    # for Gaussian scores the k-sigma and quantile rules agree closely
    assert abs(t["k_sigma"] - t["quantile"]) < 0.15


def test_invalid_maps():
    with pytest.raises(ValueError, match="no validation maps"):
        threshold_max([])
    with pytest.raises(ValueError, match="NaN"):
        threshold_max(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        threshold_max(np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        threshold_quantile(np.zeros((2, 2)), 1.5)


def test_binarize_strictly_greater():
    a = np.array([[0.1, 0.5], [0.6, 2.0]])
    out = binarize(a, 0.5)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0], [255, 255]]


def test_save_segmentation_atomic(tmp_path):
    path = tmp_path / "seg" / "bottle" / "000.png"
    save_segmentation(path, np.array([[True, False], [False, True]]))
    save_segmentation(path.with_name("001.png"), np.array([[0, 1], [1, 0]]))
    back = np.asarray(Image.open(path))
    assert back.dtype == np.uint8 and back.tolist() == [[255, 0], [0, 255]]
    assert np.asarray(Image.open(path.with_name("001.png"))).tolist() == [[0, 255], [255, 0]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["000.png", "001.png"]
    with pytest.raises(ValueError, match="2-D"):
        save_segmentation(path, np.zeros((2, 2, 2)))
