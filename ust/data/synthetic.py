"""A small MVTec-layout data set built from the real textures bundled with scikit-image.

``make_synthetic_mvtec`` writes, for each texture in ``skimage.data`` (``brick``, ``grass``,
``gravel``; grayscale 512×512 photographs), a category folder in exactly the MVTec AD layout
(docs/decisions.md#mvtec-layout) so that the whole pipeline (validation, students, scoring, AU-PRO)
runs offline:

- **train/good**: random crops from the **top half** of the source (rows 0-255).
- **test/good** and **test/<defect>**: random crops from the **bottom half** (rows 256-511), so no
  training pixel is ever seen at test time. Crops may overlap within a split, never across splits.
- Augmentation (``augment=True``, both splits): random horizontal/vertical flips and an intensity
  gain in U(0.95, 1.05).
- Defects (each with its mask, 0/255 uint8 PNG, same size as the image):

  - ``foreign``: a crop of *another* source texture pasted inside an irregular blob;
  - ``scratch``: a thin, slightly curved bright or dark line;
  - ``hole``: a dark elliptical blob (pixels darkened to 0.2·x + 8);
  - ``blur``: an irregular region replaced by a Gaussian-blurred version of the image.

  The mask is exactly the region where the defect was composited: every changed pixel lies inside
  it, and at least half of its pixels changed (a defect is redrawn elsewhere until it is clearly
  visible: mean absolute change ≥ 10 grey levels). Pixels inside the region may keep their value by
  coincidence, as in MVTec's region-level annotation policy
  (docs/decisions.md#synthetic-mvtec).

Images are saved as 8-bit grayscale PNGs (like MVTec's grid, screw and zipper); the loaders
replicate them to 3 channels. Generation is deterministic: the same arguments give byte-identical
files. The teacher must never see these source images: exclude :data:`SOURCE_IMAGES` when
pretraining on ``skimage.data`` photographs.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.morphology import disk
from skimage.transform import resize as sk_resize

SOURCE_IMAGES: tuple[str, ...] = ("brick", "grass", "gravel")
EVALUATION_IMAGE_NAMES: tuple[str, ...] = ("brick", "grass", "gravel")
DEFECT_TYPES: tuple[str, ...] = ("blur", "foreign", "hole", "scratch")
SOURCE_SIDE = 512
TRAIN_ROWS: tuple[int, int] = (0, 256)  # top half of the source texture (rows, half-open)
TEST_ROWS: tuple[int, int] = (256, 512)  # bottom half
MIN_MEAN_CHANGE = 10.0  # grey levels, mean |defect - clean| inside the mask
MIN_CHANGED_FRACTION = 0.5  # of the mask's pixels
_MAX_TRIES = 50
_MAX_CLEAN_CROPS = 20


def load_source(name: str) -> np.ndarray:
    """A source texture from ``skimage.data`` as a uint8 array (512, 512)."""
    if name not in SOURCE_IMAGES:
        raise ValueError(f"unknown synthetic source texture {name!r}; choose from {SOURCE_IMAGES}")
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim != 2 or img.shape != (SOURCE_SIDE, SOURCE_SIDE) or img.dtype != np.uint8:
        raise RuntimeError(f"skimage.data.{name}() is not a 512x512 uint8 grayscale image")
    return img


def _crop(
    rng: np.random.Generator,
    src: np.ndarray,
    rows: tuple[int, int],
    crop_size: int,
    image_size: int,
    augment: bool,
) -> np.ndarray:
    """Random crop (float64, grey levels) fully inside ``rows``, resized to ``image_size``."""
    r0 = int(rng.integers(rows[0], rows[1] - crop_size + 1))
    c0 = int(rng.integers(0, src.shape[1] - crop_size + 1))
    img = src[r0 : r0 + crop_size, c0 : c0 + crop_size].astype(np.float64)
    if crop_size != image_size:
        img = sk_resize(
            img, (image_size, image_size), order=1, anti_aliasing=True, preserve_range=True
        )
    if augment:
        flip_h, flip_v = rng.random(2) < 0.5
        gain = rng.uniform(0.95, 1.05)
        if flip_h:
            img = img[:, ::-1]
        if flip_v:
            img = img[::-1, :]
        img = img * gain
    return np.ascontiguousarray(img)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _blob(
    rng: np.random.Generator, size: int, radius: float, aspect: float, wobble: float
) -> np.ndarray:
    """Irregular star-shaped blob (bool (size, size)): a rotated ellipse whose radius is modulated
    by low-frequency harmonics of relative amplitude ≤ ``wobble``; fully inside the image."""
    margin = radius + 2
    cy, cx = rng.uniform(margin, size - margin, size=2)
    theta = rng.uniform(0, np.pi)
    amps = rng.uniform(0, wobble, size=3) / np.array([1.0, 1.5, 2.0])
    phases = rng.uniform(0, 2 * np.pi, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / aspect
    ang = np.arctan2(v, u)
    rho = np.hypot(u, v)
    r = radius * (1 + sum(a * np.cos(k * ang + p) for a, k, p in zip(amps, (2, 3, 4), phases)))
    mask = rho <= r
    mask[int(round(cy)), int(round(cx))] = True  # never empty
    return mask


def _scratch_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Thin, slightly curved line (quadratic Bézier), 2·hw+1 px wide (hw = max(1, size/128))."""
    length = rng.uniform(0.35, 0.7) * size
    angle = rng.uniform(0, np.pi)
    margin = 4
    half = np.array([np.sin(angle), np.cos(angle)]) * length / 2
    lo = np.abs(half) + margin
    centre = rng.uniform(lo, size - lo)
    p0, p2 = centre - half, centre + half
    normal = np.array([-half[1], half[0]]) / (np.linalg.norm(half) + 1e-9)
    p1 = centre + normal * rng.uniform(-0.15, 0.15) * length
    t = np.linspace(0, 1, max(8, int(length)))[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    pts = np.clip(np.rint(pts).astype(int), 0, size - 1)
    mask = np.zeros((size, size), dtype=bool)
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
        rr, cc = draw_line(r0, c0, r1, c1)
        mask[rr, cc] = True
    hw = max(1, int(round(size / 128)))
    return ndimage.binary_dilation(mask, structure=disk(hw))


def _defect_candidate(
    rng: np.random.Generator,
    kind: str,
    clean: np.ndarray,
    foreign_src: np.ndarray | None,
    crop_size: int,
    augment: bool,
    attempt: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One attempt at a defect: (defect image float64, region mask bool), both (size, size).
    The blur grows with ``attempt`` so that smooth crops still get a visible defect."""
    size = clean.shape[0]
    if kind == "foreign":
        assert foreign_src is not None
        mask = _blob(rng, size, rng.uniform(0.09, 0.16) * size, rng.uniform(0.6, 1.0), 0.25)
        patch = _crop(rng, foreign_src, TEST_ROWS, crop_size, size, augment)
        defect = patch
    elif kind == "scratch":
        mask = _scratch_mask(rng, size)
        bright = rng.random() < 0.5
        level = rng.uniform(225, 245) if bright else rng.uniform(10, 30)
        defect = level + rng.normal(0, 3, size=clean.shape)
    elif kind == "hole":
        mask = _blob(rng, size, rng.uniform(0.05, 0.1) * size, rng.uniform(0.5, 0.9), 0.05)
        defect = 0.2 * clean + 8.0
    elif kind == "blur":
        mask = _blob(rng, size, rng.uniform(0.1, 0.18) * size, rng.uniform(0.6, 1.0), 0.2)
        sigma = max(2.0, size / 32) * (1 + attempt / 10)
        defect = ndimage.gaussian_filter(clean, sigma=sigma, mode="reflect")
    else:
        raise ValueError(f"unknown defect type {kind!r}; choose from {DEFECT_TYPES}")
    return defect, mask


def apply_defect(
    rng: np.random.Generator,
    kind: str,
    clean: np.ndarray,
    foreign_src: np.ndarray | None = None,
    crop_size: int | None = None,
    augment: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite one visible defect into a clean uint8 image (H, W).

    Returns (image uint8 (H, W), mask uint8 (H, W) in {0, 255}). Pixels outside the mask are
    unchanged; inside, ≥ 50 % changed with a mean absolute change ≥ 10 grey levels (else redrawn).
    ``foreign_src`` (uint8 512×512 source texture) is required for ``kind="foreign"``.
    """
    clean_u8 = np.asarray(clean, dtype=np.uint8)
    clean_f = clean_u8.astype(np.float64)
    crop_size = crop_size or clean_u8.shape[0]
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for attempt in range(_MAX_TRIES):
        defect, region = _defect_candidate(
            rng, kind, clean_f, foreign_src, crop_size, augment, attempt
        )
        out = np.where(region, _to_uint8(defect), clean_u8)
        diff = np.abs(out.astype(np.int16) - clean_u8.astype(np.int16))[region]
        score = float(diff.mean())
        if score >= MIN_MEAN_CHANGE and float((diff > 0).mean()) >= MIN_CHANGED_FRACTION:
            return out, region.astype(np.uint8) * 255
        if best is None or score > best[0]:
            best = (score, out, region)
    raise RuntimeError(
        f"could not draw a visible {kind!r} defect in {_MAX_TRIES} tries (best mean change "
        f"{best[0] if best else 0:.1f} grey levels)"
    )


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _category_files(
    category: str,
    image_size: int,
    crop_size: int,
    n_train: int,
    n_test_good: int,
    n_test_defect_per_type: int,
    defect_types: Sequence[str],
    seed: int,
    augment: bool,
) -> dict[str, bytes]:
    """All files of one category as {relative posix path: PNG bytes}."""
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    src = load_source(category)
    others = [n for n in SOURCE_IMAGES if n != category]
    files: dict[str, bytes] = {}

    def crop(rows: tuple[int, int]) -> np.ndarray:
        return _to_uint8(_crop(rng, src, rows, crop_size, image_size, augment))

    for i in range(n_train):
        files[f"train/good/{i:03d}.png"] = _png_bytes(crop(TRAIN_ROWS))
    for i in range(n_test_good):
        files[f"test/good/{i:03d}.png"] = _png_bytes(crop(TEST_ROWS))
    for kind in defect_types:
        for i in range(n_test_defect_per_type):
            for retry in range(_MAX_CLEAN_CROPS):  # a very smooth crop may not show the defect
                clean = crop(TEST_ROWS)
                foreign = load_source(str(rng.choice(others))) if kind == "foreign" else None
                try:
                    img, mask = apply_defect(rng, kind, clean, foreign, crop_size, augment)
                    break
                except RuntimeError:
                    if retry == _MAX_CLEAN_CROPS - 1:
                        raise
            files[f"test/{kind}/{i:03d}.png"] = _png_bytes(img)
            files[f"ground_truth/{kind}/{i:03d}_mask.png"] = _png_bytes(mask)
    return files


def _read_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _check_settings(
    categories: Sequence[str],
    image_size: int,
    crop_size: int,
    counts: tuple[int, int, int],
    defect_types: Sequence[str],
) -> None:
    """Raise ValueError for settings :func:`make_synthetic_mvtec` cannot honour."""
    half = TRAIN_ROWS[1] - TRAIN_ROWS[0]
    if not 8 <= crop_size <= half:
        raise ValueError(f"crop_size must be in [8, {half}] (half the source), got {crop_size}")
    if image_size < 16:
        raise ValueError(f"image_size must be ≥ 16, got {image_size}")
    n_train, n_test_good, n_test_defect_per_type = counts
    if n_train < 2 or n_test_good < 1 or n_test_defect_per_type < 1:
        raise ValueError("need n_train ≥ 2, n_test_good ≥ 1 and n_test_defect_per_type ≥ 1")
    unknown = [c for c in categories if c not in SOURCE_IMAGES]
    if unknown or not categories:
        raise ValueError(f"categories must be among {SOURCE_IMAGES}, got {list(categories)}")
    bad = [d for d in defect_types if d not in DEFECT_TYPES]
    if bad or not defect_types or len(set(defect_types)) != len(defect_types):
        raise ValueError(f"defect_types must be distinct names among {DEFECT_TYPES}, got {bad}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"duplicate categories: {list(categories)}")


def _up_to_date(target: Path, files: dict[str, bytes], overwrite: bool, settings: str) -> bool:
    """True when ``target`` already holds exactly ``files``; raises FileExistsError when it holds
    something else that may not be replaced (``settings`` names the run in the message)."""
    if not target.exists():
        return False
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    existing = _read_tree(target)
    if existing == files:
        return True
    if (existing or any(target.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{target} is not empty and differs from the synthetic category that would be "
            f"written ({settings}); pass overwrite=True to "
            "replace it or choose another root"
        )
    return False


def _replace_folder(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` to a temporary sibling of ``target`` and rename it into place, so an
    interrupted run leaves no half-written folder (an old ``target`` is removed afterwards)."""
    root, name = target.parent, target.name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp-"))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if target.exists():
            trash = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.old-"))
            os.replace(target, trash / name)
            os.replace(tmp, target)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_synthetic_mvtec(
    root: str | os.PathLike,
    categories: Sequence[str] = ("brick", "grass", "gravel"),
    image_size: int = 128,
    n_train: int = 20,
    n_test_good: int = 5,
    n_test_defect_per_type: int = 4,
    seed: int = 0,
    *,
    crop_size: int | None = None,
    defect_types: Sequence[str] = DEFECT_TYPES,
    augment: bool = True,
    overwrite: bool = False,
) -> list[str]:
    """Write an MVTec-layout tree ``<root>/<category>/...`` from skimage textures (see module doc).

    Args:
        root: output folder (created); other content of ``root`` is left alone.
        categories: source textures among :data:`SOURCE_IMAGES`, one category each.
        image_size: side of the square images in pixels.
        n_train, n_test_good, n_test_defect_per_type: images per split (train ≥ 2, others ≥ 1).
        seed: random seed; each category draws from ``default_rng([seed, crc32(name)])``.
        crop_size: side of the source crop (≤ 256, default ``image_size``), resized to
            ``image_size`` when different (bilinear, antialiased).
        defect_types: subset of :data:`DEFECT_TYPES`.
        augment: random flips and an intensity gain U(0.95, 1.05).
        overwrite: replace an existing category folder whose content differs.

    Returns:
        The category names written (or found identical), in the given order.

    Raises:
        FileExistsError: a non-empty ``<root>/<category>`` differs from what would be written and
            ``overwrite`` is False. An identical existing tree is left untouched.

    Each category folder is written to a temporary sibling and renamed into place, so an interrupted
    run leaves no half-written category. 3 categories at the defaults take well under a second.
    """
    crop_size = image_size if crop_size is None else int(crop_size)
    _check_settings(
        categories,
        image_size,
        crop_size,
        (n_train, n_test_good, n_test_defect_per_type),
        defect_types,
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in categories:
        files = _category_files(
            category,
            image_size,
            crop_size,
            n_train,
            n_test_good,
            n_test_defect_per_type,
            list(defect_types),
            seed,
            augment,
        )
        target = root / category
        if _up_to_date(target, files, overwrite, f"seed={seed}, image_size={image_size}"):
            continue
        _replace_folder(target, files)
    return list(categories)
