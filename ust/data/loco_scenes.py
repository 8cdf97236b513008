"""An offline MVTec LOCO AD stand-in: rendered scenes on real texture photographs, with rules.

``make_loco_set`` writes categories in exactly the MVTec LOCO AD layout (:mod:`ust.data.loco`,
docs/decisions.md#loco-offline-set), so that the LOCO reader, the protocol and AU-sPRO run offline.
Each category is a scene with a **rule every normal image obeys**; its logical anomalies break the
rule with parts that are all normal on their own, its structural anomalies damage one object:

- ``tray`` (like the thesis' *pushpins*): a tray with 2 × 3 compartments on a table; **every
  compartment holds exactly one round pin, and all pins of a tray share one colour** (orange or
  blue, half of the trays each). Pins lie anywhere inside their compartment.
  Logical: ``missing_pin`` (an empty compartment), ``extra_pin`` (two pins in one compartment),
  ``wrong_colour`` (one pin of the other tray colour).
- ``shelf`` (like the *breakfast box*'s fixed sides): a cabinet with two boards and a middle
  divider, so four cells; **every cell holds exactly one box standing on its board, blue on the
  left side and yellow on the right**. Boxes stand anywhere along their board.
  Logical: ``missing_box``, ``extra_box``, ``wrong_colour`` (a box of the other side's colour) and
  ``swapped_sides`` (the two boxes of one board trade places: a wrong position).
- Structural, both: ``scratch`` (a thin bright or dark line across an object), ``hole`` (a dark
  hole punched into an object) and ``contamination`` (an irregular translucent blob of a foreign
  texture on an object).

The table, tray, frame, back panel and the objects' surface detail are crops of photographs from
Debian's ``colobot-common-textures`` (:data:`TEXTURE_FILES`, read from ``texture_dir``). Each
photograph is split in halves (:func:`ust.data.textures.split_regions`, left/right): train and
validation images are cut from one half, test images from the other, so no test pixel of a
photograph is seen in training. Crops are 128 px, flipped/transposed and scaled by a gain as in
:func:`ust.data.textures.cut`, and zoomed down to ``image_size`` (48–128 px; never upsampled).

Annotations follow the thesis' labelling policy (ch. 6.3.2, 6.3.4): one region PNG per annotated
defect (``ground_truth/<subset>/<id>/000.png``, its pixels = the defect type's ``pixel_value``),
with ``defects_config.json`` holding the saturation of each type:

========================== ============================================ ===========================
defect                     annotated region                             saturation threshold
========================== ============================================ ===========================
missing_pin / missing_box  the whole place the object could occupy      absolute: one object's area
                           (compartment, or the band along the board)
extra_pin / extra_box      every object of the cell (both of them)      absolute: one object's area
wrong_colour               the wrong-coloured object                    relative 1.0 (all of it)
swapped_sides              both swapped boxes                           absolute: one box's area
scratch, hole,             the damaged pixels                           relative 1.0 (all of it)
contamination
========================== ============================================ ===========================

Objects are discs or rectangles with integer positions, so every pin (box) covers exactly
:func:`object_area` pixels; that is the absolute threshold (the thesis takes "a value from the
lower end" of measured object areas; here all are equal).

Determinism: every image draws from its own ``default_rng([seed, crc32(category), crc32(group),
i])`` (group = ``train``, ``validation``, ``test/good`` or ``test/<defect>``), so the same arguments
give byte-identical files, and changing one count leaves the other images unchanged.
"""

from __future__ import annotations

import functools
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.morphology import disk

from ust.data.loco import CONFIG_FILE, LOGICAL, STRUCTURAL
from ust.data.synthetic import _png_bytes, _replace_folder, _up_to_date
from ust.data.textures import DEFAULT_TEXTURE_DIR, LUMA, TEXTURE_PACKAGE, Texture, cut

__all__ = [
    "CATEGORIES",
    "LOGICAL_DEFECTS",
    "STRUCTURAL_DEFECTS",
    "TEXTURE_FILES",
    "SceneImage",
    "category_scenes",
    "defects_config",
    "make_loco_set",
    "object_area",
]

