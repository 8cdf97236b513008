"""Real-texture MVTec-layout set (ust.data.textures + ust.data.synthetic): colour categories from a
texture folder, native resolution, disjoint train/test regions, stain defect, exact masks,
determinism and the error messages. A fake texture folder (generated RGB PNGs under the registered
file names) keeps the tests independent of the Debian package; one test reads the real files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ust.data.mvtec import load_image, validate_category
from ust.data.synthetic import (
    CATEGORIES,
    COLOUR_CATEGORIES,
    DEFECT_TYPES,
    EVALUATION_TEXTURE_FILES,
    GRAYSCALE_CATEGORIES,
    MIN_BLUR_CHANGE,
    MIN_CHANGED_FRACTION,
    MIN_MEAN_CHANGE,
    SOURCE_IMAGES,
    TEST_ROWS,
    TRAIN_ROWS,
    apply_defect,
    category_images,
    foreign_pool,
    load_source,
    make_synthetic_mvtec,
    visibility_threshold,
)
from ust.data.textures import (
    DEFAULT_TEXTURE_DIR,
    NATIVE_SIZES,
    TEXTURE_SOURCES,
    Crop,
    Region,
    Texture,
    cut,
    load_texture,
    render_crop,
    split_regions,
    to_channels,
)

FAKE_SIDE = 256


def _fake_texture(seed: int, side: int = FAKE_SIDE) -> np.ndarray:
    """Smooth RGB noise with clearly different channels (std ≈ 25 grey levels)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(side, side, 3)), sigma=(1.5, 1.5, 0))
    noise = noise / noise.std()
    base = np.array([60.0, 130.0, 190.0])[np.roll(np.arange(3), seed)]
    return np.clip(base + 25 * noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def texture_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("textures")
    for i, category in enumerate(COLOUR_CATEGORIES):
        Image.fromarray(_fake_texture(i)).save(folder / TEXTURE_SOURCES[category].file)
    return folder


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


# ------------------------------------------------------------------------------------ registry
def test_registry_and_exclusions():
    assert CATEGORIES == ("brick", "grass", "gravel", "moon", "rust", "water")
    assert GRAYSCALE_CATEGORIES == SOURCE_IMAGES == ("brick", "grass", "gravel")
    assert len(COLOUR_CATEGORIES) >= 2
    assert EVALUATION_TEXTURE_FILES == ("dirty08.png", "moon103.png", "water12.png")
    for c in COLOUR_CATEGORIES:
        s = TEXTURE_SOURCES[c]
        assert s.origin == "colobot" and s.file in EVALUATION_TEXTURE_FILES
    assert {TEXTURE_SOURCES[c].origin for c in GRAYSCALE_CATEGORIES} == {"skimage"}
    assert DEFAULT_TEXTURE_DIR == Path("/usr/share/games/colobot/textures")
    assert NATIVE_SIZES == {
        "image_size": 128, "n_train": 60, "n_test_good": 20, "n_test_defect_per_type": 6,
    }  # fmt: skip


def test_real_package_textures_load_and_build(tmp_path):
    """The installed colobot-common-textures files: sizes, colour, and a small native build."""
    sides = {"moon": 512, "rust": 256, "water": 256}
    for c in COLOUR_CATEGORIES:
        tex = load_texture(c)
        assert tex.pixels.shape == (sides[c], sides[c], 3) and tex.pixels.dtype == np.uint8
        assert tex.is_colour and tex.max_crop() == sides[c] // 2
        means = tex.pixels.reshape(-1, 3).mean(axis=0)
        assert np.ptp(means) > 20  # a real colour photograph, not grey
    make_synthetic_mvtec(
        tmp_path, categories=COLOUR_CATEGORIES, image_size=128, n_train=2, n_test_good=1,
        n_test_defect_per_type=1,
    )  # fmt: skip
    for c in COLOUR_CATEGORIES:
        idx = validate_category(tmp_path, c)
        assert idx.defect_types == list(DEFECT_TYPES) and set(idx.sizes.values()) == {(128, 128)}


# ----------------------------------------------------------------------------- split regions
@pytest.mark.parametrize("shape,axis", [((512, 512), 0), ((256, 256), 1), ((256, 300, 3), 0)])
def test_split_regions_are_disjoint_halves(shape, axis):
    regions = split_regions(shape, axis)
    train, test = regions["train"], regions["test"]
    covered = np.zeros(shape[:2], dtype=int)
    for r in (train, test):
        covered[r.top : r.bottom, r.left : r.right] += 1
    assert (covered == 1).all()  # disjoint and covering the source
    assert (train.height, train.width) == (test.height, test.width)
    if axis == 0:
        assert train.bottom == test.top == shape[0] // 2
    else:
        assert train.right == test.left == shape[1] // 2
    assert split_regions((512, 512), 0) == {"train": Region(*TRAIN_ROWS, 0, 512),
                                            "test": Region(*TEST_ROWS, 0, 512)}  # fmt: skip
    with pytest.raises(ValueError, match="split_axis"):
        split_regions(shape, 2)


def test_region_contains():
    r = Region(0, 128, 128, 256)
    assert r.contains(0, 128, 128) and not r.contains(1, 128, 128) and not r.contains(0, 127, 8)


def test_crop_positions_stay_inside_their_split_and_reproduce(texture_dir):
    """Every image's Crop record lies inside its category's train or test region, train and test
    rectangles never intersect, and the record reproduces the clean pixels exactly."""
    for category in ("moon", "water", "brick"):
        tex = load_texture(category, texture_dir)
        regions = {s: tex.region(s) for s in ("train", "test")}
        rects: dict[str, np.ndarray] = {
            s: np.zeros(tex.pixels.shape[:2], dtype=bool) for s in regions
        }
        transposed = set()
        for item in category_images(
            category, image_size=64, n_train=30, n_test_good=10, n_test_defect_per_type=2,
            texture_dir=texture_dir,
        ):  # fmt: skip
            c = item.crop
            assert c.size == 64 and regions[item.split].contains(c.top, c.left, c.size)
            rects[item.split][c.top : c.top + c.size, c.left : c.left + c.size] = True
            rendered = np.clip(np.rint(render_crop(tex, c, 64)), 0, 255).astype(np.uint8)
            assert np.array_equal(rendered, item.clean)
            transposed.add(c.transpose)
        assert not (rects["train"] & rects["test"]).any()
        assert rects["train"].any() and rects["test"].any()
        # 256-px sources are augmented with 90° rotations, 512-px ones are not
        assert transposed == ({False, True} if tex.rot90 else {False})


def test_cut_draws_within_region_at_native_resolution():
    src = np.arange(256 * 256 * 3, dtype=np.uint32).reshape(256, 256, 3).astype(np.uint8)
    tex = Texture("t", src, split_axis=1)
    rng = np.random.default_rng(0)
    lefts = set()
    for _ in range(200):
        img, crop = cut(rng, tex, "test", 128, 128, augment=False)
        assert crop == Crop(crop.top, 128, 128) and 0 <= crop.top <= 128
        assert np.array_equal(img, src[crop.top : crop.top + 128, 128:].astype(np.float64))
        lefts.add(crop.left)
    assert lefts == {128}  # the only position of a 128-px crop in the 128-px-wide right half


# ---------------------------------------------------------------------------------- errors
def test_missing_texture_dir_and_file(tmp_path, texture_dir):
    missing = tmp_path / "nowhere"
    pattern = (
        rf"texture folder {re.escape(str(missing))} not found.*colobot-common-textures.*"
        r"apt-get install colobot-common-textures.*texture_dir="
    )
    with pytest.raises(FileNotFoundError, match=pattern):
        make_synthetic_mvtec(tmp_path / "out", categories=("brick", "moon"), texture_dir=missing)
    assert not (tmp_path / "out").exists()  # nothing written, brick included
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "moon103.png").write_bytes((texture_dir / "moon103.png").read_bytes())
    expected = re.escape(str(partial / "dirty08.png"))
    with pytest.raises(FileNotFoundError, match=rf"texture file {expected} not found.*apt-get"):
        load_texture("rust", partial)
    # grayscale categories never need the folder (their foreign patches are skimage textures)
    assert make_synthetic_mvtec(
        tmp_path / "grey", categories=("gravel",), image_size=32, n_train=2, n_test_good=1,
        n_test_defect_per_type=1, texture_dir=missing,
    ) == ["gravel"]  # fmt: skip
    assert foreign_pool("gravel", 32, missing) == ["brick", "grass"]


