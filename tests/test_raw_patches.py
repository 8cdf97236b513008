"""Raw-pixel patch nearest-neighbour floor (ust.baselines.raw_patches): exact matches score 0, a
foreign patch stands out, the memory bank is seeded, shapes and input checks."""

import numpy as np
import pytest
import torch

from ust.baselines.raw_patches import (
    RawPatchSettings,
    gather_patches,
    nearest_distances,
    prepare,
    raw_patch_maps,
    sample_bank,
)


def _texture(n: int, h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    """(n, 3, h, w) diagonal stripes of period 6, phases seed, seed + 1, … (mod 6), and a little
    noise, in [0, 1]: 6 images hold every phase, borders included."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    phase = ((torch.arange(n) + seed) % 6).reshape(n, 1, 1, 1)
    stripes = 0.5 + 0.3 * torch.sin((xx + yy + phase) * (2 * np.pi / 6))
    img = stripes.expand(n, 3, h, w) + 0.02 * torch.rand(n, 3, h, w, generator=g)
    return img.clamp(0, 1)


@pytest.mark.parametrize("grid", [None, 3])
@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_training_patch_scores_zero(grid, padding):
    train = _texture(3)
    full = 3 * 24 * 20  # every training pixel in the bank
    s = RawPatchSettings(patch=5, grid=grid, n_bank=full, padding=padding)
    # A test image equal to a training image: every pixel's patch is in the bank.
    (same,) = raw_patch_maps(train, train[1:2].clone(), s)
    assert same.shape == (24, 20) and same.dtype == np.float32
    np.testing.assert_array_equal(same, 0.0)
    # A fresh image with one 5×5 block copied from a training image: its centre scores 0.
    test = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(5))
    test[0, :, 8:13, 6:11] = train[2, :, 3:8, 9:14]
    (m,) = raw_patch_maps(train, test, RawPatchSettings(patch=5, n_bank=full, padding=padding))
    assert m[10, 8] == 0.0 and m.min() == 0.0
    assert (m > 0).sum() == m.size - 1


def test_foreign_patch_scores_higher_than_texture():
    train = _texture(6, 48, 48)
    test = _texture(1, 48, 48, seed=9)
    g = torch.Generator().manual_seed(1)
    test[0, :, 20:28, 20:28] = torch.rand(3, 8, 8, generator=g)  # foreign noise block
    surround = np.zeros((48, 48), dtype=bool)
    surround[6:42, 6:42] = True  # the texture around the block, ≥ 6 px from the image border,
    surround[12:36, 12:36] = False  # and ≥ 8 px from the block: no patch there overlaps it
    for s in (RawPatchSettings(patch=7, n_bank=3000), RawPatchSettings(patch=9, grid=3, stride=2)):
        (m,) = raw_patch_maps(train, test, s)
        assert m[21:27, 21:27].min() > 5 * m[surround].max(), s


def test_memory_bank_is_seeded_and_holds_training_patches():
    train = _texture(4)
    s = RawPatchSettings(patch=5, grid=3, n_bank=50, seed=3)
    a, b = sample_bank(train, s), sample_bank(train, s)
    assert a.shape == (50, 3 * 3 * 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = sample_bank(train, RawPatchSettings(patch=5, grid=3, n_bank=50, seed=4))
    assert not torch.equal(a, c)
    # Every bank row is the descriptor of some training pixel.
    padded = prepare(train, s)
    n, y, x = (
        t.reshape(-1) for t in torch.meshgrid(*map(torch.arange, (4, 24, 20)), indexing="ij")
    )
    every = gather_patches(padded, n, y, x, s)
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.cdist(a, every, compute_mode=exact).min(1).values.max() < 1e-6
    # Never more patches than training pixels.
    assert len(sample_bank(train, RawPatchSettings(patch=5, n_bank=10**6))) == 4 * 24 * 20


def test_shapes_and_strided_grid_interpolates_through_scored_pixels():
    train, test = _texture(3, 23, 30), _texture(2, 23, 30, seed=1)
    dense = raw_patch_maps(train, test, RawPatchSettings(patch=7, grid=5, n_bank=300))
    strided = raw_patch_maps(train, test, RawPatchSettings(patch=7, grid=5, n_bank=300, stride=3))
    assert len(strided) == 2
    for d, m in zip(dense, strided):
        assert d.shape == m.shape == (23, 30) and m.dtype == np.float32
        ys, xs = np.r_[0:23:3, 22], np.r_[0:30:3, 29]
        np.testing.assert_allclose(m[np.ix_(ys, xs)], d[np.ix_(ys, xs)], rtol=1e-5, atol=1e-6)
        assert m.min() >= d.min() - 1e-6 and m.max() <= d.max() + 1e-6  # interpolated between


def test_nearest_distances_match_cdist():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.rand(300, 12, generator=g), torch.rand(70, 12, generator=g)
    expected = torch.cdist(q.double(), bank.double()).min(1).values.float()
    torch.testing.assert_close(nearest_distances(q, bank, chunk=64), expected)
    torch.testing.assert_close(nearest_distances(q, bank, chunk=1000), expected)


def test_bad_input_raises_clear_errors():
    train = _texture(2)
    s = RawPatchSettings(patch=5)
    with pytest.raises(ValueError, match="same"):
        raw_patch_maps(train, _texture(1, 24, 21), s)
    with pytest.raises(ValueError, match="same"):
        raw_patch_maps(train, train[:, :1], s)
    with pytest.raises(ValueError, match="larger than the images"):
        raw_patch_maps(train, train, RawPatchSettings(patch=21))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        raw_patch_maps(train[0], train, s)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        raw_patch_maps(train, train[:0], s)
    bad = [
        (RawPatchSettings(patch=4), "odd"),
        (RawPatchSettings(patch=5, grid=6), "grid"),
        (RawPatchSettings(patch=5, grid=0), "grid"),
        (RawPatchSettings(patch=5, stride=0), "stride"),
        (RawPatchSettings(patch=5, n_bank=0), "n_bank"),
        (RawPatchSettings(patch=5, padding="wrap"), "padding"),
    ]
    for settings, match in bad:
        with pytest.raises(ValueError, match=match):
            raw_patch_maps(train, train, settings)
