"""The offline teachers' photo pool (ust.data.photo_pool) and its stage, config section and
preflight check (docs/decisions.md#offline-teacher-images). Fake package folders stand in for the
Debian packages, so the tests never depend on what is installed."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ust.data import photo_pool as pool_module
from ust.data.patches import EXCLUDED_SKIMAGE_IMAGES, HELDOUT_IMAGES, ImageSource
from ust.data.photo_pool import PHOTO_PACKAGES, PhotoPackage, build_photo_pool
from ust.experiments.config import PHOTO_POOL, PipelineConfig
from ust.experiments.params import load_params
from ust.paths import ROOT
from ust.stages import photo_pool as stage
from ust.stages import preflight

SIZES = {"wide.jpg": (2000, 1000), "tall.png": (300, 1500), "small.jpg": (200, 120)}


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """Two fake packages: 'pkg-a' (three photographs of SIZES) and 'pkg-b' (one)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "share"
    folder.mkdir()
    for name, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)).save(folder / "b.jpg")
    fake = {
        "pkg-a": PhotoPackage(str(folder), tuple(SIZES)),
        "pkg-b": PhotoPackage(str(folder), ("b.jpg",)),
    }
    monkeypatch.setattr(pool_module, "PHOTO_PACKAGES", fake)
    return fake


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def test_registry_lists_only_photographs():
    assert list(PHOTO_PACKAGES) == ["mate-backgrounds", "lomiri-wallpapers-16.04"]
    assert len(PHOTO_PACKAGES["mate-backgrounds"].files) == 12
    lomiri = PHOTO_PACKAGES["lomiri-wallpapers-16.04"].files
    assert len(lomiri) == 14 and "umang_by_Abhishek_Mudgal.jpg" not in lomiri
    assert all("_by_" in name for name in lomiri)  # never another package's wallpaper


def test_pool_is_byte_deterministic_and_never_upsampled(packages, tmp_path):
    counts = build_photo_pool(tmp_path / "pool", ["pkg-a", "pkg-b"], max_side=1024)
    assert counts == {"embedded": 15, "pkg-a": 3, "pkg-b": 1}
    first = _hashes(tmp_path / "pool")
    assert len(first) == 19
    assert build_photo_pool(tmp_path / "again", ["pkg-a", "pkg-b"], max_side=1024) == counts
    assert _hashes(tmp_path / "again") == first
    sizes = {n: Image.open(tmp_path / "pool" / f"pkg-a_{Path(n).stem}.png").size for n in SIZES}
    assert sizes == {"wide.jpg": (1024, 512), "tall.png": (205, 1024), "small.jpg": (200, 120)}
    names = set(first)
    for held in HELDOUT_IMAGES:  # the embedded yardstick stays unseen by every pool
        assert f"embedded_{held}.png" not in names
    for texture in EXCLUDED_SKIMAGE_IMAGES:  # the texture set's sources are never read
        assert not any(texture in n for n in names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    # the folder is a teacher image source: 10 % held out, evenly spread over the sorted files
    train = ImageSource.folder(tmp_path / "pool", "train")
    heldout = ImageSource.folder(tmp_path / "pool", "heldout")
    assert len(train) + len(heldout) == 19 and len(heldout) == 2


def test_missing_package_is_named_with_the_install_command(packages, tmp_path):
    packages["pkg-c"] = PhotoPackage(str(tmp_path / "no"), ("x.jpg",))  # not installed
    with pytest.raises(FileNotFoundError, match=r"Debian's pkg-c not found.*apt-get install pkg-c"):
        build_photo_pool(tmp_path / "pool", ["pkg-a", "pkg-c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["share"]  # nothing half-written
    with pytest.raises(ValueError, match="unknown photo package 'nope'"):
        build_photo_pool(tmp_path / "pool", ["nope"])


def _config(params: dict) -> PipelineConfig:
    return PipelineConfig.from_params(params, source="params.yaml")


def test_config_section_is_checked_and_optional():
    params = load_params(ROOT / "profiles/default.yaml")
    config = _config(params)
    assert config.photo_pool.packages == ("mate-backgrounds", "lomiri-wallpapers-16.04")
    assert config.teacher.images == PHOTO_POOL
    bad = copy.deepcopy(params)
    bad["photo_pool"]["packages"] = ["mate-background"]
    with pytest.raises(ValueError, match="unknown package 'mate-background'.*'mate-backgrounds'"):
        _config(bad)
    old = copy.deepcopy(load_params(ROOT / "profiles/smoke.yaml"))
    del old["photo_pool"]  # a parameter file from before the section existed
    assert _config(old).photo_pool.packages == ()


def test_stage_builds_the_pool_or_writes_a_note(packages, tmp_path):
    params = load_params(ROOT / "profiles/smoke.yaml")
    out = stage.run(tmp_path / "note", _config(params))
    assert [p.name for p in out.iterdir()] == [stage.NOTE]
    params = copy.deepcopy(params)
    params["photo_pool"]["packages"] = ["pkg-b"]
    out = stage.run(tmp_path / "pool", _config(params))
    assert len(list(out.iterdir())) == 16
    params["photo_pool"]["packages"] = []
    params["teacher"]["images"] = str(tmp_path / "pool")
    with pytest.raises(ValueError, match="photo_pool.packages is empty"):
        stage.run(tmp_path / "pool", _config(params))


def test_preflight_names_a_missing_pool_package(tmp_path, monkeypatch):
    params = copy.deepcopy(load_params(ROOT / "profiles/smoke.yaml"))
    params["teacher"]["images"] = PHOTO_POOL
    monkeypatch.setattr(
        pool_module, "PHOTO_PACKAGES", {"pkg-a": PhotoPackage(str(tmp_path), ("x.jpg",))}
    )
    (found,) = preflight.problems(params)
    assert "`photo_pool.packages` is empty" in found
    params["photo_pool"]["packages"] = ["pkg-a"]
    (found,) = preflight.problems(params)
    assert found.startswith("[teacher images] photograph ") and "apt-get install pkg-a" in found
    (tmp_path / "x.jpg").write_bytes(b"")
    assert preflight.problems(params) == []
