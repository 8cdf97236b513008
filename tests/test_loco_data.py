"""MVTec LOCO AD: the reader (layout, regions, saturations, errors naming the file), the offline
scene set (read back, counts, determinism, every defect kind, saturations as the thesis
specifies) and the protocol's LOCO metric suite."""

import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from ust.data.dataset import Region, Sample
from ust.data.loco import (
    LOGICAL,
    STRUCTURAL,
    DefectType,
    LocoLayoutError,
    is_loco_category,
    read_defects_config,
    validate_loco_category,
)
from ust.data.loco_scenes import (
    CATEGORIES,
    LOGICAL_DEFECTS,
    STRUCTURAL_DEFECTS,
    category_scenes,
    defects_config,
    make_loco_set,
    object_area,
)
from ust.eval.spro import evaluate_loco
from ust.experiments.protocol import EvaluationSettings, PrecomputedMaps, evaluate

SIZE = 64
COUNTS = {"n_train": 3, "n_validation": 2, "n_test_good": 2, "n_test_per_kind": 1}


def build(root, seed=0, categories=CATEGORIES):
    return make_loco_set(root, categories, image_size=SIZE, seed=seed, **COUNTS)


@pytest.fixture(scope="module")
def loco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("loco") / "data"
    build(root)
    return root


@pytest.fixture
def tray(loco_root, tmp_path):
    """A private copy of the generated ``tray`` category to break."""
    shutil.copytree(loco_root / "tray", tmp_path / "data" / "tray")
    return tmp_path / "data"


def tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def random_maps(samples, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(s.size).astype(np.float32) for s in samples]


# --------------------------------------------------------------------------- the offline set
def test_offline_set_reads_back_with_counts_and_splits(loco_root):
    for category in CATEGORIES:
        assert is_loco_category(loco_root, category)
        index = validate_loco_category(loco_root, category)
        n_logical = len(LOGICAL_DEFECTS[category])
        assert index.counts() == {
            "train": 3,
            "validation": 2,
            "test_good": 2,
            "test_logical": n_logical,
            "test_structural": len(STRUCTURAL_DEFECTS),
        }
        train, val = index.train_validation(0.5, seed=7)  # fraction and seed ignored
        assert [s.split for s in train] == ["train"] * 3
        assert [s.split for s in val] == ["validation"] * 2
        assert val[0].key == "validation/good/000"
        assert all(s.size == (SIZE, SIZE) for s in index.test)
        assert index.subsets == [s.defect for s in index.test]
        first_logical = next(s for s in index.test if s.defect == LOGICAL)
        assert first_logical.key == "test/logical_anomalies/000"
        assert first_logical.ground_truth[0].relative_to(index.directory).as_posix() == (
            "ground_truth/logical_anomalies/000/000.png"
        )
        assert index.defect_types == [*LOGICAL_DEFECTS[category], *STRUCTURAL_DEFECTS]
        with Image.open(index.test[0].path) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)


def test_every_defect_kind_present_with_the_thesis_saturations(loco_root):
    for category in CATEGORIES:
        index = validate_loco_category(loco_root, category)
        area = object_area(category, SIZE)
        seen = {}
        for s in index.test:
            regions = index.regions(s)
            if not s.is_anomalous:
                assert regions == [] and s.ground_truth == ()
                continue
            assert len(regions) == 1  # one annotated defect per image
            seen[regions[0].defect] = (s.defect, regions[0])
        assert set(seen) == set(LOGICAL_DEFECTS[category]) | set(STRUCTURAL_DEFECTS)
        for name, (subset, region) in seen.items():
            size = int(region.mask.sum())
            if name in STRUCTURAL_DEFECTS:
                assert subset == STRUCTURAL
                assert region.saturation == size  # the whole region
            else:
                assert subset == LOGICAL
            if name.startswith("missing_"):  # the whole place, saturated by one object
                assert region.saturation == area and size > area
            elif name.startswith("extra_") or name == "swapped_sides":  # both objects
                assert region.saturation == area and size == 2 * area
            elif name == "wrong_colour":
                assert region.saturation == size == area


