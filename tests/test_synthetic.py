"""Synthetic MVTec-layout set from the skimage textures: layout, masks, determinism, disjoint
regions (the colour textures are tested in tests/test_textures.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.feature import match_template

from ust.data.mvtec import validate_category
from ust.data.synthetic import (
    DEFECT_TYPES,
    EVALUATION_IMAGE_NAMES,
    SOURCE_IMAGES,
    TEST_ROWS,
    TRAIN_ROWS,
    apply_defect,
    load_source,
    make_synthetic_mvtec,
    visibility_threshold,
)


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p))


@pytest.fixture(scope="module")
def default_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    assert make_synthetic_mvtec(root) == ["brick", "grass", "gravel"]
    return root


def test_constants():
    assert SOURCE_IMAGES == EVALUATION_IMAGE_NAMES == ("brick", "grass", "gravel")
    assert DEFECT_TYPES == ("blur", "foreign", "hole", "scratch", "stain")
    assert TRAIN_ROWS == (0, 256) and TEST_ROWS == (256, 512)
    assert load_source("gravel").shape == (512, 512)


def test_layout_validates_with_expected_counts(default_tree):
    for cat in SOURCE_IMAGES:
        idx = validate_category(default_tree, cat)
        assert idx.counts() == {"train": 20, "test_good": 5, "test_defective": 20}
        assert idx.defect_types == list(DEFECT_TYPES)
        assert set(idx.sizes.values()) == {(128, 128)}
        img = Image.open(idx.train[0])
        assert img.mode == "L" and img.size == (128, 128)
    assert sorted(p.name for p in default_tree.iterdir()) == ["brick", "grass", "gravel"]


def test_masks_nonempty_for_defects_and_binary(default_tree):
    idx = validate_category(default_tree, "grass")
    for s in idx.test:
        if s.defect == "good":
            assert s.mask_path is None
            continue
        m = _read(s.mask_path)
        assert m.dtype == np.uint8 and m.shape == (128, 128)
        assert set(np.unique(m).tolist()) == {0, 255}
        assert 10 <= (m > 0).sum() <= 0.2 * m.size


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defect_changes_only_mask_and_is_visible(kind):
    rng = np.random.default_rng(1)
    src = load_source("brick")
    for _ in range(3):
        r, c = rng.integers(256, 512 - 96), rng.integers(0, 512 - 96)
        clean = src[r : r + 96, c : c + 96].copy()
        img, mask = apply_defect(rng, kind, clean, load_source("gravel"))
        inside = mask > 0
        changed = img != clean
        assert inside.any() and not (changed & ~inside).any()
        assert changed[inside].mean() >= 0.5
        change = np.abs(img.astype(int) - clean.astype(int))[inside].mean()
        assert change >= visibility_threshold(kind, clean) >= (4 if kind == "blur" else 10)


def test_deterministic_byte_identical(tmp_path):
    kw = dict(categories=("gravel",), image_size=64, n_train=4, n_test_good=2)
    make_synthetic_mvtec(tmp_path / "a", n_test_defect_per_type=2, **kw)
    make_synthetic_mvtec(tmp_path / "b", n_test_defect_per_type=2, **kw)
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb and len(ha) == 4 + 2 + 2 * 5 * 2
    make_synthetic_mvtec(tmp_path / "c", n_test_defect_per_type=2, seed=1, **kw)
    assert _hashes(tmp_path / "c") != ha


def test_overwrite_policy(tmp_path):
    kw = dict(categories=("brick",), image_size=32, n_train=2, n_test_good=1)
    make_synthetic_mvtec(tmp_path, n_test_defect_per_type=1, **kw)
    before = _hashes(tmp_path)
    make_synthetic_mvtec(tmp_path, n_test_defect_per_type=1, **kw)  # identical: accepted
    assert _hashes(tmp_path) == before
    with pytest.raises(FileExistsError, match=r"brick is not empty and differs.*overwrite=True"):
        make_synthetic_mvtec(tmp_path, n_test_defect_per_type=1, seed=5, **kw)
    assert _hashes(tmp_path) == before
    make_synthetic_mvtec(tmp_path, n_test_defect_per_type=1, seed=5, overwrite=True, **kw)
    after = _hashes(tmp_path)
    assert after != before and set(after) == set(before)
    assert [p.name for p in tmp_path.iterdir()] == ["brick"]  # no temp folders left


def test_train_and_test_come_from_disjoint_halves(tmp_path):
    make_synthetic_mvtec(
        tmp_path, categories=("brick",), image_size=64, n_train=4, n_test_good=3,
        n_test_defect_per_type=1,
    )  # fmt: skip
    src = load_source("brick").astype(np.float32)
    cat = tmp_path / "brick"

    def locate(p: Path) -> tuple[int, float]:
        """Best-matching source row over the 4 flips (normalised cross-correlation)."""
        img = _read(p).astype(np.float32)
        best = (-1, -2.0)
        for t in (img, img[::-1], img[:, ::-1], img[::-1, ::-1]):
            ncc = match_template(src, np.ascontiguousarray(t))
            r, _ = np.unravel_index(np.argmax(ncc), ncc.shape)
            if ncc.max() > best[1]:
                best = (int(r), float(ncc.max()))
        return best

    train = sorted((cat / "train/good").glob("*.png"))
    test = sorted((cat / "test/good").glob("*.png"))
    for p in train:
        row, score = locate(p)
        assert score > 0.99 and TRAIN_ROWS[0] <= row <= TRAIN_ROWS[1] - 64
    for p in test:
        row, score = locate(p)
        assert score > 0.99 and TEST_ROWS[0] <= row <= TEST_ROWS[1] - 64
    train_px = {_read(p).tobytes() for p in train}
    assert not train_px & {_read(p).tobytes() for p in test}


def test_no_augmentation_crops_are_exact(tmp_path):
    make_synthetic_mvtec(
        tmp_path, categories=("grass",), image_size=32, n_train=2, n_test_good=1,
        n_test_defect_per_type=1, augment=False,
    )  # fmt: skip
    src = load_source("grass")
    img = _read(tmp_path / "grass/train/good/000.png")
    rows = np.lib.stride_tricks.sliding_window_view(src, (1, 32))[:, :, 0]  # (512, 481, 32)
    cands = np.argwhere((rows == img[0]).all(axis=-1))  # first-row matches, then full check
    hits = [(r, c) for r, c in cands if np.array_equal(src[r : r + 32, c : c + 32], img)]
    assert len(hits) >= 1 and all(r <= TRAIN_ROWS[1] - 32 for r, _ in hits)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="categories must be among"):
        make_synthetic_mvtec(tmp_path, categories=("camera",))
    with pytest.raises(ValueError, match="crop_size"):
        make_synthetic_mvtec(tmp_path, image_size=300)
    with pytest.raises(ValueError, match="n_train"):
        make_synthetic_mvtec(tmp_path, n_train=1)
    with pytest.raises(ValueError, match="image_size 64 > crop_size 32 would upsample"):
        make_synthetic_mvtec(tmp_path, image_size=64, crop_size=32)
    assert list(tmp_path.iterdir()) == []
