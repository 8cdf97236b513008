"""Real texture photographs for the synthetic MVTec-layout set (:mod:`ust.data.synthetic`).

Registry (:data:`TEXTURE_SOURCES`, category → source):

======== =========================================== ======== ========= ============ =======
category source                                      size     channels  split        rot90
======== =========================================== ======== ========= ============ =======
brick    ``skimage.data.brick()``                    512×512  grayscale top/bottom   no
grass    ``skimage.data.grass()``                    512×512  grayscale top/bottom   no
gravel   ``skimage.data.gravel()``                   512×512  grayscale top/bottom   no
moon     ``moon103.png`` (bluish grey regolith)      512×512  RGB       top/bottom   no
rust     ``dirty08.png`` (rust-flecked beige metal)  256×256  RGB       left/right   yes
water    ``water12.png`` (teal water, caustics)      256×256  RGB       left/right   yes
======== =========================================== ======== ========= ============ =======

The colour files come from the Debian package ``colobot-common-textures``
(:data:`DEFAULT_TEXTURE_DIR`; ``apt-get install colobot-common-textures``). Only whole
photographs are used: the package's 512-px atlases of 128-px tiles (visible seams, e.g.
``desert4``, ``green01``, ``chili01``, ``mix01``, ``roca2``) are not. ``terra002`` (blue cracked
ground) is left out because its large cracks look like defects.

Split rule (train and test regions are disjoint halves of the source, so no training pixel is ever
seen at test time):

- ``split_axis=0`` (512-px sources): **train = top half** (rows ``[0, H/2)``), **test = bottom
  half** (rows ``[H/2, H)``); a 128-px crop has 129 × 385 positions per split.
- ``split_axis=1`` (256-px sources): **train = left half**, **test = right half** (both measured
  closer in colour statistics than top/bottom for ``dirty08`` and ``water12``). A 128-px crop has
  only 129 positions per split (the half is exactly 128 px wide), so these sources also get random
  90° rotations (``rot90``: a transpose combined with the flips gives all 8 dihedral
  orientations, ≈ 1000 distinct crops per split). A 60/40 split cannot hold a 128-px test crop in
  256 px, hence halves.

Crops are taken at native resolution (``crop_size == image_size`` gives no resampling); a smaller
``image_size`` downsamples (bilinear, antialiased); upsampling and crops larger than a split region
raise ValueError.

The teacher must never pretrain on these photographs: the skimage names are
``ust.data.synthetic.SOURCE_IMAGES`` (excluded by :mod:`ust.data.patches`), the colobot files are
:data:`EVALUATION_TEXTURE_FILES` (never point a pretraining folder at :data:`DEFAULT_TEXTURE_DIR`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import skimage.data
from PIL import Image
from skimage.transform import resize as sk_resize

DEFAULT_TEXTURE_DIR = Path("/usr/share/games/colobot/textures")
TEXTURE_PACKAGE = "colobot-common-textures"
SPLITS: tuple[str, ...] = ("train", "test")
# ITU-R BT.601 luma weights, as PIL's convert("L").
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class TextureSource:
    """Where one category's photograph comes from and how it is split (see module doc)."""

    category: str
    origin: str  # "skimage" (file = function name in skimage.data) or "colobot" (file name)
    file: str
    description: str
    split_axis: int = 0  # 0: train top / test bottom half; 1: train left / test right half
    rot90: bool = False  # random transposes as augmentation (with the flips: 8 orientations)

    @property
    def label(self) -> str:
        return f"skimage.data.{self.file}()" if self.origin == "skimage" else self.file


