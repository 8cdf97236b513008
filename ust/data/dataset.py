"""The dataset contract every evaluation protocol reads: samples with zero or more ground-truth
regions, each region with its defect type and saturation.

A dataset implementation (MVTec AD: :class:`ust.data.mvtec.CategoryIndex`) validates its on-disk
layout and exposes one category as a :class:`DatasetIndex`:

* ``train_validation(val_fraction, seed)``: the anomaly-free images to fit on and to calibrate
  on, as :class:`Sample` lists (a dataset with its own validation folder ignores the fraction);
* ``test``: every test :class:`Sample`, anomalous or not, in a fixed order;
* ``regions(sample)``: the sample's ground-truth :class:`Region` list (empty for a good image).

Methods and metrics see nothing else, so a new dataset is one module implementing these three
(docs/architecture.md, "Add a dataset").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ust.data.transforms import resize, to_three_channels

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a category: its path, label, original size and ground-truth files.

    ``defect`` is ``"good"`` for an anomaly-free image, otherwise the defect type (MVTec AD) or the
    subset folder (``logical_anomalies``, ``structural_anomalies``); ``size`` is (H, W) in pixels at
    the original resolution; ``ground_truth`` the annotation files (none for a good image);
    ``split`` the folder under the category (``train``, ``validation``, ``test``).
    """

    path: Path
    defect: str
    size: tuple[int, int]
    ground_truth: tuple[Path, ...] = ()
    split: str = "test"

    @property
    def image_id(self) -> str:
        """Relative id ``"<defect>/<stem>"``, e.g. ``"broken_large/000"``."""
        return f"{self.defect}/{self.path.stem}"

    @property
    def key(self) -> str:
        """Path of the sample's map below ``<maps>/<category>/``, without suffix:
        ``"<split>/<defect>/<stem>"`` (the official evaluations' map layout)."""
        return f"{self.split}/{self.defect}/{self.path.stem}"

    @property
    def is_anomalous(self) -> bool:
        """True for images outside the ``good`` folders (image-level label)."""
        return self.defect != GOOD

    @property
    def mask_path(self) -> Path | None:
        """The single ground-truth file of an MVTec AD sample (``None`` for a good image)."""
        return self.ground_truth[0] if self.ground_truth else None


@dataclass(frozen=True, eq=False)
class Region:
    """One annotated ground-truth region of a test image.

    ``mask``: bool (H, W) at the image's original size; ``saturation``: the number of its pixels a
    detection must cover to count as complete (``mask.sum()`` for MVTec AD; see
    docs/decisions.md#spro-metric for MVTec LOCO AD); ``defect``: its defect type.
    """

    mask: np.ndarray
    saturation: float
    defect: str = ""


class DatasetIndex(Protocol):
    """One validated category of a dataset (see the module docstring)."""

    category: str
    test: list[Sample]

    def train_validation(
        self, val_fraction: float, seed: int
    ) -> tuple[list[Sample], list[Sample]]: ...

    def regions(self, sample: Sample) -> list[Region]: ...


def ground_truth_mask(index: DatasetIndex, sample: Sample) -> np.ndarray:
    """Union of the sample's regions as bool (H, W) (all False for a good image)."""
    mask = np.zeros(sample.size, dtype=bool)
    for region in index.regions(sample):
        mask |= region.mask
    return mask


def _image_array(path: str | os.PathLike) -> np.ndarray:
    """Decode an image to float32 (H, W) or (H, W, 3) in [0, 1]; alpha and palettes removed."""
    with Image.open(path) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("RGBA", "PA"):
            im = im.convert("RGB")
        elif im.mode in ("LA", "1"):
            im = im.convert("L")
        elif im.mode not in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype.kind in "ui":  # 16-bit PNGs (modes I;16 and I)
        return (arr.astype(np.float32) / 65535.0).clip(0.0, 1.0)
    return arr.astype(np.float32).clip(0.0, 1.0)


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Load an image as a float tensor (3, H, W) in [0, 1].

    Grayscale is replicated to 3 channels (docs/decisions.md#grayscale-replication), RGBA/palette
    images become RGB, 16-bit images are scaled by 1/65535. With ``size`` (int or (H, W)), the image
    is zoomed with bilinear antialiased interpolation (:func:`ust.data.transforms.resize`).
    """
    arr = _image_array(path)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    t = to_three_channels(t)
    if size is not None:
        t = resize(t, size).clamp(0.0, 1.0)  # not in place: resize may return the expanded input
    return t[0].contiguous()


def load_images(
    paths: Sequence[Path], size: int, *, desc: str = "images", progress: bool = False
) -> torch.Tensor:
    """(N, 3, size, size) float32 images in [0, 1], zoomed bilinearly (antialiased; grayscale
    replicated; docs/decisions.md#image-resizing)."""
    return torch.stack(
        [load_image(p, size) for p in tqdm(paths, desc=desc, disable=not progress, leave=False)]
    )
