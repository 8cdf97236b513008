"""An MVTec-layout data set built from real texture photographs (offline stand-in for MVTec AD).

``make_synthetic_mvtec`` writes one category per registered texture (:mod:`ust.data.textures`:
the grayscale 512×512 skimage photographs ``brick``, ``grass``, ``gravel`` and the colour
photographs ``moon`` (512²), ``rust`` and ``water`` (256²) of the Debian package
``colobot-common-textures``) in exactly the MVTec AD layout (docs/decisions.md#mvtec-layout), so
that the whole pipeline (validation, students, scoring, AU-PRO) runs offline:

- **train/good**: random crops from the **train half** of the source;
- **test/good** and **test/<defect>**: random crops from the other, **test half**, so no training
  pixel is ever seen at test time. Crops may overlap within a split, never across splits.
  512-px sources are split top (train) / bottom (test), as :data:`TRAIN_ROWS` / :data:`TEST_ROWS`;
  256-px sources left (train) / right (test) (:func:`ust.data.textures.split_regions`).
- **Native resolution**: ``crop_size`` defaults to ``image_size``, so images are cut without
  resampling (use 128 px, :data:`ust.data.textures.NATIVE_SIZES`, for the real-texture set; the
  smoke/default profiles use 32-64 px crops). ``crop_size > image_size`` downsamples; upsampling
  and crops larger than a split region (256 px for 512-px sources, 128 px for 256-px ones) raise
  ValueError.
- Augmentation (``augment=True``, both splits): random horizontal/vertical flips, an intensity gain
  in U(0.95, 1.05), and for the 256-px sources random 90° rotations (transposes), because a 128-px
  crop has only 129 positions in a 128×256 half.
- Defects (:data:`DEFECT_TYPES`; each with its mask, 0/255 uint8 PNG, same size as the image):

  - ``foreign``: a crop of *another* category's texture (its test half) pasted inside an
    irregular blob. Grayscale categories draw from the other skimage textures only (so they never
    need the Debian package), colour categories from every other category (grey replicated to RGB;
    :func:`ust.data.textures.to_channels` also converts a colour patch to luma for a grayscale
    target when :func:`apply_defect` is given one);
  - ``scratch``: a thin, slightly curved bright or dark line;
  - ``hole``: a dark elliptical blob (pixels darkened to 0.2·x + 8);
  - ``blur``: an irregular region replaced by a Gaussian-blurred version of the image;
  - ``stain``: a translucent colour tint (brown, rust, ochre, yellow or olive, :data:`STAIN_TINTS`)
    multiplied into an irregular blob with a mottled opacity in [0.7, 1]·U(0.5, 0.85), like a dried
    liquid; on grayscale images its luminance effect (the tint's BT.601 luma).

  The mask is exactly the region where the defect was composited: every changed pixel lies inside
  it, and at least half of its pixels changed (a defect is redrawn elsewhere until it is clearly
  visible: mean absolute change ≥ 10 grey levels, averaged over the colour channels for RGB; for
  ``blur`` ≥ the image's own fine detail clipped to [4, 10] (:func:`visibility_threshold`), since
  the low-contrast colour photographs have only 3-8 grey levels of detail for a blur to remove).
  Pixels inside the region may keep their value by coincidence, as in MVTec's region-level
  annotation policy (docs/decisions.md#synthetic-mvtec).

Grayscale categories are saved as 8-bit ``L`` PNGs (like MVTec's grid, screw and zipper; the loaders
replicate them to 3 channels), colour categories as ``RGB`` PNGs. Generation is deterministic: the
same arguments give byte-identical files (each category draws from
``default_rng([seed, crc32(category)])``). :func:`category_images` yields every image with its clean
crop, mask and :class:`~ust.data.textures.Crop` record (used by the tests to check masks and
disjoint regions). The teacher must never see these source images: exclude
:data:`SOURCE_IMAGES` (skimage names) and :data:`EVALUATION_TEXTURE_FILES` (colobot files) when
pretraining.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.morphology import disk

from ust.data.textures import (
    CATEGORIES,
    COLOUR_CATEGORIES,
    DEFAULT_TEXTURE_DIR,
    EVALUATION_TEXTURE_FILES,
    GRAYSCALE_CATEGORIES,
    LUMA,
    NATIVE_SIZES,
    TEXTURE_SOURCES,
    Crop,
    Texture,
    as_texture,
    cut,
    load_texture,
    to_channels,
)

__all__ = [
    "CATEGORIES",
    "COLOUR_CATEGORIES",
    "DEFAULT_TEXTURE_DIR",
    "DEFECT_TYPES",
    "EVALUATION_IMAGE_NAMES",
    "EVALUATION_TEXTURE_FILES",
    "GRAYSCALE_CATEGORIES",
    "NATIVE_SIZES",
    "SOURCE_IMAGES",
    "STAIN_TINTS",
    "SyntheticImage",
    "TEXTURE_SOURCES",
    "apply_defect",
    "category_images",
    "foreign_pool",
    "load_source",
    "make_synthetic_mvtec",
    "visibility_threshold",
]

# The skimage photographs (grayscale categories): excluded from teacher pretraining on skimage.data.
SOURCE_IMAGES: tuple[str, ...] = GRAYSCALE_CATEGORIES
EVALUATION_IMAGE_NAMES: tuple[str, ...] = GRAYSCALE_CATEGORIES
DEFECT_TYPES: tuple[str, ...] = ("blur", "foreign", "hole", "scratch", "stain")
SOURCE_SIDE = 512  # side of the skimage sources
TRAIN_ROWS: tuple[int, int] = (0, 256)  # top half of a 512-px source (rows, half-open)
TEST_ROWS: tuple[int, int] = (256, 512)  # bottom half
MIN_MEAN_CHANGE = 10.0  # grey levels, mean |defect - clean| inside the mask (channel mean for RGB)
MIN_CHANGED_FRACTION = 0.5  # of the mask's pixels
# A blur can only remove the detail an image has: its threshold is that detail (mean |x - G_σ0 x|
# over the image, σ0 = max(2, size/32)), clipped to [MIN_BLUR_CHANGE, MIN_MEAN_CHANGE].
MIN_BLUR_CHANGE = 4.0
# Stain colours (RGB, multiplied in): coffee brown, rust orange, ochre, yellow, olive.
STAIN_TINTS = np.array(
    [[150, 95, 45], [200, 110, 40], [190, 140, 60], [235, 205, 80], [150, 160, 70]],
    dtype=np.float64,
)
_MAX_TRIES = 50
_MAX_CLEAN_CROPS = 20


def load_source(name: str, texture_dir: str | os.PathLike | None = None) -> np.ndarray:
    """A category's source photograph as a read-only uint8 array: (512, 512) for the skimage
    textures, (H, W, 3) for the colour ones (read from ``texture_dir``)."""
    if name not in CATEGORIES:
        raise ValueError(f"unknown synthetic source texture {name!r}; choose from {CATEGORIES}")
    return load_texture(name, texture_dir).pixels


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _blob(
    rng: np.random.Generator, size: int, radius: float, aspect: float, wobble: float
) -> np.ndarray:
    """Irregular star-shaped blob (bool (size, size)): a rotated ellipse whose radius is modulated
    by low-frequency harmonics of relative amplitude ≤ ``wobble``; centred inside the image."""
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


def _stain(rng: np.random.Generator, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A translucent tint multiplied into an irregular blob (mottled opacity); luma for grey."""
    size = clean.shape[0]
    mask = _blob(rng, size, rng.uniform(0.1, 0.18) * size, rng.uniform(0.5, 1.0), 0.35)
    tint = STAIN_TINTS[int(rng.integers(len(STAIN_TINTS)))] / 255.0
    strength = rng.uniform(0.5, 0.85)
    mottle = ndimage.gaussian_filter(rng.random((size, size)), sigma=max(1.0, size / 32))
    mottle = (mottle - mottle.min()) / (np.ptp(mottle) + 1e-12)
    alpha = strength * (0.7 + 0.3 * mottle)
    if clean.ndim == 3:
        factor = 1.0 - alpha[..., None] * (1.0 - tint)
    else:
        factor = 1.0 - alpha * (1.0 - float(tint @ LUMA))
    return clean * factor, mask


