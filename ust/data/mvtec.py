"""MVTec AD on-disk layout: validation, train/validation split, loaders and anomaly-map files.

Layout (docs/decisions.md#mvtec-layout; any category name works, not only the 15 official ones)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png                   (no masks: all-zero ground truth)
    <root>/<category>/test/<defect>/<id>.png
    <root>/<category>/ground_truth/<defect>/<id>_mask.png   (single channel, 0/255, image size)

:func:`validate_category` checks the whole tree (folders, masks, sizes, decodability) before any
training starts and raises :class:`MVTecLayoutError` naming the offending folder or file. Images are
zoomed to 256×256 (bilinear, antialiased, docs/decisions.md#image-resizing) for the networks;
ground-truth masks stay at their original resolution, and maps are upsampled to the ground truth for
evaluation (docs/decisions.md#evaluation-resolution).
Anomaly maps are written as float32 TIFF in the layout the official MVTec evaluation script reads:
``<out>/<category>/test/<defect>/<id>.tiff``.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ust.data.dataset import GOOD, Region, Sample, load_image  # noqa: F401  (part of this API)
from ust.io import atomic_write  # noqa: F401  (re-exported: part of this module's API)

TEXTURES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
CATEGORIES: tuple[str, ...] = tuple(sorted(TEXTURES + OBJECTS))
IMAGE_SUFFIX = ".png"
MASK_SUFFIX = "_mask.png"

# Errors PIL raises on unreadable, truncated or corrupt files.
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, TypeError)
_MAX_LISTED_PROBLEMS = 20


class MVTecLayoutError(ValueError):
    """The folder tree does not follow the MVTec AD layout; ``problems`` lists every issue found."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


#: an MVTec AD test image (the dataset contract's :class:`ust.data.dataset.Sample`)
TestSample = Sample


@dataclass(frozen=True)
class CategoryIndex:
    """Validated content of one category (all lists sorted, naturally by file name).

    ``train``: paths of ``train/good`` images; ``test``: :class:`TestSample` sorted by (defect, name);
    ``sizes``: original (H, W) in pixels of every train and test image, keyed by path.
    """

    root: Path
    category: str
    train: list[Path]
    test: list[TestSample]
    sizes: dict[Path, tuple[int, int]] = field(repr=False)

    @property
    def directory(self) -> Path:
        """``<root>/<category>``."""
        return self.root / self.category

    @property
    def defect_types(self) -> list[str]:
        """Sorted defect folder names under ``test`` (``good`` excluded)."""
        return sorted({s.defect for s in self.test if s.defect != GOOD})

    def counts(self) -> dict[str, int]:
        """Number of images per split: ``train``, ``test_good``, ``test_defective``."""
        n_good = sum(1 for s in self.test if s.defect == GOOD)
        return {
            "train": len(self.train),
            "test_good": n_good,
            "test_defective": len(self.test) - n_good,
        }

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Path], list[Path]]:
        """Seeded (train, validation) split of ``train/good``; see :func:`split_train_val`."""
        return split_train_val(self.train, val_fraction=val_fraction, seed=seed)

    def train_validation(
        self, val_fraction: float = 0.1, seed: int = 0
    ) -> tuple[list[Sample], list[Sample]]:
        """:meth:`split` as :class:`Sample` lists (the dataset contract, :mod:`ust.data.dataset`)."""
        return tuple(  # type: ignore[return-value]
            [Sample(q, GOOD, self.sizes[q], split="train") for q in part]
            for part in self.split(val_fraction, seed)
        )

    def regions(self, sample: Sample) -> list[Region]:
        """The ground truth of ``sample``: one region per defect image, its whole mask (MVTec AD
        annotates one mask per image; AU-PRO splits it into connected components itself)."""
        if sample.mask_path is None:
            return []
        mask = load_mask(sample.mask_path, sample.size).numpy()
        return [Region(mask, float(mask.sum()), sample.defect)] if mask.any() else []


