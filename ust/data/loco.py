"""MVTec LOCO AD on disk: validation, the dataset contract, region masks and their saturations.

Layout as published (docs/decisions.md#loco-layout; any category name works)::

    <root>/<category>/train/good/*.png
    <root>/<category>/validation/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/{logical_anomalies,structural_anomalies}/<id>.png
    <root>/<category>/ground_truth/{logical_anomalies,structural_anomalies}/<id>/<nnn>.png
    <root>/<category>/defects_config.json

Every PNG of a ground-truth folder ``<id>/`` is one annotated region, used whole (never split into
connected components; docs/decisions.md#spro-metric). Its non-zero pixels share one value, which
names the region's defect type in ``defects_config.json``: a list of entries
``{"defect_name", "pixel_value", "saturation_threshold", "relative_saturation"}``. The saturation
of a region C (pixels a detection must cover to count as complete) is, as in the published
evaluation, ``s = ⌊rel·|C|⌋`` for a relative threshold ``rel`` in (0, 1] and ``s = min(s_abs, |C|)``
for an absolute one ``s_abs`` in pixels; ``s`` is raised to 1 pixel where ``⌊rel·|C|⌋`` is 0
(the thesis requires 0 < s ≤ |C|; :meth:`DefectType.saturation`).

:func:`validate_loco_category` checks the whole tree (folders, defects_config.json, every image and
region PNG: readable, region size = image size, one known pixel value) before anything is trained
and raises :class:`LocoLayoutError` naming the file at fault. It returns a
:class:`LocoCategoryIndex`, the :class:`~ust.data.dataset.DatasetIndex` of the category:
``train_validation`` gives ``train/good`` and ``validation/good`` (the fraction and seed are
ignored: the dataset has its own validation set), test samples carry the subset folder name as
``defect`` and the region PNGs as ``ground_truth``, and :meth:`LocoCategoryIndex.metrics` is the
dataset's metric suite (:func:`ust.eval.spro.evaluate_loco`), which
:func:`ust.experiments.protocol.evaluate` uses instead of AU-PRO.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ust.data.dataset import GOOD, Region, Sample
from ust.data.mvtec import (
    _PIL_ERRORS,
    _Corrupt,
    _mask_array,
    _pngs,
    _probe_image,
    _subdirs,
    available_categories,
)
from ust.eval.spro import SUBSETS, evaluate_loco

__all__ = [
    "CONFIG_FILE",
    "LOGICAL",
    "STRUCTURAL",
    "SUBSETS",
    "DefectType",
    "LocoCategoryIndex",
    "LocoLayoutError",
    "is_loco_category",
    "read_defects_config",
    "validate_loco_category",
]

LOGICAL = "logical_anomalies"
STRUCTURAL = "structural_anomalies"
CONFIG_FILE = "defects_config.json"
HEADLINE_LIMIT = 0.05  # FPR limit of the main AU-sPRO number (one of ust.eval.spro.LIMITS)
_CONFIG_KEYS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")
_MAX_LISTED_PROBLEMS = 20


class LocoLayoutError(ValueError):
    """The folder tree does not follow the MVTec LOCO AD layout; ``problems`` lists every issue."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


# ------------------------------------------------------------------------------ defects_config
@dataclass(frozen=True)
class DefectType:
    """One entry of ``defects_config.json``: a defect type, the pixel value of its region PNGs
    and its saturation threshold (a fraction of the region when ``relative_saturation``, else
    pixels)."""

    defect_name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool

    def saturation(self, area: int) -> float:
        """Saturation ``s`` in pixels of a region of ``area`` = |C| ≥ 1 pixels of this type:
        ``⌊rel·|C|⌋`` (relative) or ``min(s_abs, |C|)`` (absolute), at least 1 pixel."""
        if area < 1:
            raise ValueError(f"a region needs at least one pixel, got area {area}")
        if self.relative_saturation:
            s = float(math.floor(self.saturation_threshold * area))
        else:
            s = min(float(self.saturation_threshold), float(area))
        return max(1.0, s)