TEXTURE_SOURCES: dict[str, TextureSource] = {
    s.category: s
    for s in (
        TextureSource("brick", "skimage", "brick", "grayscale brick wall"),
        TextureSource("grass", "skimage", "grass", "grayscale grass"),
        TextureSource("gravel", "skimage", "gravel", "grayscale gravel"),
        TextureSource("moon", "colobot", "moon103.png", "bluish grey lunar regolith"),
        TextureSource("rust", "colobot", "dirty08.png", "rust-flecked beige metal", 1, True),
        TextureSource("water", "colobot", "water12.png", "teal water with caustics", 1, True),
    )
}
CATEGORIES: tuple[str, ...] = tuple(TEXTURE_SOURCES)
GRAYSCALE_CATEGORIES: tuple[str, ...] = tuple(
    c for c, s in TEXTURE_SOURCES.items() if s.origin == "skimage"
)
COLOUR_CATEGORIES: tuple[str, ...] = tuple(
    c for c, s in TEXTURE_SOURCES.items() if s.origin == "colobot"
)
# Never pretrain a teacher on these files (evaluation data), nor on the skimage SOURCE_IMAGES.
EVALUATION_TEXTURE_FILES: tuple[str, ...] = tuple(
    sorted(TEXTURE_SOURCES[c].file for c in COLOUR_CATEGORIES)
)
# Per-category sizes for the native-resolution set (128 px crops, no resampling).
NATIVE_SIZES = {"image_size": 128, "n_train": 60, "n_test_good": 20, "n_test_defect_per_type": 6}