# --------------------------------------------------------------------------------------- helpers
def _natural_key(name: str) -> list[Any]:
    """Sort key ordering "2.png" before "10.png"; items alternate str/int, so lists compare."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)]


def _sorted_paths(paths: Sequence[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: _natural_key(p.name))


def _visible(entries: Sequence[Path]) -> list[Path]:
    """Drop hidden entries (``.DS_Store``, macOS ``._000.png`` forks, editor temp files)."""
    return [p for p in entries if not p.name.startswith(".")]


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in _visible(list(folder.iterdir())) if p.is_dir()), key=lambda p: p.name)


def _pngs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(PNG files, other files) directly in ``folder``; masks excluded from neither."""
    files = [p for p in _visible(list(folder.iterdir())) if p.is_file()]
    pngs = [p for p in files if p.suffix.lower() == IMAGE_SUFFIX]
    others = [p for p in files if p.suffix.lower() != IMAGE_SUFFIX]
    return _sorted_paths(pngs), sorted(others)


def available_categories(root: str | os.PathLike) -> list[str]:
    """Names of the (non-hidden) sub-folders of ``root``, i.e. the categories present there."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p.name for p in _subdirs(root)]


def _probe_image(path: Path, decode: bool) -> tuple[int, int]:
    """Original (H, W) of an image; raises ``_Corrupt`` if PIL cannot identify/verify/decode it.

    ``Image.verify`` walks every PNG chunk and checks its CRC without decompressing the pixels;
    ``decode=True`` additionally decodes the whole image (slower, catches corrupt zlib streams).
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
        if decode:
            with Image.open(path) as im:
                im.load()
    except _PIL_ERRORS as e:
        raise _Corrupt(f"{path}: unreadable or corrupt image ({type(e).__name__}: {e})") from e
    return int(h), int(w)


class _Corrupt(Exception):
    pass


def _mask_array(path: Path) -> np.ndarray:
    """Decode a mask file to a 2-D array (alpha dropped; identical colour channels merged)."""
    with Image.open(path) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("RGBA", "LA", "PA"):
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
        arr = np.asarray(im)
    if arr.ndim == 3:
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[2])):
            raise ValueError(f"mask has {arr.shape[2]} different colour channels, expected 1")
        arr = arr[..., 0]
    return arr.astype(np.uint8) if arr.dtype == bool else arr


def _check_mask(mask: Path, image: Path, image_size: tuple[int, int]) -> tuple[str | None, bool]:
    """(problem or None, mask_is_empty) for one mask file."""
    try:
        with Image.open(mask) as im:
            w, h = im.size
        if (h, w) != image_size:
            return (
                f"{mask}: mask size {w}x{h} (WxH) differs from its image {image.name} "
                f"size {image_size[1]}x{image_size[0]} (WxH)",
                False,
            )
        arr = _mask_array(mask)
    except _PIL_ERRORS as e:
        return f"{mask}: unreadable or corrupt mask ({type(e).__name__}: {e})", False
    values = {int(v) for v in np.unique(arr)}
    if not (values <= {0, 255} or values <= {0, 1}):
        shown = sorted(values)[:8]
        return (
            f"{mask}: mask is not binary: values {shown}{' …' if len(values) > 8 else ''}; "
            "expected only {0, 255} (or {0, 1})",
            False,
        )
    return None, values <= {0}


# ------------------------------------------------------------------------------------ validation
def _category_folder(root: Path, category: str, where: str) -> Path:
    """``<root>/<category>``; raises when it (or ``root``) is missing, listing what is there."""
    cat_dir = root / category
    if not root.is_dir():
        raise MVTecLayoutError(f"{where}: dataset root folder {root} does not exist")
    if not cat_dir.is_dir():
        present = available_categories(root)
        hint = ""
        if root.name == category and (root / "train").is_dir():
            hint = f" (it looks like {root} is the category folder itself; pass its parent as root)"
        raise MVTecLayoutError(
            f"{where}: folder {cat_dir} does not exist{hint}. Categories found in {root}: "
            f"{', '.join(present) if present else 'none'}"
        )
    return cat_dir