def test_defects_config_is_written_as_specified(loco_root):
    config = json.loads((loco_root / "shelf" / "defects_config.json").read_text())
    assert config == defects_config("shelf", SIZE)
    by_name = {e["defect_name"]: e for e in config}
    assert by_name["missing_box"]["relative_saturation"] is False
    assert by_name["missing_box"]["saturation_threshold"] == object_area("shelf", SIZE)
    assert by_name["scratch"] == {
        "defect_name": "scratch",
        "pixel_value": by_name["scratch"]["pixel_value"],
        "saturation_threshold": 1.0,
        "relative_saturation": True,
    }
    assert len({e["pixel_value"] for e in config}) == len(config)


def test_offline_set_is_deterministic(tmp_path, loco_root):
    build(tmp_path / "again")
    for category in CATEGORIES:
        assert tree_digest(tmp_path / "again" / category) == tree_digest(loco_root / category)
    build(tmp_path / "other", seed=1, categories=("tray",))
    assert tree_digest(tmp_path / "other" / "tray") != tree_digest(loco_root / "tray")
    assert build(tmp_path / "again") == list(CATEGORIES)  # identical: left untouched


def test_scene_records_match_files_and_differ_between_images(loco_root):
    items = list(category_scenes("tray", image_size=SIZE, **COUNTS))
    assert len(items) == 3 + 2 + 2 + 6
    for item in items[:5]:
        stored = np.asarray(Image.open(loco_root / "tray" / item.path))
        np.testing.assert_array_equal(stored, item.image)
    assert not np.array_equal(items[0].image, items[1].image)
    assert {i.kind for i in items if i.subset == LOGICAL} == set(LOGICAL_DEFECTS["tray"])


def test_offline_set_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        make_loco_set(tmp_path, ("tray",), image_size=256, **COUNTS)
    with pytest.raises(ValueError, match="unknown"):
        make_loco_set(tmp_path, ("pushpins",), image_size=SIZE, **COUNTS)
    with pytest.raises(ValueError, match="≥ 1"):
        make_loco_set(tmp_path, ("tray",), image_size=SIZE, **{**COUNTS, "n_test_per_kind": 0})
    with pytest.raises(FileNotFoundError, match="colobot-common-textures"):
        make_loco_set(tmp_path, ("tray",), image_size=SIZE, texture_dir=tmp_path, **COUNTS)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ saturations
def test_saturation_rules():
    rel = DefectType("d", 1, 0.5, True)
    assert rel.saturation(9) == 4.0  # floor(0.5 * 9), as published
    assert rel.saturation(1) == 1.0  # floor gives 0: at least one pixel
    assert DefectType("d", 1, 1.0, True).saturation(37) == 37.0
    absolute = DefectType("d", 1, 120, False)
    assert absolute.saturation(500) == 120.0
    assert absolute.saturation(80) == 80.0  # min(s, |C|)
    with pytest.raises(ValueError):
        rel.saturation(0)


# --------------------------------------------------------------------------- reader errors
def write_config(root, entries):
    (root / "tray" / "defects_config.json").write_text(json.dumps(entries))


def first_region(root, subset=LOGICAL):
    return root / "tray" / "ground_truth" / subset / "000" / "000.png"


def test_unknown_pixel_value_names_the_file(tray):
    path = first_region(tray)
    mask = np.asarray(Image.open(path))
    Image.fromarray((mask > 0).astype(np.uint8) * 7).save(path)
    with pytest.raises(LocoLayoutError, match="pixel value 7 is not in defects_config.json") as e:
        validate_loco_category(tray, "tray")
    assert str(path) in str(e.value)