class Region(NamedTuple):
    """Half-open pixel rectangle ``[top, bottom) × [left, right)`` of a source."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def contains(self, top: int, left: int, size: int) -> bool:
        """Whether the ``size``² square at (top, left) lies inside the region."""
        return (
            self.top <= top
            and top + size <= self.bottom
            and self.left <= left
            and left + size <= self.right
        )


class Crop(NamedTuple):
    """How one image was cut: source square (top, left, size), then flips, transpose and gain."""

    top: int
    left: int
    size: int
    flip_h: bool = False
    flip_v: bool = False
    transpose: bool = False
    gain: float = 1.0


def split_regions(shape: tuple[int, ...], split_axis: int = 0) -> dict[str, Region]:
    """{"train": Region, "test": Region}: the two disjoint halves of an (H, W[, C]) source."""
    h, w = int(shape[0]), int(shape[1])
    if split_axis == 0:
        return {"train": Region(0, h // 2, 0, w), "test": Region(h // 2, h, 0, w)}
    if split_axis == 1:
        return {"train": Region(0, h, 0, w // 2), "test": Region(0, h, w // 2, w)}
    raise ValueError(f"split_axis must be 0 or 1, got {split_axis}")


@dataclass(frozen=True, eq=False)
class Texture:
    """A loaded source: uint8 pixels (H, W) (grayscale) or (H, W, 3) (RGB), read-only."""

    name: str
    pixels: np.ndarray
    split_axis: int = 0
    rot90: bool = False
    label: str = ""

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3

    def region(self, split: str) -> Region:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return split_regions(self.pixels.shape, self.split_axis)[split]

    def max_crop(self) -> int:
        """Largest crop side that fits both split regions (no upsampling beyond this)."""
        return min(
            min(r.height, r.width)
            for r in split_regions(self.pixels.shape, self.split_axis).values()
        )

    def check_crop(self, crop_size: int) -> None:
        """ValueError when a ``crop_size``² crop does not fit inside a split region."""
        if crop_size > self.max_crop():
            h, w = self.pixels.shape[:2]
            how = "top/bottom" if self.split_axis == 0 else "left/right"
            r = self.region("train")
            raise ValueError(
                f"crop_size {crop_size} does not fit the {r.height}x{r.width} px (HxW) split "
                f"regions of {self.name!r} ({self.label or self.name}, {h}x{w} px split into "
                f"{how} halves); images are cut at native resolution and never upsampled: use "
                f"crop_size ≤ {self.max_crop()}"
            )


def _missing(path: Path, source: TextureSource, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"texture {what} {path} not found: category {source.category!r} is cut from "
        f"{source.file} of the Debian package {TEXTURE_PACKAGE}; install it with "
        f"`apt-get install {TEXTURE_PACKAGE}` or pass texture_dir=<a folder holding {source.file}>"
    )


@functools.lru_cache(maxsize=32)
def _read_rgb(path: str, mtime_ns: int, size: int) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=8)
def _skimage(name: str) -> np.ndarray:
    arr = np.array(getattr(skimage.data, name)())
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise RuntimeError(f"skimage.data.{name}() is not a uint8 grayscale image")
    arr.setflags(write=False)
    return arr


def texture_path(category: str, texture_dir: str | os.PathLike | None = None) -> Path | None:
    """The file a colour category is read from (None for the skimage categories)."""
    source = _source(category)
    if source.origin == "skimage":
        return None
    return Path(DEFAULT_TEXTURE_DIR if texture_dir is None else texture_dir) / source.file


def _source(category: str) -> TextureSource:
    if category not in TEXTURE_SOURCES:
        raise ValueError(f"unknown texture category {category!r}; choose from {CATEGORIES}")
    return TEXTURE_SOURCES[category]


def load_texture(category: str, texture_dir: str | os.PathLike | None = None) -> Texture:
    """Load one registered category's photograph (``texture_dir`` defaults to
    :data:`DEFAULT_TEXTURE_DIR`; unused for the skimage categories).

    Raises:
        FileNotFoundError: the folder or the file is missing (the message names the path and the
            Debian package to install).
    """
    source = _source(category)
    if source.origin == "skimage":
        pixels = _skimage(source.file)
    else:
        path = texture_path(category, texture_dir)
        assert path is not None
        if not path.parent.is_dir():
            raise _missing(path.parent, source, "folder")
        if not path.is_file():
            raise _missing(path, source, "file")
        st = path.stat()
        pixels = _read_rgb(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return Texture(category, pixels, source.split_axis, source.rot90, source.label)


def as_texture(src: Texture | np.ndarray, name: str = "array") -> Texture:
    """A :class:`Texture` as is, or a bare uint8 array wrapped with the top/bottom split."""
    if isinstance(src, Texture):
        return src
    arr = np.asarray(src, dtype=np.uint8)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"a texture must be (H, W) or (H, W, 3), got shape {arr.shape}")
    return Texture(name, arr)


def to_channels(img: np.ndarray, colour: bool) -> np.ndarray:
    """Float image converted to RGB (grey replicated) or to grayscale (BT.601 luma)."""
    if colour and img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if not colour and img.ndim == 3:
        return img @ LUMA
    return img


def render_crop(texture: Texture, crop: Crop, image_size: int | None = None) -> np.ndarray:
    """The float64 image a :class:`Crop` record describes (what :func:`cut` returned)."""
    s = crop.size
    img = texture.pixels[crop.top : crop.top + s, crop.left : crop.left + s].astype(np.float64)
    image_size = s if image_size is None else image_size
    if image_size > s:
        raise ValueError(
            f"image_size {image_size} > crop_size {s} would upsample; images are cut at native "
            "resolution (crop_size == image_size) or downsampled, never upsampled"
        )
    if image_size != s:
        img = sk_resize(
            img, (image_size, image_size), order=1, anti_aliasing=True, preserve_range=True
        )
    if crop.flip_h:
        img = img[:, ::-1]
    if crop.flip_v:
        img = img[::-1, :]
    if crop.transpose:
        img = img.swapaxes(0, 1)
    if crop.gain != 1.0:
        img = img * crop.gain
    return np.ascontiguousarray(img)


def cut(
    rng: np.random.Generator,
    texture: Texture,
    split: str,
    crop_size: int,
    image_size: int | None = None,
    augment: bool = True,
) -> tuple[np.ndarray, Crop]:
    """A random ``crop_size``² crop fully inside ``texture``'s ``split`` region, resized to
    ``image_size`` (downsampling only) and, with ``augment``, randomly flipped (and transposed for
    ``rot90`` sources) and scaled by a gain U(0.95, 1.05). Returns (float64 image, its Crop)."""
    texture.check_crop(crop_size)
    reg = texture.region(split)
    top = int(rng.integers(reg.top, reg.bottom - crop_size + 1))
    left = int(rng.integers(reg.left, reg.right - crop_size + 1))
    crop = Crop(top, left, crop_size)
    if augment:
        flip_h, flip_v = (bool(b) for b in rng.random(2) < 0.5)
        gain = float(rng.uniform(0.95, 1.05))
        transpose = bool(rng.random() < 0.5) if texture.rot90 else False
        crop = Crop(top, left, crop_size, flip_h, flip_v, transpose, gain)
    return render_crop(texture, crop, image_size), crop