CATEGORIES: tuple[str, ...] = ("tray", "shelf")
LOGICAL_DEFECTS: dict[str, tuple[str, ...]] = {
    "tray": ("missing_pin", "extra_pin", "wrong_colour"),
    "shelf": ("missing_box", "extra_box", "wrong_colour", "swapped_sides"),
}
STRUCTURAL_DEFECTS: tuple[str, ...] = ("scratch", "hole", "contamination")
# Absolute saturation (one object's area) for these logical defects; the others are relative 1.0.
_ABSOLUTE = ("missing_pin", "missing_box", "extra_pin", "extra_box", "swapped_sides")

# Role -> colobot-common-textures photograph (all 256 x 256 RGB, split into left/right halves).
TEXTURE_FILES: dict[str, str] = {
    "table": "dirty09.png",  # grey shaded concrete (under the tray)
    "tray_wall": "dirty03.png",  # cream plaster (tray rim and walls)
    "tray_floor": "dirty01.png",  # grey metal with rust stains (compartment floors)
    "pin": "mars003.png",  # ochre ground: surface detail of the pins
    "shelf_wall": "dirty02.png",  # beige plaster (wall and back panel)
    "wood": "mars005.png",  # brown ground: frame and boards
    "box": "dirty04.png",  # mottled: surface detail of the boxes
    "foreign": "water16.png",  # green water: contamination
}
CROP = 128  # side of every texture crop (half of a 256-px photograph is 128 px wide)
MIN_SIZE = 48
PIN_COLOURS = np.array([[235.0, 125.0, 35.0], [45.0, 95.0, 205.0]])  # orange, blue
BOX_COLOURS = np.array([[50.0, 95.0, 200.0], [230.0, 190.0, 45.0]])  # left blue, right yellow


# ------------------------------------------------------------------------------------ textures
@functools.lru_cache(maxsize=16)
def _photo(path: str, mtime_ns: int) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    arr.setflags(write=False)
    return arr


def _textures(texture_dir: str | os.PathLike | None) -> dict[str, Texture]:
    """Every role's photograph as a left/right-split :class:`Texture` (FileNotFoundError names
    the missing file and the Debian package)."""
    folder = Path(DEFAULT_TEXTURE_DIR if texture_dir is None else texture_dir)
    out = {}
    for role, name in TEXTURE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"texture file {path} not found: the LOCO-layout scenes are rendered on "
                f"photographs of the Debian package {TEXTURE_PACKAGE} (`apt-get install "
                f"{TEXTURE_PACKAGE}`) or pass texture_dir=<a folder holding {name}>"
            )
        pixels = _photo(str(path.resolve()), path.stat().st_mtime_ns)
        out[role] = Texture(role, pixels, split_axis=1, rot90=True, label=name)
        out[role].check_crop(CROP)
    return out


def _surface(rng: np.random.Generator, tex: Texture, split: str, size: int) -> np.ndarray:
    """A (size, size, 3) float64 crop of ``tex``'s ``split`` half (zoomed from 128 px)."""
    img, _ = cut(rng, tex, split, CROP, size, augment=True)
    return img


def _detail(rng: np.random.Generator, tex: Texture, split: str, size: int) -> np.ndarray:
    """(size, size) multiplicative surface detail in [0.75, 1.25] from a crop's luma."""
    luma = _surface(rng, tex, split, size) @ LUMA
    z = (luma - luma.mean()) / (luma.std() + 1e-6)
    return np.clip(1.0 + 0.12 * z, 0.75, 1.25)