def test_region_with_two_values_names_the_file(tray):
    path = first_region(tray, STRUCTURAL)
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0] = 255 if mask.max() != 255 else 254
    Image.fromarray(mask).save(path)
    with pytest.raises(LocoLayoutError, match="2 pixel values") as e:
        validate_loco_category(tray, "tray")
    assert str(path) in str(e.value)


def test_region_larger_than_its_image_names_the_file(tray):
    path = first_region(tray)
    mask = np.asarray(Image.open(path))
    Image.fromarray(np.pad(mask, ((0, 3), (0, 5)))).save(path)
    with pytest.raises(LocoLayoutError, match="differs from its image 000.png") as e:
        validate_loco_category(tray, "tray")
    assert str(path) in str(e.value) and "69x67" in str(e.value)


def test_missing_ground_truth_folder_names_the_image(tray):
    folder = tray / "tray" / "ground_truth" / STRUCTURAL / "001"
    shutil.rmtree(folder)
    with pytest.raises(LocoLayoutError, match="missing ground-truth folder") as e:
        validate_loco_category(tray, "tray")
    assert str(folder) in str(e.value)
    assert str(tray / "tray" / "test" / STRUCTURAL / "001.png") in str(e.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a readable JSON file"),
        ("[]", "non-empty JSON list"),
        ({"defect_name": "a"}, "non-empty JSON list"),
        ([{"defect_name": "a", "pixel_value": 255}], "lacks the key"),
        (
            [
                {
                    "defect_name": "a",
                    "pixel_value": 0,
                    "saturation_threshold": 1,
                    "relative_saturation": True,
                }
            ],
            "pixel_value must be an integer in 1..255",
        ),
        (
            [
                {
                    "defect_name": "a",
                    "pixel_value": 255,
                    "saturation_threshold": 1.5,
                    "relative_saturation": True,
                }
            ],
            r"fraction in \(0, 1\]",
        ),
        (
            [
                {
                    "defect_name": "a",
                    "pixel_value": 255,
                    "saturation_threshold": -3,
                    "relative_saturation": False,
                }
            ],
            "number of pixels > 0",
        ),
        (
            [
                {
                    "defect_name": n,
                    "pixel_value": 255,
                    "saturation_threshold": 1,
                    "relative_saturation": True,
                }
                for n in "ab"
            ],
            "share pixel_value 255",
        ),
    ],
)
def test_malformed_defects_config(tray, content, message):
    path = tray / "tray" / "defects_config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(LocoLayoutError, match=message) as e:
        validate_loco_category(tray, "tray")
    assert str(path) in str(e.value)


def test_missing_defects_config_and_folders(tray):
    (tray / "tray" / "defects_config.json").unlink()
    with pytest.raises(LocoLayoutError, match="defects_config.json is missing"):
        validate_loco_category(tray, "tray")
    shutil.rmtree(tray / "tray" / "validation")
    assert is_loco_category(tray, "tray")  # still recognised by its test subsets
    with pytest.raises(LocoLayoutError, match="validation/good"):
        validate_loco_category(tray, "tray")
    with pytest.raises(LocoLayoutError, match="Categories found in .*: tray"):
        validate_loco_category(tray, "shelf")


def test_unknown_test_folder(tray):
    (tray / "tray" / "test" / "broken").mkdir()
    with pytest.raises(LocoLayoutError, match="test/broken"):
        validate_loco_category(tray, "tray")


def test_hidden_files_ignored_and_several_regions_read(tray):
    gt = tray / "tray" / "ground_truth" / LOGICAL / "000"
    (tray / "tray" / "test" / "good" / ".DS_Store").write_bytes(b"junk")
    (tray / "tray" / "test" / LOGICAL / "._000.png").write_bytes(b"fork")
    (gt / ".DS_Store").write_bytes(b"junk")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[2:6, 3:9] = 255 - 3  # structural "scratch" of the tray's config (4th entry)
    Image.fromarray(mask).save(gt / "001.png")
    index = validate_loco_category(tray, "tray")
    sample = next(s for s in index.test if s.key == "test/logical_anomalies/000")
    regions = index.regions(sample)
    assert [r.defect for r in regions] == ["missing_pin", "scratch"]
    assert regions[1].saturation == 24 and regions[1].mask.sum() == 24
    assert index.counts()["test_good"] == 2