def _train_pngs(cat_dir: Path, where: str) -> list[Path]:
    """The PNGs of ``train/good``; raises when the folder is missing or holds none."""
    train_dir = cat_dir / "train" / GOOD
    if not train_dir.is_dir():
        raise MVTecLayoutError(
            f"{where}: missing training folder {train_dir} (expected anomaly-free PNGs there)"
        )
    train, other = _pngs(train_dir)
    if not train:
        extra = f"; found {len(other)} non-PNG file(s), e.g. {other[0].name}" if other else ""
        raise MVTecLayoutError(f"{where}: training folder {train_dir} is empty (no *.png){extra}")
    return train


def _test_folders(cat_dir: Path, where: str) -> tuple[list[Path], Path]:
    """(sub-folders of ``test``, ``ground_truth`` folder); raises when a defect has no masks folder."""
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise MVTecLayoutError(
            f"{where}: missing test folder {test_dir} (expected test/good and test/<defect>)"
        )
    test_folders = _subdirs(test_dir)
    if not test_folders:
        raise MVTecLayoutError(f"{where}: test folder {test_dir} has no sub-folders")
    gt_dir = cat_dir / "ground_truth"
    missing_gt = [d.name for d in test_folders if d.name != GOOD and not (gt_dir / d.name).is_dir()]
    if missing_gt:
        raise MVTecLayoutError(
            f"{where}: defect folder(s) {', '.join('test/' + n for n in missing_gt)} have no "
            f"matching ground-truth folder: expected "
            f"{', '.join(str(gt_dir / n) for n in missing_gt)}"
        )
    return test_folders, gt_dir


