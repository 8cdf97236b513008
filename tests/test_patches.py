"""Patch triplet sampler (docs/decisions.md#triplet-augmentation)."""

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from ust.data.patches import (
    EMBEDDED_IMAGES,
    EXCLUDED_SKIMAGE_IMAGES,
    HELDOUT_IMAGES,
    ImageSource,
    PatchTriplets,
    count_image_files,
    draw_zoom,
    find_image_files,
    rgb_to_gray3,
    zoomed_crop,
)

P = 17


@pytest.fixture(scope="module")
def triplets():
    return PatchTriplets("embedded", P, 2000, seed=3, return_meta=True)


def test_shapes_range_and_meta(triplets):
    a, p, n, meta = triplets[0]
    for x in (a, p, n):
        assert x.shape == (3, P, P) and x.dtype == torch.float32
        assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    assert 4 * P <= meta["anchor_zoom"] <= 16 * P
    assert len(triplets) == 2000


def test_zoom_draws_cover_every_integer_size(triplets):
    """s ∈ {4p, 4p + 1, …, 16p}: all 12p + 1 = 205 sizes, not only the 13 multiples of p."""
    metas = [triplets.sample_params(i) for i in range(2000)]
    sizes = [m[k] for m in metas for k in ("anchor_zoom", "negative_zoom")]
    assert set(sizes) == set(range(4 * P, 16 * P + 1))  # 4000 draws, ≈ 19.5 per size
    assert sum(s % P != 0 for s in sizes) > 0.9 * len(sizes)


@pytest.mark.parametrize("p", [17, 33, 65])
def test_draw_zoom_is_uniform_over_every_integer(p):
    from scipy.stats import chisquare

    rng = np.random.default_rng(0)
    lo, hi = 4 * p, 16 * p
    n_sizes = hi - lo + 1
    draws = np.array([draw_zoom(rng, p, (4, 16)) for _ in range(40 * n_sizes)])
    assert draws.min() == lo and draws.max() == hi
    counts = np.bincount(draws - lo, minlength=n_sizes)
    assert (counts > 0).all() and len(counts) == n_sizes
    assert chisquare(counts).pvalue > 1e-3  # uniform: no size favoured
    assert draw_zoom(rng, p, (3, 3)) == 3 * p


def test_deterministic_for_seed_and_order_independent(triplets):
    other = PatchTriplets("embedded", P, 2000, seed=3)
    for i in (0, 7, 1999):
        for x, y in zip(triplets[i][:3], other[i], strict=True):
            assert torch.equal(x, y)
    a7 = other[7][0]
    assert not torch.equal(a7, PatchTriplets("embedded", P, 2000, seed=4)[7][0])
    # DataLoader workers give the same items as the main process (item i only depends on (seed, i)).
    loader = torch.utils.data.DataLoader(other, batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert torch.equal(batch[0][3], other[3][0]) and torch.equal(batch[2][0], other[0][2])


def test_zoom_crop_equals_whole_image_resize():
    img = ImageSource.embedded("train")[0]  # astronaut, 512×512
    for size, top, left, p in ((68, 0, 51, 17), (272, 255, 0, 17), (1040, 500, 975, 65)):
        full = F.interpolate(img[None].float() / 255, (size, size), mode="bilinear", antialias=True)
        crop = zoomed_crop(img, size, top, left, p)
        assert torch.allclose(crop, full[0, :, top : top + p, left : left + p], atol=1e-4)


def test_positive_within_translation_bound_and_same_image(triplets):
    m = (P - 1) // 4  # ±4 for p = 17
    seen_max = 0
    for i in range(300):
        meta = triplets.sample_params(i)
        (ya, xa), (yp, xp) = meta["anchor_yx"], meta["positive_yx"]
        assert abs(yp - ya) <= m and abs(xp - xa) <= m
        assert 0 <= yp <= meta["anchor_zoom"] - P and 0 <= xp <= meta["anchor_zoom"] - P
        assert max(abs(d) for d in meta["shift"]) <= m
        seen_max = max(seen_max, abs(yp - ya), abs(xp - xa))
        assert 0.8 <= meta["luminance"] <= 1.2
    assert seen_max == m  # the full range is used


def test_positive_is_anchor_crop_with_luminance_and_noise():
    ds = PatchTriplets(
        "embedded", P, 10, seed=0, noise_std=0.0, grayscale_prob=0.0, return_meta=True
    )
    a, p, _, meta = ds[0]
    img = ds.source[meta["anchor_image"]]
    shifted = zoomed_crop(img, meta["anchor_zoom"], *meta["positive_yx"], P)
    assert torch.allclose(p, (shifted * meta["luminance"]).clamp(0, 1), atol=1e-6)
    assert torch.equal(a, zoomed_crop(img, meta["anchor_zoom"], *meta["anchor_yx"], P))
    # With σ = 0.1 noise the residual has std ≈ 0.1 (less where clamped at 0 or 1).
    noisy = PatchTriplets("embedded", P, 10, seed=0, grayscale_prob=0.0)[0][1]
    residual = (noisy - p)[(p > 0.3) & (p < 0.7)]
    assert 0.07 < residual.std().item() < 0.13


def test_negative_from_a_different_image(triplets):
    metas = [triplets.sample_params(i) for i in range(500)]
    assert all(m["negative_image"] != m["anchor_image"] for m in metas)
    assert len({m["negative_image"] for m in metas}) == len(triplets.source)


def test_grayscale_rate_is_one_decision_per_triplet(triplets):
    flags = [triplets.sample_params(i)["grayscale"] for i in range(2000)]
    rate = float(np.mean(flags))
    assert 0.08 < rate < 0.12  # binomial sd ≈ 0.0067 for n = 2000
    i = flags.index(True)
    a, p, n, meta = triplets[i]
    assert meta == triplets.sample_params(i)
    for x in (a, p, n):
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    x = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert torch.allclose(rgb_to_gray3(x), torch.full((3, 1, 1), 0.299))


def test_folder_source_nested_and_case_insensitive(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "n01" / "deep").mkdir(parents=True)
    (tmp_path / "n02").mkdir()
    paths = [
        tmp_path / "n01" / "a.png",
        tmp_path / "n01" / "deep" / "b.JPG",
        tmp_path / "n02" / "c.jpeg",
        tmp_path / "n02" / "d.png",
        tmp_path / "flat.bmp",
    ]
    for i, path in enumerate(paths):
        shape = (40 + i, 50, 3) if i != 3 else (45, 30)  # one grayscale file
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in find_image_files(tmp_path)] == [
        "flat.bmp",
        "a.png",
        "b.JPG",
        "c.jpeg",
        "d.png",
    ]
    ds = PatchTriplets(tmp_path, P, 4, split="all", return_meta=True)
    assert len(ds.source) == 5 and ds[0][0].shape == (3, P, P)
    train = ImageSource.folder(tmp_path, "train", heldout_fraction=0.1)
    held = ImageSource.folder(tmp_path, "heldout", heldout_fraction=0.1)
    assert len(train) == 3 and len(held) == 2 and not set(train.names) & set(held.names)
    assert ds.source[4].shape == (3, 45, 30)  # grayscale file replicated to 3 channels


