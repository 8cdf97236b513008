"""MVTec AD layout: validation errors, index, split, loaders, datasets and anomaly-map files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ust.data.mvtec import (
    CATEGORIES,
    OBJECTS,
    TEXTURES,
    MVTecImages,
    MVTecLayoutError,
    MVTecTest,
    anomaly_map_path,
    load_anomaly_map,
    load_image,
    load_mask,
    save_anomaly_map,
    split_train_val,
    validate_category,
)

SIZE = 32


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_tree(
    root: Path,
    category: str = "widget",
    n_train: int = 5,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
    rgb: bool = True,
) -> Path:
    """A tiny MVTec tree: 32×32 images, square masks of 0/255 in the centre of defect images."""
    defects = {"crack": 2, "broken_large": 1} if defects is None else defects
    rng = np.random.default_rng(0)
    shape = (SIZE, SIZE, 3) if rgb else (SIZE, SIZE)
    cat = root / category
    for i in range(n_train):
        _png(cat / "train/good" / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    for i in range(n_good):
        _png(cat / "test/good" / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    for d, n in defects.items():
        for i in range(n):
            _png(cat / "test" / d / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
            m = np.zeros((SIZE, SIZE), np.uint8)
            m[8 : 16 + i, 10:20] = 255
            _png(cat / "ground_truth" / d / f"{i:03d}_mask.png", m)
    return cat


def test_category_constants():
    assert len(CATEGORIES) == 15 and len(set(CATEGORIES)) == 15
    assert set(TEXTURES) | set(OBJECTS) == set(CATEGORIES)
    assert not set(TEXTURES) & set(OBJECTS)
    assert set(TEXTURES) == {"carpet", "grid", "leather", "tile", "wood"}
    assert "metal_nut" in OBJECTS


def test_index_content(tmp_path):
    make_tree(tmp_path)
    idx = validate_category(tmp_path, "widget")
    assert [p.name for p in idx.train] == [f"{i:03d}.png" for i in range(5)]
    assert idx.counts() == {"train": 5, "test_good": 2, "test_defective": 3}
    assert idx.defect_types == ["broken_large", "crack"]
    ids = [s.image_id for s in idx.test]
    assert ids == ["broken_large/000", "crack/000", "crack/001", "good/000", "good/001"]
    crack1 = idx.test[2]
    assert crack1.mask_path == tmp_path / "widget/ground_truth/crack/001_mask.png"
    assert crack1.is_anomalous and crack1.size == (SIZE, SIZE)
    assert idx.test[3].mask_path is None and not idx.test[3].is_anomalous
    assert len(idx.sizes) == 10 and set(idx.sizes.values()) == {(SIZE, SIZE)}
    assert idx.directory == tmp_path / "widget"


def test_natural_sort_and_hidden_files(tmp_path):
    cat = make_tree(tmp_path, n_train=0, defects={})
    for name in ("10.png", "2.png", "1.png"):
        _png(cat / "train/good" / name, np.zeros((8, 8), np.uint8))
    (cat / "train/good/._2.png").write_bytes(b"mac resource fork")
    (cat / "train/good/.DS_Store").write_bytes(b"junk")
    idx = validate_category(tmp_path, "widget")
    assert [p.name for p in idx.train] == ["1.png", "2.png", "10.png"]


def test_missing_category_lists_present(tmp_path):
    make_tree(tmp_path, "bottle")
    make_tree(tmp_path, "cable")
    with pytest.raises(MVTecLayoutError, match=r"'screw'.*Categories found in .*: bottle, cable"):
        validate_category(tmp_path, "screw")


def test_root_is_category_folder_hint(tmp_path):
    cat = make_tree(tmp_path, "bottle")
    with pytest.raises(MVTecLayoutError, match="pass its parent as root"):
        validate_category(cat, "bottle")


def test_missing_root(tmp_path):
    with pytest.raises(MVTecLayoutError, match="root folder .*nope does not exist"):
        validate_category(tmp_path / "nope", "bottle")


def test_missing_train_good(tmp_path):
    cat = make_tree(tmp_path)
    for p in (cat / "train/good").iterdir():
        p.unlink()
    (cat / "train/good").rmdir()
    with pytest.raises(MVTecLayoutError, match=r"missing training folder .*train/good"):
        validate_category(tmp_path, "widget")


def test_empty_train_good(tmp_path):
    cat = make_tree(tmp_path)
    for p in (cat / "train/good").iterdir():
        p.unlink()
    (cat / "train/good/000.jpg").write_bytes(b"x")
    with pytest.raises(MVTecLayoutError, match=r"train/good is empty \(no \*\.png\).*000\.jpg"):
        validate_category(tmp_path, "widget")


def test_missing_test_folder(tmp_path):
    cat = make_tree(tmp_path, n_good=0, defects={})
    assert not (cat / "test").exists()
    with pytest.raises(MVTecLayoutError, match=r"'widget': missing test folder .*widget/test"):
        validate_category(tmp_path, "widget")


def test_missing_ground_truth_folder(tmp_path):
    cat = make_tree(tmp_path)
    _png(cat / "test/scratch/000.png", np.zeros((SIZE, SIZE), np.uint8))
    expected = re.escape(str(cat / "ground_truth" / "scratch"))
    with pytest.raises(MVTecLayoutError, match=rf"test/scratch have no matching.*{expected}"):
        validate_category(tmp_path, "widget")


def test_missing_mask_file(tmp_path):
    cat = make_tree(tmp_path)
    mask = cat / "ground_truth/crack/001_mask.png"
    mask.rename(cat / "ground_truth/crack/001.png")
    with pytest.raises(MVTecLayoutError) as err:
        validate_category(tmp_path, "widget")
    msg = str(err.value)
    assert f"missing ground-truth mask, expected {mask}" in msg
    assert "found 001.png instead" in msg
    assert len(err.value.problems) == 1


def test_mask_wrong_size(tmp_path):
    cat = make_tree(tmp_path)
    _png(cat / "ground_truth/crack/000_mask.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(
        MVTecLayoutError, match=r"000_mask\.png: mask size 24x20 \(WxH\) differs .* 32x32"
    ):
        validate_category(tmp_path, "widget")


def test_corrupt_png(tmp_path):
    cat = make_tree(tmp_path)
    bad = cat / "train/good/003.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(MVTecLayoutError, match=rf"{re.escape(str(bad))}: unreadable or corrupt"):
        validate_category(tmp_path, "widget")


def test_truncated_png(tmp_path):
    cat = make_tree(tmp_path)
    bad = cat / "test/crack/001.png"
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(MVTecLayoutError, match=rf"{re.escape(str(bad))}: unreadable or corrupt"):
        validate_category(tmp_path, "widget")


def test_corrupt_mask(tmp_path):
    cat = make_tree(tmp_path)
    bad = cat / "ground_truth/crack/000_mask.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MVTecLayoutError, match=rf"{re.escape(str(bad))}: unreadable or corrupt"):
        validate_category(tmp_path, "widget")


def test_several_problems_reported_together(tmp_path):
    cat = make_tree(tmp_path)
    (cat / "train/good/000.png").write_bytes(b"garbage")
    (cat / "ground_truth/crack/000_mask.png").unlink()
    with pytest.raises(MVTecLayoutError, match=r"2 problem\(s\)") as err:
        validate_category(tmp_path, "widget")
    assert len(err.value.problems) == 2


def test_mask_values(tmp_path):
    cat = make_tree(tmp_path, defects={"crack": 1})
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[:4] = 1
    _png(cat / "ground_truth/crack/000_mask.png", m)  # {0, 1} is accepted
    idx = validate_category(tmp_path, "widget")
    mask = load_mask(idx.test[0].mask_path, idx.test[0].size)
    assert mask.dtype == torch.bool and mask.shape == (SIZE, SIZE) and int(mask.sum()) == 4 * SIZE
    m[5:8] = 128  # {0, 1, 128}: rejected
    _png(cat / "ground_truth/crack/000_mask.png", m)
    with pytest.raises(MVTecLayoutError, match=r"mask is not binary: values \[0, 1, 128\]"):
        validate_category(tmp_path, "widget")


def test_empty_defect_mask_warns(tmp_path):
    cat = make_tree(tmp_path, defects={"crack": 1})
    _png(cat / "ground_truth/crack/000_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    with pytest.warns(UserWarning, match="all-zero mask"):
        idx = validate_category(tmp_path, "widget")
    assert idx.counts()["test_defective"] == 1


def test_split_deterministic_disjoint_min_one():
    paths = [Path(f"/x/{i:03d}.png") for i in range(25)]
    tr, va = split_train_val(paths, 0.1, seed=3)
    assert len(va) == 2 and len(tr) == 23
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(paths)
    assert split_train_val(list(reversed(paths)), 0.1, seed=3) == (tr, va)
    assert split_train_val(paths, 0.1, seed=4) != (tr, va)
    tr3, va3 = split_train_val(paths[:3], 0.1, seed=0)
    assert len(va3) == 1 and len(tr3) == 2
    assert split_train_val(paths[:2], 0.9)[0] != []  # at least 1 training image
    with pytest.raises(ValueError, match="at least 2 images"):
        split_train_val(paths[:1])
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(paths, 0.0)


def test_index_split(tmp_path):
    make_tree(tmp_path, n_train=10)
    idx = validate_category(tmp_path, "widget")
    tr, va = idx.split(0.2, seed=1)
    assert len(va) == 2 and len(tr) == 8 and sorted(tr + va) == sorted(idx.train)


def test_load_image_grayscale_rgba_and_resize(tmp_path):
    g = np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) % 256
    gray = _png(tmp_path / "g.png", g.astype(np.uint8))
    t = load_image(gray)
    assert t.shape == (3, SIZE, SIZE) and t.dtype == torch.float32
    assert torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])
    assert torch.allclose(t[0], torch.from_numpy(g.astype(np.float32) / 255))
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    t = load_image(_png(tmp_path / "a.png", rgba))
    assert t.shape == (3, SIZE, SIZE) and t[0].min() == 1.0 and t[1:].max() == 0.0
    z = load_image(gray, 16)
    assert z.shape == (3, 16, 16) and 0.0 <= z.min() and z.max() <= 1.0
    g16 = np.full((8, 8), 65535, np.uint16)
    assert load_image(_png(tmp_path / "w16.png", g16)).min() == pytest.approx(1.0)


def test_load_mask_none_and_size_check(tmp_path):
    assert load_mask(None, (5, 7)).shape == (5, 7) and not load_mask(None, (5, 7)).any()
    m = np.zeros((10, 12), np.uint8)
    m[2, 3] = 255
    p = _png(tmp_path / "m.png", m)
    got = load_mask(p, (10, 12))
    assert got.dtype == torch.bool and got.nonzero().tolist() == [[2, 3]]
    with pytest.raises(MVTecLayoutError, match=r"mask size 12x10 \(WxH\) differs .* 10x10"):
        load_mask(p, (10, 10))


def test_datasets(tmp_path):
    make_tree(tmp_path, rgb=False)
    idx = validate_category(tmp_path, "widget")
    ds = MVTecImages(idx.train, size=16, cache=True)
    img, i = ds[4]
    assert len(ds) == 5 and i == 4 and img.shape == (3, 16, 16)
    assert ds[4][0] is img  # cached
    test = MVTecTest(idx, size=16)
    item = test[2]  # crack/001
    assert item["image"].shape == (3, 16, 16)
    assert item["mask"].shape == (SIZE, SIZE) and item["mask"].dtype == torch.bool
    assert int(item["mask"].sum()) == 9 * 10
    assert (item["defect"], item["label"], item["image_id"]) == ("crack", 1, "crack/001")
    assert item["orig_size"].tolist() == [SIZE, SIZE]
    good = test[4]
    assert good["label"] == 0 and not good["mask"].any() and good["image_id"] == "good/001"
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=2)))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image_id"] == [
        "broken_large/000",
        "crack/000",
    ]


def test_anomaly_map_path_layout(tmp_path):
    expected = tmp_path / "bottle" / "test" / "broken_large" / "000.tiff"
    assert anomaly_map_path(tmp_path, "bottle", "broken_large", "000") == expected
    assert anomaly_map_path(tmp_path, "bottle", "broken_large", "broken_large/000") == expected
    assert anomaly_map_path(tmp_path, "bottle", "broken_large", "000.png") == expected
    with pytest.raises(ValueError, match="does not belong"):
        anomaly_map_path(tmp_path, "bottle", "good", "broken_large/000")


def test_tiff_round_trip_atomic(tmp_path):
    arr = np.random.default_rng(0).normal(size=(20, 24)).astype(np.float64)
    path = anomaly_map_path(tmp_path, "bottle", "good", "007")
    assert save_anomaly_map(path, arr) == path
    back = load_anomaly_map(path)
    assert back.dtype == np.float32 and back.shape == (20, 24)
    assert np.array_equal(back, arr.astype(np.float32))
    save_anomaly_map(path, torch.ones(1, 20, 24))  # overwrite; (1, H, W) tensors accepted
    assert np.array_equal(load_anomaly_map(path), np.ones((20, 24), np.float32))
    assert sorted(p.name for p in path.parent.iterdir()) == ["007.tiff"]
    with pytest.raises(ValueError, match="must be 2-D"):
        save_anomaly_map(path.with_name("008.tiff"), np.zeros((2, 3, 4)))
    assert sorted(p.name for p in path.parent.iterdir()) == ["007.tiff"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import ust.data.mvtec as mv

    path = anomaly_map_path(tmp_path, "bottle", "crack", "000")
    save_anomaly_map(path, np.zeros((4, 4)))

    def broken_imwrite(fh, arr):
        fh.write(b"half a tiff")
        raise RuntimeError("disk full")

    monkeypatch.setattr(mv.tifffile, "imwrite", broken_imwrite)
    with pytest.raises(RuntimeError, match="disk full"):
        save_anomaly_map(path, np.ones((4, 4)))
    with pytest.raises(RuntimeError, match="disk full"):
        save_anomaly_map(path.with_name("001.tiff"), np.ones((4, 4)))
    assert sorted(p.name for p in path.parent.iterdir()) == ["000.tiff"]
    monkeypatch.undo()
    assert np.array_equal(load_anomaly_map(path), np.zeros((4, 4), np.float32))


def _corrupt_idat_with_valid_crc(path: Path) -> None:
    """Scramble the compressed pixel data of a PNG and fix the chunk CRC (passes verify())."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    pos = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[pos : pos + 4])
    start = pos + 8
    data[start + 2 : start + length] = bytes(length - 2)  # keep the zlib header, zero the rest
    crc = zlib.crc32(bytes(data[pos + 4 : start + length])) & 0xFFFFFFFF
    data[start + length : start + length + 4] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_decode_images_catches_corrupt_pixel_data(tmp_path):
    cat = make_tree(tmp_path)
    bad = cat / "test/good/001.png"
    _corrupt_idat_with_valid_crc(bad)
    assert len(validate_category(tmp_path, "widget").test) == 5  # chunk CRCs are valid
    with pytest.raises(MVTecLayoutError, match=rf"{re.escape(str(bad))}: unreadable or corrupt"):
        validate_category(tmp_path, "widget", decode_images=True)


def test_load_image_grayscale_already_at_size(tmp_path):
    """Regression: a grayscale file already at the requested size used to be clamped in place on
    an expanded (aliased) view and crashed."""
    from PIL import Image

    from ust.data.mvtec import load_image

    path = tmp_path / "g.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(path)
    img = load_image(path, 8)
    assert img.shape == (3, 8, 8)
    assert torch.equal(img[0], img[2])
    assert float(img.max()) == pytest.approx(252 / 255)