def test_no_upsampling(tmp_path, texture_dir):
    kw = dict(n_train=2, n_test_good=1, n_test_defect_per_type=1, texture_dir=texture_dir)
    with pytest.raises(ValueError, match=r"image_size 128 > crop_size 64 would upsample"):
        make_synthetic_mvtec(tmp_path, categories=("water",), image_size=128, crop_size=64, **kw)
    # the fake water (256 px) splits into 256x128 halves: a 192-px crop does not fit
    with pytest.raises(ValueError, match=r"crop_size 192 does not fit.*never upsampled.*≤ 128"):
        make_synthetic_mvtec(tmp_path, categories=("water",), image_size=192, **kw)
    with pytest.raises(ValueError, match=r"crop_size 300 does not fit.*'brick'.*≤ 256"):
        make_synthetic_mvtec(tmp_path, categories=("brick",), image_size=300, **kw)
    with pytest.raises(ValueError, match="would upsample"):
        render_crop(load_texture("brick"), Crop(0, 0, 32), 64)
    assert list(tmp_path.iterdir()) == []
    # downsampling a larger crop is allowed
    make_synthetic_mvtec(tmp_path, categories=("water",), image_size=64, crop_size=128, **kw)
    assert Image.open(tmp_path / "water/train/good/000.png").size == (64, 64)