@dataclass
class _Survey:
    """What the file checks found: per-file ``problems``, image ``sizes``, the valid ``test``
    samples and the defect masks that are all zero (``empty_masks``)."""

    decode_images: bool
    problems: list[str] = field(default_factory=list)
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)
    test: list[TestSample] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)

    def probe(self, path: Path) -> tuple[int, int] | None:
        """(H, W) of a readable image (recorded in ``sizes``), else ``None`` and a problem."""
        try:
            size = _probe_image(path, self.decode_images)
        except _Corrupt as e:
            self.problems.append(str(e))
            return None
        self.sizes[path] = size
        return size

    def test_folder(self, folder: Path, gt_dir: Path) -> None:
        """Check ``test/<folder>``: its images and, for a defect, each image's mask."""
        images, other = _pngs(folder)
        if not images:
            extra = f"; found non-PNG file(s), e.g. {other[0].name}" if other else ""
            self.problems.append(f"{folder}: test folder contains no *.png images{extra}")
            return
        for img in images:
            size = self.probe(img)
            if folder.name == GOOD:
                if size is not None:
                    self.test.append(Sample(img, GOOD, size))
                continue
            mask = gt_dir / folder.name / f"{img.stem}{MASK_SUFFIX}"
            if not mask.is_file():
                self.problems.append(_missing_mask(img, mask, images))
            elif size is not None:
                self.defect_image(img, folder.name, mask, size)

    def defect_image(self, img: Path, defect: str, mask: Path, size: tuple[int, int]) -> None:
        """Check the mask of a readable defect image and index the image when the mask is valid."""
        problem, empty = _check_mask(mask, img, size)
        if problem:
            self.problems.append(problem)
            return
        if empty:
            self.empty_masks.append(str(mask))
        self.test.append(Sample(img, defect, size, (mask,)))

    def raise_problems(self, where: str, cat_dir: Path) -> None:
        if not self.problems:
            return
        shown = self.problems[:_MAX_LISTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        raise MVTecLayoutError(
            f"{where} at {cat_dir}: {len(self.problems)} problem(s):\n  - "
            + "\n  - ".join(shown)
            + (f"\n  … and {more} more" if more else ""),
            self.problems,
        )


def _missing_mask(img: Path, mask: Path, images: list[Path]) -> str:
    """The problem of a defect image without mask, naming near misses (e.g. ``000.png``)."""
    taken = {f"{q.stem}{MASK_SUFFIX}" for q in images}  # other images' masks
    near = sorted(
        q.name
        for q in mask.parent.glob(glob.escape(img.stem) + "*")
        if q.is_file() and q.name not in taken
    )
    return f"{img}: missing ground-truth mask, expected {mask}" + (
        f" (found {', '.join(near[:3])} instead)" if near else ""
    )


def validate_category(
    root: str | os.PathLike, category: str, decode_images: bool = False
) -> CategoryIndex:
    """Check the whole MVTec tree of one category and index it (raises before any training).

    Checks: the category folder exists (else lists the categories found), ``train/good`` exists and
    holds PNGs, ``test`` exists with at least one non-empty sub-folder, each defect folder has a
    ``ground_truth/<defect>`` folder and each of its images a ``<id>_mask.png`` of the same size with
    values in {0, 255} or {0, 1}, and every image/mask file can be opened and verified by PIL
    (``decode_images=True`` fully decodes images too). Per-file problems are collected and reported
    together. A defect image whose mask is all zero only triggers a warning.

    Args:
        root: folder holding the category folders (e.g. ``/data/mvtec_anomaly_detection``).
        category: category folder name (any name; the 15 of :data:`CATEGORIES` are the official).
        decode_images: fully decode every image instead of only verifying its chunks.

    Returns:
        :class:`CategoryIndex` with sorted train paths, test samples and (H, W) sizes in pixels.

    Raises:
        MVTecLayoutError: with a message naming the category and the folder or file at fault.
    """
    root = Path(root)
    where = f"MVTec category '{category}'"
    cat_dir = _category_folder(root, category, where)
    train = _train_pngs(cat_dir, where)
    test_folders, gt_dir = _test_folders(cat_dir, where)

    survey = _Survey(decode_images)
    for p in train:
        survey.probe(p)
    for folder in test_folders:
        survey.test_folder(folder, gt_dir)
    survey.raise_problems(where, cat_dir)
    if survey.empty_masks:
        warnings.warn(
            f"{where}: {len(survey.empty_masks)} defect image(s) have an all-zero mask, e.g. "
            f"{survey.empty_masks[0]}; they count as anomalous images without anomalous pixels",
            stacklevel=2,
        )
    test = sorted(survey.test, key=lambda s: (s.defect, _natural_key(s.path.name)))
    return CategoryIndex(root=root, category=category, train=train, test=test, sizes=survey.sizes)


# --------------------------------------------------------------------------------------- splits
def split_train_val(
    paths: Sequence[Any], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """Seeded random (train, validation) split of anomaly-free training images
    (docs/decisions.md#validation-split).

    The validation size is ``max(1, round(val_fraction * n))`` (at most ``n - 1``). The split only
    depends on the set of paths and the seed (input order is irrelevant); both outputs are sorted,
    disjoint, and their union is the input.

    Args:
        paths: n ≥ 2 distinct paths (or any items with a stable ``str``).
        val_fraction: fraction of images used for validation, in (0, 1).
        seed: random seed.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    items = sorted(paths, key=lambda p: _natural_key(str(p)))
    n = len(items)
    if len({str(p) for p in items}) != n:
        raise ValueError("split_train_val: the input contains duplicate paths")
    if n < 2:
        raise ValueError(
            f"split_train_val needs at least 2 images (1 for validation, 1 for training), got {n}"
        )
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [p for i, p in enumerate(items) if i not in val_idx]
    val = [p for i, p in enumerate(items) if i in val_idx]
    return train, val


# -------------------------------------------------------------------------------------- loaders
def load_mask(path: str | os.PathLike | None, shape: tuple[int, int]) -> torch.Tensor:
    """Ground-truth mask as a bool tensor (H, W) at the original resolution, binarised with > 0.

    ``path=None`` (a ``test/good`` image) gives an all-False mask of ``shape`` = (H, W).

    Raises:
        MVTecLayoutError: if the mask's size differs from ``shape``.
    """
    h, w = int(shape[0]), int(shape[1])
    if path is None:
        return torch.zeros((h, w), dtype=torch.bool)
    arr = _mask_array(Path(path))
    if arr.shape != (h, w):
        raise MVTecLayoutError(
            f"{path}: mask size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from the expected "
            f"image size {w}x{h} (WxH)"
        )
    return torch.from_numpy(np.ascontiguousarray(arr > 0))


class MVTecImages(Dataset):
    """Anomaly-free images for student training / statistics: items ``(image, index)``.

    ``image`` is a float tensor (3, size, size) in [0, 1] (zoomed to ``size``, 256 in the paper);
    ``index`` the position in ``paths``. ``cache=True`` keeps the zoomed tensors in memory (per
    process; 3·size²·4 bytes each, 0.79 MB at 256).
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], size: int = 256, cache: bool = False
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.cache = cache
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.cache and i in self._cache:
            return self._cache[i], i
        img = load_image(self.paths[i], self.size)
        if self.cache:
            self._cache[i] = img
        return img, i


class MVTecTest(Dataset):
    """Test split of a validated category; items are dicts with

    - ``image``: float (3, size, size) in [0, 1], zoomed (bilinear, antialiased);
    - ``mask``: bool (H, W) ground truth at the ORIGINAL resolution (all False for ``good``);
    - ``defect``: defect type (``"good"`` for anomaly-free); ``label``: 0 good / 1 anomalous;
    - ``image_id``: e.g. ``"broken_large/000"``; ``path``: image file as str;
    - ``orig_size``: long tensor (2,) = (H, W); ``index``: position in the index.

    Original sizes differ between categories (700-1024 px), so batch masks with batch_size=1 or a
    custom ``collate_fn``.
    """

    def __init__(self, index: CategoryIndex, size: int = 256) -> None:
        self.index = index
        self.samples = list(index.test)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        return {
            "image": load_image(s.path, self.size),
            "mask": load_mask(s.mask_path, s.size),
            "defect": s.defect,
            "label": int(s.is_anomalous),
            "image_id": s.image_id,
            "path": str(s.path),
            "orig_size": torch.tensor(s.size, dtype=torch.long),
            "index": i,
        }


# ---------------------------------------------------------------------------------- anomaly maps
def anomaly_map_path(out_dir: str | os.PathLike, category: str, defect: str, image_id: str) -> Path:
    """``<out_dir>/<category>/test/<defect>/<id>.tiff`` (the official MVTec evaluation layout).

    ``image_id`` is the file stem (``"000"``); ``"<defect>/000"`` (a :attr:`TestSample.image_id`)
    and ``"000.png"`` are accepted too.
    """
    stem = str(image_id)
    if "/" in stem:
        prefix, stem = stem.rsplit("/", 1)
        if prefix != defect:
            raise ValueError(f"image_id {image_id!r} does not belong to defect {defect!r}")
    stem = Path(stem).stem if stem.lower().endswith(IMAGE_SUFFIX) else stem
    if not stem:
        raise ValueError(f"empty image id: {image_id!r}")
    return Path(out_dir) / category / "test" / defect / f"{stem}.tiff"


def save_anomaly_map(path: str | os.PathLike, array: np.ndarray | torch.Tensor) -> Path:
    """Write a 2-D anomaly map (H, W) as a float32 TIFF, atomically (no half-written file)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"anomaly map must be 2-D (H, W), got shape {arr.shape}")
    return atomic_write(path, lambda fh: tifffile.imwrite(fh, np.ascontiguousarray(arr)))


def load_anomaly_map(path: str | os.PathLike) -> np.ndarray:
    """Read an anomaly map TIFF as a float32 array (H, W)."""
    return np.asarray(tifffile.imread(path), dtype=np.float32)