def _config_entry(entry: Any, i: int, path: Path) -> DefectType:
    """One validated entry of ``path`` (raises LocoLayoutError naming the entry)."""
    where = f"{path}: entry {i}"
    if not isinstance(entry, dict):
        raise LocoLayoutError(
            f"{where} is {type(entry).__name__}, expected an object with keys "
            f"{', '.join(_CONFIG_KEYS)}"
        )
    missing = [k for k in _CONFIG_KEYS if k not in entry]
    if missing:
        raise LocoLayoutError(f"{where} lacks the key(s) {', '.join(missing)}")
    name, value = entry["defect_name"], entry["pixel_value"]
    threshold, relative = entry["saturation_threshold"], entry["relative_saturation"]
    if not isinstance(name, str) or not name:
        raise LocoLayoutError(f"{where}: defect_name must be a non-empty string, got {name!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise LocoLayoutError(
            f"{where} ({name}): pixel_value must be an integer in 1..255 (0 is the background), "
            f"got {value!r}"
        )
    if not isinstance(relative, bool):
        raise LocoLayoutError(
            f"{where} ({name}): relative_saturation must be true or false, got {relative!r}"
        )
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or threshold <= 0
        or (relative and threshold > 1)
    ):
        expected = "a fraction in (0, 1]" if relative else "a number of pixels > 0"
        raise LocoLayoutError(
            f"{where} ({name}): saturation_threshold must be {expected}, got {threshold!r}"
        )
    return DefectType(name, int(value), float(threshold), relative)


def read_defects_config(path: str | os.PathLike) -> dict[int, DefectType]:
    """The defect types of a ``defects_config.json``, keyed by pixel value.

    Raises:
        LocoLayoutError: the file is missing, not JSON, not a non-empty list of entries with the
            four keys, holds a bad value, or gives two entries the same pixel value.
    """
    path = Path(path)
    if not path.is_file():
        raise LocoLayoutError(
            f"{path} is missing: MVTec LOCO AD lists every defect type with its pixel value and "
            "saturation threshold there"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LocoLayoutError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, list) or not data:
        raise LocoLayoutError(
            f"{path}: expected a non-empty JSON list of defect entries, got "
            f"{type(data).__name__ if data else 'an empty value'}"
        )
    types: dict[int, DefectType] = {}
    for i, entry in enumerate(data):
        defect = _config_entry(entry, i, path)
        if defect.pixel_value in types:
            raise LocoLayoutError(
                f"{path}: entries {types[defect.pixel_value].defect_name!r} and "
                f"{defect.defect_name!r} share pixel_value {defect.pixel_value}"
            )
        types[defect.pixel_value] = defect
    return types


# ------------------------------------------------------------------------------------- regions
def _region_value(arr: np.ndarray, path: Path, types: dict[int, DefectType]) -> int | None:
    """The single non-zero value of a region PNG (None when all zero); raises for several values
    or one that ``defects_config.json`` does not list."""
    values = [int(v) for v in np.unique(arr) if v != 0]
    if not values:
        return None
    if len(values) > 1:
        raise _Corrupt(
            f"{path}: region holds {len(values)} pixel values {values[:8]}; one region PNG "
            "annotates one defect, with one non-zero value"
        )
    if values[0] not in types:
        known = ", ".join(f"{v} ({t.defect_name})" for v, t in sorted(types.items()))
        raise _Corrupt(
            f"{path}: pixel value {values[0]} is not in {CONFIG_FILE} (it lists {known})"
        )
    return values[0]