# --------------------------------------------------------------------------------- the set
@pytest.fixture(scope="module")
def native_tree(tmp_path_factory, texture_dir) -> Path:
    root = tmp_path_factory.mktemp("native")
    cats = ("grass", *COLOUR_CATEGORIES)
    assert make_synthetic_mvtec(root, categories=cats, texture_dir=texture_dir,
                                **NATIVE_SIZES) == list(cats)  # fmt: skip
    return root


def test_counts_sizes_and_modes_per_split(native_tree):
    for category in ("grass", *COLOUR_CATEGORIES):
        idx = validate_category(native_tree, category)
        assert idx.counts() == {"train": 60, "test_good": 20, "test_defective": 5 * 6}
        assert idx.defect_types == list(DEFECT_TYPES)
        assert set(idx.sizes.values()) == {(128, 128)}
        mode = "L" if category in GRAYSCALE_CATEGORIES else "RGB"
        for split in ("train/good", "test/good", *(f"test/{d}" for d in DEFECT_TYPES)):
            files = sorted((native_tree / category / split).glob("*.png"))
            assert len(files) == {"train/good": 60, "test/good": 20}.get(split, 6)
            assert {Image.open(p).mode for p in files} == {mode}
        for p in (native_tree / category / "ground_truth").rglob("*.png"):
            m = Image.open(p)
            assert m.mode == "L" and m.size == (128, 128)
            assert set(np.unique(np.asarray(m)).tolist()) == {0, 255}


def test_colour_categories_are_rgb_and_differ_across_channels(native_tree):
    for category in COLOUR_CATEGORIES:
        for p in sorted((native_tree / category / "test/good").glob("*.png"))[:5]:
            arr = np.asarray(Image.open(p))
            assert arr.shape == (128, 128, 3)
            assert not np.array_equal(arr[..., 0], arr[..., 1])
            assert not np.array_equal(arr[..., 1], arr[..., 2])
            loaded = load_image(p)  # the MVTec loader reads RGB PNGs as they are
            assert loaded.shape[-2:] == (128, 128) and loaded.shape[0] == 3
            assert not np.allclose(loaded[0], loaded[1])


def test_written_files_are_the_generated_images(native_tree, texture_dir):
    items = list(category_images("water", texture_dir=texture_dir, **NATIVE_SIZES))
    assert len(items) == 60 + 20 + 30
    for item in items[::7]:
        assert np.array_equal(np.asarray(Image.open(native_tree / "water" / item.path)), item.image)
        if item.mask is not None:
            written = np.asarray(Image.open(native_tree / "water" / item.mask_path))
            assert np.array_equal(written, item.mask)


