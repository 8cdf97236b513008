"""Patch triplets (anchor, positive, negative) for teacher pretraining
(docs/decisions.md#triplet-augmentation).

Sources
-------
* any folder of images (an ImageNet ``ImageFolder`` tree or a flat folder, searched recursively; a
  relative path is taken from the repository root, :func:`ust.paths.resolve`). The paper's teachers
  see ImageNet: the ``paper`` profile reads ``data/imagenet/train``. A folder that is missing or
  holds no images raises an error; there is never a fallback to the bundled photographs. The
  offline profiles read ``data/photo_pool`` (:mod:`ust.data.photo_pool`: the bundled training
  photographs plus the photographs of two Debian wallpaper packages);
* ``"embedded"``: the natural photographs bundled with scikit-image and scikit-learn
  (:data:`EMBEDDED_IMAGES`). The skimage textures brick/grass/gravel build the evaluation anomaly set
  (:mod:`ust.data.synthetic`) and are never used here (:data:`EXCLUDED_SKIMAGE_IMAGES`).

Splits: ``"train"`` and ``"heldout"`` are disjoint sets of *images*, so triplet accuracy measured on
``"heldout"`` is on images the teacher never saw. The embedded held-out images are
:data:`HELDOUT_IMAGES`; for a folder, ``heldout_fraction`` of the sorted files (at least 2), evenly
spread over the sorted list (so an ImageFolder tree loses a few images of many classes, not one
class). ``"all"`` uses every image.

Augmentation (defaults: docs/decisions.md#triplet-augmentation): per sample, the anchor's image is
zoomed to s×s with s uniform over every integer in {4p, 4p + 1, …, 16p} (:func:`draw_zoom`; aspect
not preserved) and a p×p crop is taken at a uniform location. The positive is the crop translated uniformly per axis in ±(p−1)//4 (clamped to
the zoomed image), multiplied by U(0.8, 1.2) (clamped to [0, 1]) plus N(0, 0.1²) noise (clamped).
The negative is a uniform crop of a different, uniformly chosen image with its own zoom. With
probability 0.1 the whole triplet is converted to grayscale (one decision per triplet, done last so
all three patches have 3 equal channels). Patches are float (3, p, p) in [0, 1], *not*
ImageNet-normalised.

Triplet ``i`` depends only on ``(seed, i)``: a DataLoader with any number of workers, any batch
split, or a resumed run yields the same triplets.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ust.paths import resolve

# The skimage textures the evaluation anomaly set is built from; must equal
# ust.data.synthetic.EVALUATION_IMAGE_NAMES (checked by tests/test_patches.py).
EXCLUDED_SKIMAGE_IMAGES = ("brick", "grass", "gravel")

# Real photographs bundled with scikit-image 0.26 (no download needed). ``cat`` is an alias of
# ``chelsea``; horse (a binary silhouette), the lfw faces (25×25) and microaneurysms (102×102) are
# left out as they are not natural photographs of useful size.
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "motorcycle_left",
    "motorcycle_right",
    "page",
    "retina",
    "rocket",
    "text",
)
SKLEARN_PHOTOS = ("china", "flower")  # sklearn.datasets.load_sample_images()
EMBEDDED_IMAGES = SKIMAGE_PHOTOS + SKLEARN_PHOTOS
# Never trained on: one colour outdoor scene, one grayscale object photo, one colour close-up.
HELDOUT_IMAGES = ("coins", "flower", "rocket")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "heldout", "all")
# Folders with more images than this are read from disk on demand instead of cached in memory.
AUTO_CACHE_MAX_IMAGES = 2000
# What to put in an image folder, for the error messages of the sampler and of the preflight check.
IMAGENET_HINT = (
    "put the ImageNet training images there (the ILSVRC2012 train set as an ImageFolder tree, e.g. "
    "<folder>/n01440764/n01440764_10026.JPEG, or all files in one flat folder; a symbolic link to "
    "an existing copy works)"
)
IMAGE_FOLDER_HINT = (
    f"{IMAGENET_HINT} or any other folder of photographs; 'embedded' selects the bundled "
    "scikit-image/scikit-learn photographs instead, which are not the paper's data"
)


def _to_chw_uint8(array: np.ndarray) -> torch.Tensor:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, bool or float in [0, 1]) → (3, H, W) uint8."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.max() <= 1.0:
            a = np.round(a * 255)
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected a grayscale, RGB or RGBA image, got an array of shape {a.shape}"
        )
    a = a[:, :, :3]
    t = torch.from_numpy(np.array(a, copy=True)).permute(
        2, 0, 1
    )  # copy: skimage arrays are read-only
    return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t.contiguous()


@functools.cache
def _embedded_image(name: str) -> torch.Tensor:
    import skimage.data

    if name in EXCLUDED_SKIMAGE_IMAGES:
        raise ValueError(
            f"{name!r} builds the evaluation set and must never be used for pretraining"
        )
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return _to_chw_uint8(load_sample_image(f"{name}.jpg"))
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return _to_chw_uint8(left if name == "motorcycle_left" else right)
    if name not in SKIMAGE_PHOTOS:
        raise ValueError(f"unknown embedded image {name!r}: expected one of {EMBEDDED_IMAGES}")
    return _to_chw_uint8(getattr(skimage.data, name)())


def _image_folder(folder: str | os.PathLike) -> Path:
    """``folder`` resolved (relative: from the repository root); FileNotFoundError if not a folder."""
    root = resolve(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist: {IMAGE_FOLDER_HINT}")
    return root


def _walk_images(root: Path):
    """Image files under ``root`` in walk order (lazy), by extension, case-insensitive."""
    for dirpath, _, names in os.walk(root, followlinks=True):
        for f in names:
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                yield Path(dirpath) / f


def find_image_files(folder: str | os.PathLike) -> list[Path]:
    """All image files under ``folder`` (recursive, sorted), by extension, case-insensitive.

    A relative ``folder`` is taken from the repository root. Raises FileNotFoundError (with what
    to put there) when it is not a folder.
    """
    return sorted(_walk_images(_image_folder(folder)))


def count_image_files(folder: str | os.PathLike, at_least: int) -> int:
    """Number of image files under ``folder``, counting stops at ``at_least`` (cheap on ImageNet's
    1.28 M files). Raises like :func:`find_image_files` for a missing folder."""
    n = 0
    for _ in _walk_images(_image_folder(folder)):
        n += 1
        if n >= at_least:
            break
    return n


def _heldout_indices(n: int, fraction: float) -> list[int]:
    n_heldout = max(2, round(fraction * n))
    return sorted({int((j + 0.5) * n / n_heldout) for j in range(n_heldout)})


class ImageSource:
    """An indexed set of source images, each returned as a (3, H, W) uint8 tensor.

    Use :meth:`embedded` or :meth:`folder`. Images are cached in memory as uint8 (4× smaller than
    float) when ``cache`` is true; otherwise each access decodes the file again.
    """

    def __init__(self, names: Sequence[str], loader, *, cache: bool = True, origin: str = ""):
        self.names = list(names)
        self._loader = loader
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.origin = origin

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._cache is None:
            return self._loader(self.names[i])
        if i not in self._cache:
            self._cache[i] = self._loader(self.names[i])
        return self._cache[i]

    def load_all(self) -> ImageSource:
        """Fill the cache now (before DataLoader workers fork, so they share it)."""
        if self._cache is not None:
            for i in range(len(self)):
                self[i]
        return self

    @classmethod
    def embedded(cls, split: str = "train") -> ImageSource:
        """The bundled photographs (:data:`EMBEDDED_IMAGES`) of ``split``."""
        _check_split(split)
        if split == "all":
            names = list(EMBEDDED_IMAGES)
        elif split == "heldout":
            names = list(HELDOUT_IMAGES)
        else:
            names = [n for n in EMBEDDED_IMAGES if n not in HELDOUT_IMAGES]
        return cls(names, _embedded_image, origin="embedded").load_all()

    @classmethod
    def folder(
        cls,
        folder: str | os.PathLike,
        split: str = "train",
        *,
        heldout_fraction: float = 0.1,
        cache: bool | None = None,
    ) -> ImageSource:
        """Images under ``folder`` (recursive). ``cache=None`` caches up to 2000 images."""
        _check_split(split)
        files = find_image_files(folder)
        if len(files) < 2:
            raise ValueError(
                f"found {len(files)} image(s) under {str(resolve(folder))!r}; at least 2 are needed "
                f"(a negative comes from a different image). Extensions searched: "
                f"{', '.join(IMAGE_EXTENSIONS)}; {IMAGE_FOLDER_HINT}"
            )
        if split != "all":
            if not 0.0 < heldout_fraction < 1.0:
                raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
            held = set(_heldout_indices(len(files), heldout_fraction))
            if len(files) - len(held) < 2:
                raise ValueError(
                    f"found {len(files)} images under {str(folder)!r}: too few to hold out "
                    f"{len(held)} and train on at least 2; add images or use split='all'"
                )
            files = [f for i, f in enumerate(files) if (i in held) == (split == "heldout")]
        if cache is None:
            cache = len(files) <= AUTO_CACHE_MAX_IMAGES
        return cls([str(f) for f in files], _read_image_file, cache=cache, origin=str(folder))


def _read_image_file(path: str) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            return _to_chw_uint8(np.asarray(im))
    except OSError as e:
        raise ValueError(f"cannot read image {path!r}: {e}") from e


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def image_source(
    images: str | os.PathLike | ImageSource,
    split: str = "train",
    *,
    heldout_fraction: float = 0.1,
    cache: bool | None = None,
) -> ImageSource:
    """``"embedded"``, a folder path (relative: from the repository root), or an
    :class:`ImageSource` (returned as is). A missing or empty folder raises; nothing falls back to
    the embedded photographs."""
    if isinstance(images, ImageSource):
        return images
    if str(images) == "embedded":
        return ImageSource.embedded(split)
    return ImageSource.folder(images, split, heldout_fraction=heldout_fraction, cache=cache)


def _aa_weights(in_size: int, out_size: int, start: int, count: int):
    """Rows ``start … start+count−1`` of the (out_size, in_size) antialiased bilinear resize matrix.

    Same triangle filter as ``F.interpolate(mode="bilinear", antialias=True)`` (PIL's algorithm):
    output i is centred at (i + 0.5)·in/out with support max(in/out, 1). Returns ``(w, lo, hi)``
    with ``w`` (count, hi − lo) float32 acting on input indices lo … hi − 1.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    i = torch.arange(start, start + count, dtype=torch.float64)
    center = (i + 0.5) * scale
    lo = max(int(math.floor(center[0].item() - support + 0.5)), 0)
    hi = min(int(center[-1].item() + support + 0.5), in_size)
    j = torch.arange(lo, hi, dtype=torch.float64)
    w = torch.clamp(1.0 - ((j[None, :] - center[:, None] + 0.5) / support).abs(), min=0.0)
    return (w / w.sum(dim=1, keepdim=True)).float(), lo, hi


def zoomed_crop(image: torch.Tensor, size: int, top: int, left: int, p: int) -> torch.Tensor:
    """Crop [top:top+p, left:left+p] of ``image`` (3, H, W) resized to size×size, as float [0, 1].

    Equal (to float rounding) to ``F.interpolate(image, (size, size), mode="bilinear",
    antialias=True)[..., top:top+p, left:left+p]`` but only the needed source region is touched,
    so a sample costs O(p · H/size) instead of a whole-image resize. uint8 input is scaled by 1/255.
    """
    _, h, w = image.shape
    if not (0 <= top <= size - p and 0 <= left <= size - p):
        raise ValueError(f"crop ({top}, {left}) of size {p} is outside the {size}×{size} image")
    wy, y0, y1 = _aa_weights(h, size, top, p)
    wx, x0, x1 = _aa_weights(w, size, left, p)
    region = image[:, y0:y1, x0:x1].float()
    if image.dtype == torch.uint8:
        region = region / 255.0
    out = torch.matmul(torch.matmul(wy, region), wx.T)  # (3, p, w') then (3, p, p)
    return out.clamp_(0.0, 1.0)


def draw_zoom(rng: np.random.Generator, p: int, zoom: tuple[int, int]) -> int:
    """Side s (pixels) an image is zoomed to: uniform over *every* integer in
    {zoom[0]·p, zoom[0]·p + 1, …, zoom[1]·p} ({4p, …, 16p} by default: 12p + 1 sizes, not only the
    multiples of p; docs/decisions.md#triplet-augmentation)."""
    return int(rng.integers(zoom[0] * p, zoom[1] * p + 1))


def rgb_to_gray3(x: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) → ITU-R 601 luma replicated to 3 channels (same shape)."""
    r, g, b = x.unbind(dim=-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y.unsqueeze(-3).expand_as(x).contiguous()


class PatchTriplets(Dataset):
    """Map-style dataset of ``length`` triplets; item ``i`` is ``(anchor, positive, negative)``.

    Each is a float (3, p, p) tensor in [0, 1]. With ``return_meta=True`` a 4th element is a dict
    of the sampled values (image indices, zooms, crop corners, requested shift, luminance factor,
    grayscale flag). Arguments are the augmentation parameters above; ``zoom = (lo, hi)`` bounds the
    zoomed side s ∈ {lo·p, …, hi·p} (every integer, :func:`draw_zoom`); ``max_shift=None`` means
    (p−1)//4. ``images`` is ``"embedded"``, a folder, or an :class:`ImageSource`.
    """

    def __init__(
        self,
        images: str | os.PathLike | ImageSource,
        p: int,
        length: int,
        *,
        split: str = "train",
        seed: int = 0,
        zoom: tuple[int, int] = (4, 16),
        max_shift: int | None = None,
        luminance: tuple[float, float] = (0.8, 1.2),
        noise_std: float = 0.1,
        grayscale_prob: float = 0.1,
        heldout_fraction: float = 0.1,
        return_meta: bool = False,
    ):
        if p < 1 or length < 0 or seed < 0:
            raise ValueError(f"need p >= 1, length >= 0, seed >= 0; got {p}, {length}, {seed}")
        if not 1 <= zoom[0] <= zoom[1]:
            raise ValueError(
                f"zoom must be (min, max) multiples of p with 1 <= min <= max, got {zoom}"
            )
        if not 0 < luminance[0] <= luminance[1]:
            raise ValueError(f"luminance must be (low, high) with 0 < low <= high, got {luminance}")
        if noise_std < 0 or not 0 <= grayscale_prob <= 1:
            raise ValueError(
                f"need noise_std >= 0 and grayscale_prob in [0, 1], got {noise_std}, {grayscale_prob}"
            )
        self.source = image_source(images, split, heldout_fraction=heldout_fraction)
        if len(self.source) < 2:
            raise ValueError(
                f"the {split!r} split of {self.source.origin!r} has {len(self.source)} image(s); "
                "at least 2 are needed (negatives come from a different image)"
            )
        self.p, self.length, self.seed = p, length, seed
        self.zoom = (int(zoom[0]), int(zoom[1]))
        self.max_shift = (p - 1) // 4 if max_shift is None else int(max_shift)
        self.luminance = (float(luminance[0]), float(luminance[1]))
        self.noise_std = float(noise_std)
        self.grayscale_prob = float(grayscale_prob)
        self.return_meta = return_meta

    def __len__(self) -> int:
        return self.length

    def sample_params(self, index: int) -> dict:
        """The random decisions of triplet ``index`` (the ``meta`` dict) without building patches."""
        return self._draw(index)[1]

    def _draw(self, index: int) -> tuple[np.random.Generator, dict]:
        if not 0 <= index < self.length:
            raise IndexError(f"triplet index {index} out of range [0, {self.length})")
        # Seeding from (seed, index) makes every triplet independent of order, workers and resume.
        rng = np.random.default_rng([self.seed, int(index)])
        p, n = self.p, len(self.source)
        i_a = int(rng.integers(n))
        i_n = int(rng.integers(n - 1))
        i_n += i_n >= i_a  # uniform over the other images
        s_a = draw_zoom(rng, p, self.zoom)
        s_n = draw_zoom(rng, p, self.zoom)
        ya, xa = (int(v) for v in rng.integers(0, s_a - p + 1, size=2))
        dy, dx = (int(v) for v in rng.integers(-self.max_shift, self.max_shift + 1, size=2))
        yn, xn = (int(v) for v in rng.integers(0, s_n - p + 1, size=2))
        meta = {
            "anchor_image": i_a,
            "negative_image": i_n,
            "anchor_zoom": s_a,
            "negative_zoom": s_n,
            "anchor_yx": (ya, xa),
            "positive_yx": (min(max(ya + dy, 0), s_a - p), min(max(xa + dx, 0), s_a - p)),
            "negative_yx": (yn, xn),
            "shift": (dy, dx),
            "luminance": float(rng.uniform(*self.luminance)),
            "grayscale": bool(rng.random() < self.grayscale_prob),
        }
        return rng, meta  # the noise is drawn last from ``rng``, when the patches are built

    def __getitem__(self, index: int):
        rng, meta = self._draw(index)
        p = self.p
        noise = torch.from_numpy(rng.standard_normal((3, p, p), dtype=np.float32))
        img_a = self.source[meta["anchor_image"]]
        anchor = zoomed_crop(img_a, meta["anchor_zoom"], *meta["anchor_yx"], p)
        positive = zoomed_crop(img_a, meta["anchor_zoom"], *meta["positive_yx"], p)
        positive = (positive * meta["luminance"]).clamp_(0.0, 1.0)
        positive = (positive + self.noise_std * noise).clamp_(0.0, 1.0)
        img_n = self.source[meta["negative_image"]]
        negative = zoomed_crop(img_n, meta["negative_zoom"], *meta["negative_yx"], p)
        if meta["grayscale"]:
            anchor, positive, negative = (rgb_to_gray3(x) for x in (anchor, positive, negative))
        if self.return_meta:
            return anchor, positive, negative, meta
        return anchor, positive, negative

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack items ``indices`` into three (len(indices), 3, p, p) tensors (meta dropped)."""
        items = [self[int(i)][:3] for i in indices]
        return tuple(torch.stack(x) for x in zip(*items, strict=True))  # type: ignore[return-value]