def _read_region(
    path: Path, size: tuple[int, int], image: Path, types: dict[int, DefectType]
) -> tuple[np.ndarray, int | None]:
    """(region array, its pixel value or None when empty); raises ``_Corrupt`` naming ``path``."""
    try:
        arr = _mask_array(path)
    except _PIL_ERRORS as e:
        raise _Corrupt(f"{path}: unreadable or corrupt region ({type(e).__name__}: {e})") from e
    if arr.shape != tuple(size):
        raise _Corrupt(
            f"{path}: region size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from its image "
            f"{image.name} size {size[1]}x{size[0]} (WxH)"
        )
    return arr, _region_value(arr, path, types)


# --------------------------------------------------------------------------------------- index
@dataclass(frozen=True)
class LocoCategoryIndex:
    """Validated content of one MVTec LOCO AD category (lists sorted naturally by file name).

    ``train`` / ``validation``: the ``train/good`` / ``validation/good`` samples; ``test``: every
    test sample sorted by (subset, name), ``defect`` = subset folder, ``ground_truth`` = its region
    PNGs; ``defects``: ``defects_config.json`` by pixel value; ``region_values``: the pixel value of
    every non-empty region PNG (empty ones are listed with ``None`` and yield no region).
    """

    root: Path
    category: str
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    defects: dict[int, DefectType] = field(repr=False)
    region_values: dict[Path, int | None] = field(repr=False, default_factory=dict)

    @property
    def directory(self) -> Path:
        """``<root>/<category>``."""
        return self.root / self.category

    @property
    def defect_types(self) -> list[str]:
        """The defect names of ``defects_config.json``, in its order."""
        return [t.defect_name for t in self.defects.values()]

    @property
    def subsets(self) -> list[str]:
        """Subset of every test sample, in ``test`` order (``good``, ``logical_anomalies`` or
        ``structural_anomalies``): the ``subsets`` argument of :func:`ust.eval.spro.evaluate_loco`."""
        return [s.defect for s in self.test]

    def counts(self) -> dict[str, int]:
        """Number of images per split: train, validation, test_good, test_logical,
        test_structural (thesis Table 6.1's columns)."""
        by = {name: sum(1 for s in self.test if s.defect == name) for name in (GOOD, *SUBSETS)}
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test_good": by[GOOD],
            "test_logical": by[LOGICAL],
            "test_structural": by[STRUCTURAL],
        }

    def train_validation(
        self, val_fraction: float = 0.1, seed: int = 0
    ) -> tuple[list[Sample], list[Sample]]:
        """(``train/good``, ``validation/good``) samples; ``val_fraction`` and ``seed`` are ignored
        (the dataset defines its validation set; the dataset contract, :mod:`ust.data.dataset`)."""
        return list(self.train), list(self.validation)

    def regions(self, sample: Sample) -> list[Region]:
        """The sample's annotated regions: one per non-empty region PNG, its whole mask (bool, the
        image's size), saturation (:meth:`DefectType.saturation`) and defect name."""
        regions = []
        for path in sample.ground_truth:
            arr, value = _read_region_checked(path, sample, self.defects)
            if value is None:
                continue
            mask = arr != 0
            defect = self.defects[value]
            regions.append(Region(mask, defect.saturation(int(mask.sum())), defect.defect_name))
        return regions

    def metrics(self, maps: Sequence[np.ndarray]) -> dict:
        """The MVTec LOCO AD metric suite of test maps (one per ``test`` sample, in order, at the
        original sizes): :func:`ust.eval.spro.evaluate_loco`'s structure (``localization.auc_spro``
        and ``classification.auc_roc`` per subset and their mean, FPR limits
        :data:`ust.eval.spro.LIMITS`) after ``au_spro`` (the mean AU-sPRO at FPR 0.05, the headline
        number) and ``integration_limit`` (0.05). :func:`ust.experiments.protocol.evaluate` calls
        this instead of its AU-PRO suite."""
        if len(maps) != len(self.test):
            raise ValueError(f"got {len(maps)} maps for {len(self.test)} test images")
        result = evaluate_loco(list(maps), [self.regions(s) for s in self.test], self.subsets)
        return {
            "au_spro": result["localization"]["auc_spro"]["mean"][str(HEADLINE_LIMIT)],
            "integration_limit": HEADLINE_LIMIT,
            **result,
        }