# ------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Rect:
    """Half-open pixel rectangle ``[y0, y1) × [x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int

    def mask(self, size: int) -> np.ndarray:
        m = np.zeros((size, size), dtype=bool)
        m[self.y0 : self.y1, self.x0 : self.x1] = True
        return m


def _edges(start: int, stop: int, n: int, wall: int) -> list[tuple[int, int]]:
    """``n`` cells between ``start`` and ``stop`` separated by walls of ``wall`` pixels."""
    span = stop - start + wall
    return [
        (start + round(i * span / n), start + round((i + 1) * span / n) - wall) for i in range(n)
    ]


def _disc(size: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.ogrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r + r


class _Scene:
    """Geometry and drawing of one category at one image size (subclasses: tray, shelf)."""

    name = ""
    colours: np.ndarray

    def __init__(self, size: int):
        self.size = size
        self.margin = round(0.06 * size)
        self.wall = max(2, round(0.03 * size))
        self.cells: list[Rect] = []

    # one object: (mask, position) ----------------------------------------------------------
    def object_mask(self, pos: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def positions(self, cell: Rect) -> tuple[tuple[int, int], tuple[int, int]]:
        """Inclusive (low, high) range of each position coordinate of an object in ``cell``."""
        raise NotImplementedError

    def slot(self, cell: Rect) -> Rect:
        """Where an object of ``cell`` may lie (the region of a missing object)."""
        raise NotImplementedError

    def normal_colours(self, rng: np.random.Generator) -> list[int]:
        """Colour index of every cell's object in a normal scene."""
        raise NotImplementedError

    def background(self, rng: np.random.Generator, tex: dict[str, Texture], split: str):
        raise NotImplementedError

    def paint(self, img, mask, colour, detail) -> None:
        raise NotImplementedError

    @property
    def area(self) -> int:
        """Pixels of one object (integer positions: every object covers exactly this many)."""
        (lo, _), (lo2, _) = self.positions(self.cells[0])
        return int(self.object_mask((lo, lo2)).sum())

    def place(self, rng: np.random.Generator, cell: Rect, n: int) -> list[tuple[int, int]]:
        """``n`` random non-overlapping object positions (gap ≥ 2 px) inside ``cell``."""
        (a0, a1), (b0, b1) = self.positions(cell)
        for _ in range(200):
            pos = [(int(rng.integers(a0, a1 + 1)), int(rng.integers(b0, b1 + 1))) for _ in range(n)]
            masks = [ndimage.binary_dilation(self.object_mask(p), iterations=1) for p in pos]
            if n == 1 or not (masks[0] & masks[1]).any():
                return pos
        raise RuntimeError(f"{self.name}: no room for {n} objects in a cell at size {self.size}")

    def check(self) -> None:
        for cell in self.cells:
            (a0, a1), (b0, b1) = self.positions(cell)
            if a1 < a0 or b1 < b0:
                raise ValueError(f"image_size {self.size} is too small for the {self.name} scene")