def test_too_few_images_error_names_folder(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "only.png")
    with pytest.raises(ValueError, match=f"found 1 image.*{tmp_path.name}.*ImageNet"):
        PatchTriplets(tmp_path, P, 4)
    assert count_image_files(tmp_path, 4) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PatchTriplets(tmp_path / "missing", P, 4)


@pytest.mark.parametrize("split", ["train", "heldout", "all"])
def test_a_missing_folder_never_falls_back_to_embedded_photographs(tmp_path, split):
    missing = tmp_path / "imagenet" / "train"
    with pytest.raises(FileNotFoundError) as err:
        PatchTriplets(missing, P, 4, split=split)
    assert str(missing) in str(err.value) and "ILSVRC2012" in str(err.value)
    (missing / "n01440764").mkdir(parents=True)  # the class folders exist, the images do not
    with pytest.raises(ValueError, match=r"found 0 image\(s\) under .*imagenet/train"):
        PatchTriplets(missing, P, 4, split=split)


def test_a_relative_folder_is_taken_from_the_repository_root(tmp_path, monkeypatch):
    from ust.paths import ROOT

    monkeypatch.chdir(tmp_path)  # not the current directory
    relative = "ust/data"  # a folder of the repository without images
    with pytest.raises(ValueError, match=f"found 0 image.*{ROOT / relative}"):
        PatchTriplets(relative, P, 4)
    with pytest.raises(ValueError, match="split must be one of"):
        PatchTriplets("embedded", P, 4, split="test")


def test_embedded_splits_are_disjoint_and_large_enough():
    train, held = ImageSource.embedded("train"), ImageSource.embedded("heldout")
    assert len(EMBEDDED_IMAGES) >= 14 and len(train) >= 12
    assert set(held.names) == set(HELDOUT_IMAGES) and not set(train.names) & set(held.names)


def test_excluded_textures_match_the_evaluation_set():
    from ust.data.synthetic import EVALUATION_IMAGE_NAMES

    assert tuple(EXCLUDED_SKIMAGE_IMAGES) == tuple(EVALUATION_IMAGE_NAMES)


def _gray64(x: torch.Tensor) -> torch.Tensor:
    g = rgb_to_gray3(x.float()[None] / 255)[0, :1]
    return F.interpolate(g[None], (64, 64), mode="bilinear", antialias=True).flatten()


def test_no_evaluation_texture_in_embedded_source():
    assert not set(EXCLUDED_SKIMAGE_IMAGES) & set(EMBEDDED_IMAGES)
    source = ImageSource.embedded("all")
    for name in ("brick", "grass", "gravel"):
        texture = torch.from_numpy(getattr(skimage.data, name)().copy()).expand(3, -1, -1)
        t = _gray64(texture)
        for i, img in enumerate(source.names):
            pixels = source[i]
            assert not (pixels.shape == texture.shape and torch.equal(pixels, texture)), img
            # Pixel content, not just names: no embedded image resembles a texture (|r| < 0.9).
            r = torch.corrcoef(torch.stack([t, _gray64(pixels)]))[0, 1].item()
            assert abs(r) < 0.9, (name, img, r)