@pytest.mark.parametrize("category", ["moon", "rust", "water", "brick", "grass"])
def test_masks_are_exact(category, texture_dir):
    """Regenerated clean crop vs defective image: identical outside the mask, ≥ half of the mask
    changed, mean change ≥ the visibility threshold (10; 4-10 for blur)."""
    seen = set()
    for item in category_images(
        category, image_size=128, n_train=2, n_test_good=1, n_test_defect_per_type=3,
        texture_dir=texture_dir,
    ):  # fmt: skip
        if item.defect == "good":
            assert item.mask is None and item.image is item.clean
            continue
        seen.add(item.defect)
        inside = item.mask > 0
        diff = np.abs(item.image.astype(int) - item.clean.astype(int))
        change = diff.mean(axis=2) if diff.ndim == 3 else diff
        assert inside.any() and not change[~inside].any()
        assert (change[inside] > 0).mean() >= MIN_CHANGED_FRACTION
        threshold = visibility_threshold(item.defect, item.clean)
        assert change[inside].mean() >= threshold
        assert threshold == MIN_MEAN_CHANGE or (
            item.defect == "blur" and MIN_BLUR_CHANGE <= threshold <= MIN_MEAN_CHANGE
        )
        assert 10 <= inside.sum() <= 0.25 * inside.size
    assert seen == set(DEFECT_TYPES)


def test_deterministic_byte_identical(tmp_path, texture_dir):
    kw = dict(categories=("moon", "rust", "gravel"), image_size=128, n_train=4, n_test_good=2,
              n_test_defect_per_type=2, texture_dir=texture_dir)  # fmt: skip
    make_synthetic_mvtec(tmp_path / "a", **kw)
    make_synthetic_mvtec(tmp_path / "b", **kw)
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb and len(ha) == 3 * (4 + 2 + 2 * 2 * len(DEFECT_TYPES))
    make_synthetic_mvtec(tmp_path / "c", seed=1, **kw)
    hc = _hashes(tmp_path / "c")
    assert set(hc) == set(ha) and all(hc[k] != ha[k] for k in ha if "/train/" in k)


# --------------------------------------------------------------------------------- defects
def test_stain_tints_colour_and_darkens_grey():
    rng = np.random.default_rng(3)
    flat_rgb = np.full((64, 64, 3), [200, 200, 200], dtype=np.uint8)
    img, mask = apply_defect(rng, "stain", flat_rgb)
    inside = mask > 0
    delta = flat_rgb.astype(int)[inside] - img.astype(int)[inside]
    assert (delta >= 0).all()  # a multiplied tint never brightens
    per_channel = delta.mean(axis=0)
    assert per_channel[2] > per_channel[0] + 5  # a warm tint: blue absorbed most
    flat_grey = np.full((64, 64), 200, dtype=np.uint8)
    img, mask = apply_defect(rng, "stain", flat_grey)
    assert img.ndim == 2 and (img[mask > 0] < 200).mean() >= 0.5 and (img[mask == 0] == 200).all()


def test_foreign_patch_channels_follow_the_target(texture_dir):
    rng = np.random.default_rng(0)
    colour_src = load_texture("water", texture_dir)
    grey = load_source("brick")[256:320, 0:64].copy()
    img, mask = apply_defect(rng, "foreign", grey, colour_src)
    assert img.shape == (64, 64) and (img[mask == 0] == grey[mask == 0]).all()
    rgb = np.repeat(grey[..., None], 3, axis=2)
    img, mask = apply_defect(rng, "foreign", rgb, load_texture("gravel"))
    assert img.shape == (64, 64, 3)
    inside = mask > 0  # a grey patch is replicated: equal channels inside the blob
    assert np.array_equal(img[..., 0][inside], img[..., 2][inside])
    assert np.allclose(to_channels(np.ones((2, 2, 3)) * [10, 20, 30], False), 18.15)
    assert foreign_pool("moon", 128, texture_dir) == ["brick", "grass", "gravel", "rust", "water"]
    assert foreign_pool("moon", 256, texture_dir) == ["brick", "grass", "gravel"]