def _defect_candidate(
    rng: np.random.Generator,
    kind: str,
    clean: np.ndarray,
    foreign_src: Texture | None,
    crop_size: int,
    augment: bool,
    attempt: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One attempt at a defect: (defect image float64 shaped like ``clean``, region mask bool
    (size, size)). The blur grows with ``attempt`` so that smooth crops still get a visible
    defect."""
    size = clean.shape[0]
    colour = clean.ndim == 3
    if kind == "foreign":
        assert foreign_src is not None
        mask = _blob(rng, size, rng.uniform(0.09, 0.16) * size, rng.uniform(0.6, 1.0), 0.25)
        patch, _ = cut(rng, foreign_src, "test", crop_size, size, augment)
        defect = to_channels(patch, colour)
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
        sigma = _blur_sigma(size) * (1 + attempt / 10)
        defect = ndimage.gaussian_filter(
            clean, sigma=(sigma, sigma, 0) if colour else sigma, mode="reflect"
        )
    elif kind == "stain":
        defect, mask = _stain(rng, clean)
    else:
        raise ValueError(f"unknown defect type {kind!r}; choose from {DEFECT_TYPES}")
    return defect, mask


def _change(out: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per-pixel absolute change (H, W), averaged over channels for RGB."""
    diff = np.abs(out.astype(np.int16) - clean.astype(np.int16))
    return diff.mean(axis=2) if diff.ndim == 3 else diff.astype(np.float64)


def _blur_sigma(size: int) -> float:
    return max(2.0, size / 32)


def visibility_threshold(kind: str, clean: np.ndarray) -> float:
    """Minimum mean absolute change inside the mask for a ``kind`` defect on uint8 ``clean``:
    :data:`MIN_MEAN_CHANGE`, or for ``blur`` the image's own fine detail clipped to
    [:data:`MIN_BLUR_CHANGE`, :data:`MIN_MEAN_CHANGE`] (a blur cannot change a smooth
    photograph by more than its detail; the low-contrast colour textures have 3-8 grey levels)."""
    if kind != "blur":
        return MIN_MEAN_CHANGE
    img = np.asarray(clean, dtype=np.uint8).astype(np.float64)
    sigma = _blur_sigma(img.shape[0])
    smooth = ndimage.gaussian_filter(
        img, sigma=(sigma, sigma, 0) if img.ndim == 3 else sigma, mode="reflect"
    )
    detail = float(_change(_to_uint8(smooth), img.astype(np.uint8)).mean())
    return min(MIN_MEAN_CHANGE, max(MIN_BLUR_CHANGE, detail))


def apply_defect(
    rng: np.random.Generator,
    kind: str,
    clean: np.ndarray,
    foreign_src: Texture | np.ndarray | None = None,
    crop_size: int | None = None,
    augment: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite one visible defect into a clean uint8 image (H, W) or (H, W, 3).

    Returns (image uint8 shaped like ``clean``, mask uint8 (H, W) in {0, 255}). Pixels outside the
    mask are unchanged; inside, ≥ 50 % changed with a mean absolute change (mean over channels for
    RGB) ≥ :func:`visibility_threshold` (10 grey levels; for blur possibly 4-10), else redrawn. ``foreign_src`` is required for ``kind="foreign"``: a
    :class:`~ust.data.textures.Texture` (its test half is cropped) or a bare uint8 array (its bottom
    half is cropped); its channels are converted to those of ``clean``.
    """
    clean_u8 = np.asarray(clean, dtype=np.uint8)
    if clean_u8.ndim not in (2, 3) or (clean_u8.ndim == 3 and clean_u8.shape[2] != 3):
        raise ValueError(f"clean must be (H, W) or (H, W, 3), got shape {clean_u8.shape}")
    clean_f = clean_u8.astype(np.float64)
    crop_size = crop_size or clean_u8.shape[0]
    foreign = None if foreign_src is None else as_texture(foreign_src, "foreign")
    threshold = visibility_threshold(kind, clean_u8)
    best: float | None = None
    for attempt in range(_MAX_TRIES):
        defect, region = _defect_candidate(rng, kind, clean_f, foreign, crop_size, augment, attempt)
        where = region[..., None] if clean_u8.ndim == 3 else region
        out = np.where(where, _to_uint8(defect), clean_u8)
        diff = _change(out, clean_u8)[region]
        score = float(diff.mean())
        if score >= threshold and float((diff > 0).mean()) >= MIN_CHANGED_FRACTION:
            return out, region.astype(np.uint8) * 255
        best = score if best is None else max(best, score)
    raise RuntimeError(
        f"could not draw a visible {kind!r} defect in {_MAX_TRIES} tries (best mean change "
        f"{best or 0:.1f} grey levels, needed {threshold:.1f})"
    )


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True, eq=False)
class SyntheticImage:
    """One generated image. ``clean`` is the defect-free crop (the image itself for good ones);
    ``crop`` says where in the source it was cut (:class:`~ust.data.textures.Crop`)."""

    path: str  # relative posix path, e.g. "test/stain/003.png"
    split: str  # "train" or "test"
    defect: str  # "good" or a defect type
    image: np.ndarray  # uint8 (H, W) or (H, W, 3)
    clean: np.ndarray
    crop: Crop
    mask: np.ndarray | None = None  # uint8 (H, W) in {0, 255} for defects
    mask_path: str | None = None


def foreign_pool(category: str, crop_size: int, texture_dir=None) -> list[str]:
    """Categories whose textures ``foreign`` defects of ``category`` are cut from: the other
    skimage textures for a grayscale category, every other category (whose test half holds a
    ``crop_size`` crop) for a colour one."""
    if category in GRAYSCALE_CATEGORIES:
        return [c for c in GRAYSCALE_CATEGORIES if c != category]
    return [
        c
        for c in CATEGORIES
        if c != category and crop_size <= load_texture(c, texture_dir).max_crop()
    ]


def _textures(
    category: str, crop_size: int, defect_types: Sequence[str], texture_dir
) -> tuple[Texture, dict[str, Texture]]:
    """The category's texture (crop size checked) and the foreign pool's textures, loaded."""
    src = load_texture(category, texture_dir)
    src.check_crop(crop_size)
    pool = foreign_pool(category, crop_size, texture_dir) if "foreign" in defect_types else []
    if "foreign" in defect_types and not pool:
        raise ValueError(f"no other texture holds a {crop_size}-px crop for {category!r} foreign")
    return src, {c: load_texture(c, texture_dir) for c in pool}


def category_images(
    category: str,
    image_size: int = 128,
    n_train: int = 20,
    n_test_good: int = 5,
    n_test_defect_per_type: int = 4,
    seed: int = 0,
    *,
    crop_size: int | None = None,
    defect_types: Sequence[str] = DEFECT_TYPES,
    augment: bool = True,
    texture_dir: str | os.PathLike | None = None,
) -> Iterator[SyntheticImage]:
    """Every image of one category, in file order (train, test/good, then each defect type), as
    :class:`SyntheticImage` records; :func:`make_synthetic_mvtec` writes exactly these."""
    crop_size = image_size if crop_size is None else int(crop_size)
    _check_settings(
        [category], image_size, crop_size, (n_train, n_test_good, n_test_defect_per_type),
        defect_types,
    )  # fmt: skip
    src, pool = _textures(category, crop_size, defect_types, texture_dir)
    others = list(pool)
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])

    def crop(split: str) -> tuple[np.ndarray, Crop]:
        img, where = cut(rng, src, split, crop_size, image_size, augment)
        return _to_uint8(img), where

    for i in range(n_train):
        img, where = crop("train")
        yield SyntheticImage(f"train/good/{i:03d}.png", "train", "good", img, img, where)
    for i in range(n_test_good):
        img, where = crop("test")
        yield SyntheticImage(f"test/good/{i:03d}.png", "test", "good", img, img, where)
    for kind in defect_types:
        for i in range(n_test_defect_per_type):
            for retry in range(_MAX_CLEAN_CROPS):  # a very smooth crop may not show the defect
                clean, where = crop("test")
                foreign = pool[str(rng.choice(others))] if kind == "foreign" else None
                try:
                    img, mask = apply_defect(rng, kind, clean, foreign, crop_size, augment)
                    break
                except RuntimeError:
                    if retry == _MAX_CLEAN_CROPS - 1:
                        raise
            yield SyntheticImage(
                f"test/{kind}/{i:03d}.png", "test", kind, img, clean, where, mask,
                f"ground_truth/{kind}/{i:03d}_mask.png",
            )  # fmt: skip


def _category_files(category: str, **kwargs) -> dict[str, bytes]:
    """All files of one category as {relative posix path: PNG bytes}."""
    files: dict[str, bytes] = {}
    for item in category_images(category, **kwargs):
        files[item.path] = _png_bytes(item.image)
        if item.mask is not None and item.mask_path is not None:
            files[item.mask_path] = _png_bytes(item.mask)
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
    """Raise ValueError for settings :func:`make_synthetic_mvtec` cannot honour (the crop's fit in
    each source is checked when the source is loaded)."""
    if crop_size < 8:
        raise ValueError(f"crop_size must be ≥ 8, got {crop_size}")
    if image_size < 16:
        raise ValueError(f"image_size must be ≥ 16, got {image_size}")
    if image_size > crop_size:
        raise ValueError(
            f"image_size {image_size} > crop_size {crop_size} would upsample; images are cut at "
            "native resolution (crop_size == image_size, the default) or downsampled, never "
            "upsampled"
        )
    n_train, n_test_good, n_test_defect_per_type = counts
    if n_train < 2 or n_test_good < 1 or n_test_defect_per_type < 1:
        raise ValueError("need n_train ≥ 2, n_test_good ≥ 1 and n_test_defect_per_type ≥ 1")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"categories must be among {CATEGORIES}, got {list(categories)}")
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
    texture_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Write an MVTec-layout tree ``<root>/<category>/...`` from real textures (see module doc).

    Args:
        root: output folder (created); other content of ``root`` is left alone.
        categories: among :data:`CATEGORIES` (``brick``, ``grass``, ``gravel`` from skimage;
            ``moon``, ``rust``, ``water`` from ``texture_dir``), one folder each.
        image_size: side of the square images in pixels (≥ 16; 128 for the native-resolution set).
        n_train, n_test_good, n_test_defect_per_type: images per split (train ≥ 2, others ≥ 1).
        seed: random seed; each category draws from ``default_rng([seed, crc32(name)])``.
        crop_size: side of the source crop (default ``image_size``: native resolution),
            downsampled to ``image_size`` when larger (bilinear, antialiased). At most the split
            region's side: 256 for the 512-px sources, 128 for ``rust`` and ``water``.
        defect_types: subset of :data:`DEFECT_TYPES`.
        augment: random flips, an intensity gain U(0.95, 1.05) and, for ``rust``/``water``, random
            transposes.
        overwrite: replace an existing category folder whose content differs.
        texture_dir: folder holding the colour categories' files (default
            :data:`DEFAULT_TEXTURE_DIR`, from ``apt-get install colobot-common-textures``).

    Returns:
        The category names written (or found identical), in the given order.

    Raises:
        ValueError: bad settings, upsampling, or a crop larger than a source's split region.
        FileNotFoundError: ``texture_dir`` or a colour texture file is missing (checked for every
            category before anything is written).
        FileExistsError: a non-empty ``<root>/<category>`` differs from what would be written and
            ``overwrite`` is False. An identical existing tree is left untouched.

    Each category folder is written to a temporary sibling and renamed into place, so an interrupted
    run leaves no half-written category. 6 categories × 110 images of 128 px take a few seconds.
    """
    crop_size = image_size if crop_size is None else int(crop_size)
    counts = (n_train, n_test_good, n_test_defect_per_type)
    _check_settings(categories, image_size, crop_size, counts, defect_types)
    for category in categories:  # fail on missing files / oversized crops before writing
        _textures(category, crop_size, defect_types, texture_dir)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in categories:
        files = _category_files(
            category,
            image_size=image_size,
            n_train=n_train,
            n_test_good=n_test_good,
            n_test_defect_per_type=n_test_defect_per_type,
            seed=seed,
            crop_size=crop_size,
            defect_types=list(defect_types),
            augment=augment,
            texture_dir=texture_dir,
        )
        target = root / category
        if _up_to_date(target, files, overwrite, f"seed={seed}, image_size={image_size}"):
            continue
        _replace_folder(target, files)
    return list(categories)