def _read_region_checked(
    path: Path, sample: Sample, types: dict[int, DefectType]
) -> tuple[np.ndarray, int | None]:
    try:
        return _read_region(path, sample.size, sample.path, types)
    except _Corrupt as e:
        raise LocoLayoutError(str(e)) from e


# ---------------------------------------------------------------------------------- validation
def is_loco_category(root: str | os.PathLike, category: str) -> bool:
    """Whether ``<root>/<category>`` looks like MVTec LOCO AD rather than MVTec AD: it holds
    ``defects_config.json``, a ``validation`` folder or a ``test/logical_anomalies`` /
    ``test/structural_anomalies`` folder."""
    cat = Path(root) / category
    return (
        (cat / CONFIG_FILE).is_file()
        or (cat / "validation").is_dir()
        or any((cat / "test" / name).is_dir() for name in SUBSETS)
    )


def _category_dir(root: Path, category: str, where: str) -> Path:
    if not root.is_dir():
        raise LocoLayoutError(f"{where}: dataset root folder {root} does not exist")
    cat_dir = root / category
    if not cat_dir.is_dir():
        present = available_categories(root)
        raise LocoLayoutError(
            f"{where}: folder {cat_dir} does not exist. Categories found in {root}: "
            f"{', '.join(present) if present else 'none'}"
        )
    return cat_dir


def _good_pngs(cat_dir: Path, split: str, where: str) -> list[Path]:
    folder = cat_dir / split / GOOD
    if not folder.is_dir():
        raise LocoLayoutError(f"{where}: missing folder {folder} (anomaly-free PNGs)")
    pngs, other = _pngs(folder)
    if not pngs:
        extra = f"; found {len(other)} non-PNG file(s), e.g. {other[0].name}" if other else ""
        raise LocoLayoutError(f"{where}: folder {folder} holds no *.png{extra}")
    return pngs


def _test_dirs(cat_dir: Path, where: str) -> list[Path]:
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise LocoLayoutError(f"{where}: missing test folder {test_dir}")
    allowed = (GOOD, *SUBSETS)
    found = _subdirs(test_dir)
    unknown = [d.name for d in found if d.name not in allowed]
    if unknown:
        raise LocoLayoutError(
            f"{where}: unexpected folder(s) {', '.join('test/' + n for n in unknown)}; MVTec LOCO "
            f"AD's test folder holds {', '.join(allowed)}"
        )
    missing = [str(test_dir / n) for n in allowed if not (test_dir / n).is_dir()]
    if missing:
        raise LocoLayoutError(
            f"{where}: missing test folder(s) {', '.join(missing)} (the evaluation needs good, "
            "logical and structural test images)"
        )
    return [test_dir / n for n in allowed]