class _Tray(_Scene):
    name = "tray"
    colours = PIN_COLOURS

    def __init__(self, size: int):
        super().__init__(size)
        lo, hi = self.margin + self.wall, size - self.margin - self.wall
        self.radius = max(2, round(0.055 * size))
        rows, cols = _edges(lo, hi, 2, self.wall), _edges(lo, hi, 3, self.wall)
        self.cells = [Rect(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]
        self.check()

    def object_mask(self, pos):
        return _disc(self.size, pos[0], pos[1], self.radius)

    def positions(self, cell):
        r = self.radius + 1
        return (cell.y0 + r, cell.y1 - 1 - r), (cell.x0 + r, cell.x1 - 1 - r)

    def slot(self, cell):
        return cell

    def normal_colours(self, rng):
        return [int(rng.integers(2))] * len(self.cells)

    def background(self, rng, tex, split):
        s = self.size
        img = _surface(rng, tex["table"], split, s) * 0.55
        frame = Rect(self.margin, s - self.margin, self.margin, s - self.margin).mask(s)
        img[frame] = (_surface(rng, tex["tray_wall"], split, s) * 1.05)[frame]
        floor = _surface(rng, tex["tray_floor"], split, s)
        for cell in self.cells:
            m = cell.mask(s)
            img[m] = floor[m]
            rim = m & ~ndimage.binary_erosion(m, iterations=max(1, s // 64))
            img[rim] *= 0.8  # the walls' shadow on the floor
        return img

    def paint(self, img, mask, colour, detail):
        cy, cx = (np.mean(ix) for ix in np.nonzero(mask))
        yy, xx = np.nonzero(mask)
        glow = 1.0 + 0.25 * (
            1 - np.hypot(yy - (cy - self.radius / 3), xx - (cx - self.radius / 3)) / self.radius
        ).clip(0, 1)
        img[yy, xx] = colour * (detail[yy, xx] * glow)[:, None]
        edge = mask & ~ndimage.binary_erosion(mask)
        img[edge] *= 0.65


class _Shelf(_Scene):
    name = "shelf"
    colours = BOX_COLOURS

    def __init__(self, size: int):
        super().__init__(size)
        lo, hi = self.margin + self.wall, size - self.margin - self.wall
        self.box_w = max(3, round(0.11 * size))
        self.box_h = max(4, round(0.2 * size))
        # row-major: upper board left, upper right, lower left, lower right
        levels, sides = _edges(lo, hi, 2, self.wall), _edges(lo, hi, 2, self.wall)
        self.cells = [Rect(y0, y1, x0, x1) for y0, y1 in levels for x0, x1 in sides]
        self.check()

    def object_mask(self, pos):
        return Rect(pos[0], pos[0] + self.box_h, pos[1], pos[1] + self.box_w).mask(self.size)

    def positions(self, cell):
        y = cell.y1 - self.box_h  # standing on the board
        return (y, y), (cell.x0 + 1, cell.x1 - 1 - self.box_w)

    def slot(self, cell):
        return Rect(cell.y1 - self.box_h, cell.y1, cell.x0 + 1, cell.x1 - 1)

    def normal_colours(self, rng):
        return [i % 2 for i in range(len(self.cells))]  # left blue, right yellow

    def background(self, rng, tex, split):
        s = self.size
        wall = _surface(rng, tex["shelf_wall"], split, s)
        img = wall.copy()
        frame = Rect(self.margin, s - self.margin, self.margin, s - self.margin).mask(s)
        img[frame] = (_surface(rng, tex["wood"], split, s) * 0.8)[frame]
        back = wall * 0.7  # the back panel, in the cabinet's shade
        for cell in self.cells:
            m = cell.mask(s)
            img[m] = back[m]
            top = m & ~np.roll(m, max(1, s // 40), axis=0)  # the board above shades the cell
            img[top] *= 0.75
        return img

    def paint(self, img, mask, colour, detail):
        yy, xx = np.nonzero(mask)
        img[yy, xx] = colour * detail[yy, xx][:, None]
        y0, y1 = yy.min(), yy.max() + 1
        band = mask.copy()
        band[: y0 + (y1 - y0) * 2 // 5] = False
        band[y0 + (y1 - y0) * 3 // 5 :] = False
        band &= ndimage.binary_erosion(mask, iterations=max(1, self.box_w // 5))
        img[band] = 0.3 * img[band] + 0.7 * np.array([240.0, 236.0, 225.0])  # a label
        edge = mask & ~ndimage.binary_erosion(mask)
        img[edge] *= 0.6


_SCENES = {"tray": _Tray, "shelf": _Shelf}
_DETAIL = {"tray": "pin", "shelf": "box"}


def _scene(category: str, image_size: int) -> _Scene:
    if category not in _SCENES:
        raise ValueError(f"unknown LOCO scene category {category!r}; choose from {CATEGORIES}")
    if not MIN_SIZE <= image_size <= CROP:
        raise ValueError(
            f"image_size must be in [{MIN_SIZE}, {CROP}] (the photographs' {CROP}-px crops are "
            f"never upsampled), got {image_size}"
        )
    return _SCENES[category](image_size)


def object_area(category: str, image_size: int) -> int:
    """Pixels of one object (pin or box) of ``category`` at ``image_size``: the absolute
    saturation threshold of the missing, extra and swapped defects."""
    return _scene(category, image_size).area


def defect_names(category: str) -> tuple[str, ...]:
    """Every defect type of ``category``: its logical ones, then the structural ones."""
    _scene(category, CROP)
    return LOGICAL_DEFECTS[category] + STRUCTURAL_DEFECTS


def defects_config(category: str, image_size: int) -> list[dict]:
    """The ``defects_config.json`` entries of ``category``: pixel values 255, 254, … in
    :func:`defect_names` order; saturations as in the module docstring."""
    area = object_area(category, image_size)
    return [
        {
            "defect_name": name,
            "pixel_value": 255 - i,
            "saturation_threshold": area if name in _ABSOLUTE else 1.0,
            "relative_saturation": name not in _ABSOLUTE,
        }
        for i, name in enumerate(defect_names(category))
    ]


# --------------------------------------------------------------------------------------- scenes
@dataclass(frozen=True, eq=False)
class SceneImage:
    """One generated image: relative path, subset (``good`` / a subset folder), defect type
    (``good`` for a normal image), uint8 (H, W, 3) pixels and its annotated regions as
    ``(defect name, bool mask)``, one region PNG each."""

    path: str
    split: str
    subset: str
    kind: str
    image: np.ndarray
    regions: tuple[tuple[str, np.ndarray], ...] = ()


def _rng(seed: int, category: str, group: str, i: int) -> np.random.Generator:
    return np.random.default_rng(
        [seed, zlib.crc32(category.encode()), zlib.crc32(group.encode()), i]
    )


def _blob(rng: np.random.Generator, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """An irregular blob around (cy, cx): a rotated ellipse with a wobbling radius."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / rng.uniform(0.55, 0.9)
    ang = np.arctan2(v, u)
    wobble = sum(
        rng.uniform(0, 0.2) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    mask = np.hypot(u, v) <= radius * (1 + wobble)
    mask[int(round(cy)), int(round(cx))] = True
    return mask


def _structural(
    rng: np.random.Generator,
    kind: str,
    img: np.ndarray,
    target: np.ndarray,
    scene: _Scene,
    foreign: np.ndarray,
) -> np.ndarray:
    """Damage the object ``target`` (bool mask) in ``img`` in place; returns the damaged region."""
    s = scene.size
    ys, xs = np.nonzero(target)
    cy, cx = float(ys.mean()), float(xs.mean())
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    if kind == "scratch":
        length = max(extent * 1.2, 0.2 * s)
        angle = rng.uniform(0, np.pi)
        dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
        r0, c0, r1, c1 = (
            int(np.clip(round(v), 0, s - 1)) for v in (cy - dy, cx - dx, cy + dy, cx + dx)
        )
        region = np.zeros((s, s), dtype=bool)
        region[draw_line(r0, c0, r1, c1)] = True
        if s >= 96:
            region = ndimage.binary_dilation(region, structure=disk(1))
        level = rng.uniform(215, 240) if rng.random() < 0.5 else rng.uniform(15, 35)
        img[region] = level + rng.normal(0, 4, size=(int(region.sum()), 3))
    elif kind == "hole":
        jitter = extent / 8
        hy, hx = cy + rng.uniform(-jitter, jitter), cx + rng.uniform(-jitter, jitter)
        region = _blob(rng, s, hy, hx, max(1.5, extent * rng.uniform(0.22, 0.3))) & target
        img[region] = 0.2 * img[region] + 8.0
        rim = ndimage.binary_dilation(region) & target & ~region
        img[rim] *= 0.7
    elif kind == "contamination":
        region = _blob(rng, s, cy, cx, max(2.0, extent * rng.uniform(0.35, 0.5)))
        alpha = rng.uniform(0.75, 0.9)
        img[region] = (1 - alpha) * img[region] + alpha * 1.3 * foreign[region]
    else:
        raise ValueError(f"unknown structural defect {kind!r}; choose from {STRUCTURAL_DEFECTS}")
    return region


def _render(
    rng: np.random.Generator, scene: _Scene, tex: dict[str, Texture], split: str, kind: str
) -> tuple[np.ndarray, tuple[tuple[str, np.ndarray], ...]]:
    """One image of ``scene`` with defect ``kind`` (``good``: a normal scene): uint8 pixels and
    the annotated regions."""
    s = scene.size
    img = scene.background(rng, tex, split)
    detail = _detail(rng, tex[_DETAIL[scene.name]], split, s)
    foreign = _surface(rng, tex["foreign"], split, s)
    colours = scene.normal_colours(rng)
    counts = [1] * len(scene.cells)
    cell = int(rng.integers(len(scene.cells)))
    regions: list[tuple[str, np.ndarray]] = []
    if kind.startswith("missing_"):
        counts[cell] = 0
        regions.append((kind, scene.slot(scene.cells[cell]).mask(s)))
    elif kind.startswith("extra_"):
        counts[cell] = 2
    elif kind == "wrong_colour":
        colours[cell] = 1 - colours[cell]
    elif kind == "swapped_sides":
        cell -= cell % 2  # the left cell of a board
        colours[cell], colours[cell + 1] = colours[cell + 1], colours[cell]
    objects = []  # (cell index, mask, colour index)
    for i, c in enumerate(scene.cells):
        for pos in scene.place(rng, c, counts[i]) if counts[i] else []:
            objects.append((i, scene.object_mask(pos), colours[i]))
    shift = max(1, s // 64)
    occupied = np.zeros((s, s), dtype=bool)
    for _, mask, _ in objects:
        occupied |= mask
    shadow = np.roll(occupied, (shift, shift), axis=(0, 1)) & ~occupied
    img[shadow] *= 0.7
    for _, mask, colour in objects:
        scene.paint(img, mask, scene.colours[colour], detail)
    if kind.startswith("extra_"):
        regions.append((kind, np.logical_or.reduce([m for i, m, _ in objects if i == cell])))
    elif kind == "wrong_colour":
        regions.append((kind, next(m for i, m, _ in objects if i == cell)))
    elif kind == "swapped_sides":
        regions.append(
            (kind, np.logical_or.reduce([m for i, m, _ in objects if i in (cell, cell + 1)]))
        )
    elif kind in STRUCTURAL_DEFECTS:
        target = objects[int(rng.integers(len(objects)))][1]
        regions.append((kind, _structural(rng, kind, img, target, scene, foreign)))
    img = img * rng.uniform(0.96, 1.04) + rng.normal(0.0, 1.5, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), tuple(regions)


def _check_counts(n_train: int, n_validation: int, n_test_good: int, n_test_per_kind: int) -> None:
    if n_train < 1 or n_validation < 1 or n_test_good < 1 or n_test_per_kind < 1:
        raise ValueError(
            "need n_train, n_validation, n_test_good and n_test_per_kind ≥ 1, got "
            f"{n_train}, {n_validation}, {n_test_good}, {n_test_per_kind}"
        )


def category_scenes(
    category: str,
    *,
    image_size: int = 128,
    n_train: int = 40,
    n_validation: int = 10,
    n_test_good: int = 10,
    n_test_per_kind: int = 4,
    seed: int = 0,
    texture_dir: str | os.PathLike | None = None,
) -> Iterator[SceneImage]:
    """Every image of one category in file order (train, validation, test/good, then the logical
    and the structural test images, ``n_test_per_kind`` of each defect type in
    :func:`defect_names` order, numbered 000, 001, … per subset); :func:`make_loco_set` writes
    exactly these."""
    scene = _scene(category, image_size)
    _check_counts(n_train, n_validation, n_test_good, n_test_per_kind)
    tex = _textures(texture_dir)
    groups = [("train", "train", "good", n_train), ("validation", "train", "good", n_validation)]
    for split, source, kind, n in groups:
        for i in range(n):
            img, _ = _render(_rng(seed, category, split, i), scene, tex, source, kind)
            yield SceneImage(f"{split}/good/{i:03d}.png", split, "good", "good", img)
    for i in range(n_test_good):
        img, _ = _render(_rng(seed, category, "test/good", i), scene, tex, "test", "good")
        yield SceneImage(f"test/good/{i:03d}.png", "test", "good", "good", img)
    for subset, kinds in ((LOGICAL, LOGICAL_DEFECTS[category]), (STRUCTURAL, STRUCTURAL_DEFECTS)):
        number = 0
        for kind in kinds:
            for i in range(n_test_per_kind):
                rng = _rng(seed, category, f"test/{kind}", i)
                img, regions = _render(rng, scene, tex, "test", kind)
                yield SceneImage(
                    f"test/{subset}/{number:03d}.png", "test", subset, kind, img, regions
                )
                number += 1


def _category_files(category: str, image_size: int, **kwargs) -> dict[str, bytes]:
    """All files of one category as {relative posix path: bytes}."""
    config = defects_config(category, image_size)
    values = {e["defect_name"]: e["pixel_value"] for e in config}
    files = {CONFIG_FILE: (json.dumps(config, indent=4) + "\n").encode()}
    for item in category_scenes(category, image_size=image_size, **kwargs):
        files[item.path] = _png_bytes(item.image)
        stem = Path(item.path).stem
        for j, (name, mask) in enumerate(item.regions):
            files[f"ground_truth/{item.subset}/{stem}/{j:03d}.png"] = _png_bytes(
                mask.astype(np.uint8) * values[name]
            )
    return files


def make_loco_set(
    root: str | os.PathLike,
    categories: Sequence[str] = CATEGORIES,
    *,
    image_size: int = 128,
    n_train: int = 40,
    n_validation: int = 10,
    n_test_good: int = 10,
    n_test_per_kind: int = 4,
    seed: int = 0,
    texture_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Write an MVTec LOCO AD-layout tree ``<root>/<category>/...`` of rendered scenes (see the
    module docstring).

    Args:
        root: output folder (created); other content of ``root`` is left alone.
        categories: among :data:`CATEGORIES` (``tray``, ``shelf``).
        image_size: side of the square RGB images in pixels, 48 to 128.
        n_train, n_validation, n_test_good: normal images of ``train/good``,
            ``validation/good`` and ``test/good`` (each ≥ 1).
        n_test_per_kind: test images of every defect type (each ≥ 1): tray 3 logical + 3
            structural types, shelf 4 + 3.
        seed: random seed (see the module docstring for the per-image streams).
        texture_dir: folder holding :data:`TEXTURE_FILES` (default
            :data:`ust.data.textures.DEFAULT_TEXTURE_DIR`, from ``apt-get install
            colobot-common-textures``).
        overwrite: replace an existing category folder whose content differs.

    Returns:
        The category names written (or found identical), in the given order.

    Raises:
        ValueError: unknown or duplicate category, image_size outside [48, 128], a count < 1.
        FileNotFoundError: a texture file is missing (checked before anything is written).
        FileExistsError: a non-empty ``<root>/<category>`` differs and ``overwrite`` is False.

    Each category is written to a temporary sibling and renamed into place. Two categories at
    128 px with 40 / 10 / 10 normal images and 4 per defect type take about 3 s on one CPU core.
    """
    if len(set(categories)) != len(categories) or not categories:
        raise ValueError(f"categories must be distinct names among {CATEGORIES}, got {categories}")
    for category in categories:
        _scene(category, image_size)
    _check_counts(n_train, n_validation, n_test_good, n_test_per_kind)
    _textures(texture_dir)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in categories:
        files = _category_files(
            category,
            image_size,
            n_train=n_train,
            n_validation=n_validation,
            n_test_good=n_test_good,
            n_test_per_kind=n_test_per_kind,
            seed=seed,
            texture_dir=texture_dir,
        )
        target = root / category
        if _up_to_date(target, files, overwrite, f"seed={seed}, image_size={image_size}"):
            continue
        _replace_folder(target, files)
    return list(categories)