def test_all_zero_region_warns_and_is_skipped(tray):
    Image.fromarray(np.zeros((SIZE, SIZE), dtype=np.uint8)).save(first_region(tray))
    with pytest.warns(UserWarning, match="all zero"):
        index = validate_loco_category(tray, "tray")
    sample = next(s for s in index.test if s.key == "test/logical_anomalies/000")
    assert index.regions(sample) == []


def test_read_defects_config_keys_by_pixel_value(loco_root):
    types = read_defects_config(loco_root / "tray" / "defects_config.json")
    assert types[255].defect_name == "missing_pin" and not types[255].relative_saturation
    assert list(types) == sorted(types, reverse=True)


def test_mvtec_folder_is_not_loco(tmp_path):
    (tmp_path / "cat" / "train" / "good").mkdir(parents=True)
    (tmp_path / "cat" / "test" / "crack").mkdir(parents=True)
    assert not is_loco_category(tmp_path, "cat")


# ------------------------------------------------------------------------------ the protocol
def test_protocol_uses_the_loco_metric_suite(loco_root, tmp_path):
    index = validate_loco_category(loco_root, "shelf")
    maps = random_maps(index.test)
    expected = evaluate_loco(maps, [index.regions(s) for s in index.test], index.subsets)
    _, val = index.train_validation(0.1, 0)
    val_maps = random_maps(val, seed=1)  # for the thresholds
    method = PrecomputedMaps([*index.test, *val], [*maps, *val_maps])
    out = tmp_path / "run"
    result = evaluate(method, index, out, EvaluationSettings(), validation=val, extra={"x": 1})
    assert result["localization"] == expected["localization"]
    assert result["classification"] == expected["classification"]
    assert result["au_spro"] == expected["localization"]["auc_spro"]["mean"]["0.05"]
    assert result["integration_limit"] == 0.05 and result["x"] == 1
    assert "au_pro" not in result
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["localization"]["auc_spro"]["logical_anomalies"].keys() == {
        "0.01",
        "0.05",
        "0.1",
        "0.3",
        "1.0",
    }
    assert (out / "maps" / "shelf" / "test" / LOGICAL / "000.tiff").is_file()
    assert (out / "val_maps" / "shelf" / "validation" / "good" / "000.tiff").is_file()
    assert (out / "thresholds.json").is_file()
    assert not (out / "pro_curve.csv").exists()  # the AU-PRO curve belongs to the AU-PRO suite


def test_metrics_equal_evaluate_loco_with_hand_read_regions(loco_root):
    """The regions the index gives are what the PNGs and defects_config.json say."""
    index = validate_loco_category(loco_root, "tray")
    config = {
        e["pixel_value"]: e
        for e in json.loads((loco_root / "tray" / "defects_config.json").read_text())
    }
    regions = []
    for s in index.test:
        mine = []
        for png in s.ground_truth:
            arr = np.asarray(Image.open(png))
            entry = config[int(arr.max())]
            area = int((arr > 0).sum())
            t = entry["saturation_threshold"]
            sat = np.floor(t * area) if entry["relative_saturation"] else min(t, area)
            mine.append(Region(arr > 0, float(sat), entry["defect_name"]))
        regions.append(mine)
    maps = random_maps(index.test, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert index.metrics(maps) == {
            "au_spro": evaluate_loco(maps, regions, index.subsets)["localization"]["auc_spro"][
                "mean"
            ]["0.05"],
            "integration_limit": 0.05,
            **evaluate_loco(maps, regions, index.subsets),
        }
    assert isinstance(index.test[0], Sample)