@dataclass
class _Survey:
    decode_images: bool
    defects: dict[int, DefectType]
    problems: list[str] = field(default_factory=list)
    empty_regions: list[str] = field(default_factory=list)
    region_values: dict[Path, int | None] = field(default_factory=dict)

    def probe(self, path: Path) -> tuple[int, int] | None:
        try:
            return _probe_image(path, self.decode_images)
        except _Corrupt as e:
            self.problems.append(str(e))
            return None

    def good(self, paths: list[Path], split: str) -> list[Sample]:
        samples = []
        for p in paths:
            size = self.probe(p)
            if size is not None:
                samples.append(Sample(p, GOOD, size, split=split))
        return samples

    def test_folder(self, folder: Path, gt_root: Path) -> list[Sample]:
        images, other = _pngs(folder)
        if not images:
            extra = f"; found non-PNG file(s), e.g. {other[0].name}" if other else ""
            self.problems.append(f"{folder}: test folder contains no *.png images{extra}")
            return []
        samples = []
        for img in images:
            size = self.probe(img)
            if folder.name == GOOD:
                if size is not None:
                    samples.append(Sample(img, GOOD, size, split="test"))
                continue
            regions = self.regions(img, gt_root / folder.name / img.stem, size)
            if size is not None and regions is not None:
                samples.append(Sample(img, folder.name, size, tuple(regions), split="test"))
        return samples

    def regions(self, img: Path, gt_dir: Path, size: tuple[int, int] | None) -> list[Path] | None:
        """The region PNGs of one anomalous image, each checked; None after a problem."""
        if not gt_dir.is_dir():
            self.problems.append(
                f"{img}: missing ground-truth folder, expected {gt_dir} with one PNG per region"
            )
            return None
        pngs, _ = _pngs(gt_dir)
        if not pngs:
            self.problems.append(f"{gt_dir}: ground-truth folder of {img.name} holds no *.png")
            return None
        if size is None:
            return None
        ok = True
        for png in pngs:
            try:
                _, value = _read_region(png, size, img, self.defects)
            except _Corrupt as e:
                self.problems.append(str(e))
                ok = False
                continue
            self.region_values[png] = value
            if value is None:
                self.empty_regions.append(str(png))
        return pngs if ok else None

    def raise_problems(self, where: str, cat_dir: Path) -> None:
        if not self.problems:
            return
        shown = self.problems[:_MAX_LISTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        raise LocoLayoutError(
            f"{where} at {cat_dir}: {len(self.problems)} problem(s):\n  - "
            + "\n  - ".join(shown)
            + (f"\n  … and {more} more" if more else ""),
            self.problems,
        )


def validate_loco_category(
    root: str | os.PathLike, category: str, decode_images: bool = False
) -> LocoCategoryIndex:
    """Check the whole MVTec LOCO AD tree of one category and index it (before any training).

    Checks: the category folder, ``train/good`` and ``validation/good`` with PNGs, ``test`` with
    exactly ``good``, ``logical_anomalies`` and ``structural_anomalies`` (hidden entries ignored),
    a valid ``defects_config.json``, and for every anomalous test image a folder
    ``ground_truth/<subset>/<id>/`` holding at least one region PNG, each of the image's size with
    one non-zero pixel value listed in ``defects_config.json``; every image must open and verify in
    PIL (``decode_images=True`` decodes them fully). Per-file problems are collected and reported
    together. An all-zero region PNG only warns (it yields no region).

    Returns:
        :class:`LocoCategoryIndex` (the :class:`~ust.data.dataset.DatasetIndex` of the category).

    Raises:
        LocoLayoutError: with a message naming the category and the folder or file at fault.
    """
    root = Path(root)
    where = f"MVTec LOCO AD category '{category}'"
    cat_dir = _category_dir(root, category, where)
    train = _good_pngs(cat_dir, "train", where)
    validation = _good_pngs(cat_dir, "validation", where)
    test_dirs = _test_dirs(cat_dir, where)
    defects = read_defects_config(cat_dir / CONFIG_FILE)
    survey = _Survey(decode_images, defects)
    train_samples = survey.good(train, "train")
    val_samples = survey.good(validation, "validation")
    test: list[Sample] = []
    for folder in test_dirs:
        test += survey.test_folder(folder, cat_dir / "ground_truth")
    survey.raise_problems(where, cat_dir)
    if survey.empty_regions:
        warnings.warn(
            f"{where}: {len(survey.empty_regions)} region PNG(s) are all zero, e.g. "
            f"{survey.empty_regions[0]}; they annotate nothing and are skipped",
            stacklevel=2,
        )
    return LocoCategoryIndex(
        root=root,
        category=category,
        train=train_samples,
        validation=val_samples,
        test=test,
        defects=defects,
        region_values=survey.region_values,
    )
