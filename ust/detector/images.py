"""What a detector reads: image files (any PIL format; grayscale, RGBA, palette and 16-bit PNGs),
PIL images and float tensors, all turned into (3, H, W) float32 tensors in [0, 1] at their
original size, plus the recursive search for image files in folders.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ust.data.mvtec import load_image
from ust.data.patches import IMAGE_EXTENSIONS
from ust.data.transforms import resize, to_three_channels

# Errors PIL raises on unreadable, truncated or corrupt files (and the OS on unreadable paths).
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, TypeError)


class ImageReadError(ValueError):
    """An image that cannot be read; the message starts with its path."""


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders are skipped.

    Extensions (case-insensitive): :data:`ust.data.patches.IMAGE_EXTENSIONS`.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    found = []
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / n
            for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
        ]
    return sorted(found)


@dataclass(frozen=True)
class NamedPath:
    """An image file and the name its outputs get: its path relative to the folder it was found
    in, without suffix (``sub/001``), or the file's stem when it was given directly."""

    path: Path
    name: str


def _suffix_names(files: list[Path]) -> list[str]:
    """Names of files given directly: the stem, or as many parent folders as it takes to tell
    files with the same stem apart (``a/000``, ``b/000``)."""
    parts = [f.with_suffix("").parts[len(f.anchor) > 0 :] for f in files]
    depth = [1] * len(files)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = {n for n in names if names.count(n) > 1}
        grow = [i for i, n in enumerate(names) if n in clash and depth[i] < len(parts[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def collect_images(paths: Iterable[str | os.PathLike]) -> list[NamedPath]:
    """Files and folders (searched recursively) → named image files, in the given order.

    A file found in a folder is named by its path relative to that folder without suffix
    (``sub/001``); a file given directly by its stem, with parent folders added while stems clash
    (``blur/000`` and ``hole/000``). Names that still collide (``a.png`` and ``a.jpg``) get ``~2``,
    ``~3``, … appended. Raises FileNotFoundError for a path that does not exist and ValueError
    when no image is found at all.
    """
    paths = list(paths)
    items: list[NamedPath] = []
    direct = sorted({Path(p).absolute() for p in paths if Path(p).is_file()})
    direct_names = dict(zip(direct, _suffix_names(direct)))
    for p in map(Path, paths):
        if p.is_dir():
            items += [
                NamedPath(f, f.relative_to(p).with_suffix("").as_posix()) for f in find_images(p)
            ]
        elif p.exists():
            items.append(NamedPath(p, direct_names[p.absolute()]))
        else:
            raise FileNotFoundError(f"{p} does not exist")
    if not items:
        shown = ", ".join(str(p) for p in paths) or "(none given)"
        raise ValueError(
            f"no images found in {shown} (extensions searched: {', '.join(IMAGE_EXTENSIONS)})"
        )
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        seen[item.name] = seen.get(item.name, 0) + 1
        name = item.name if seen[item.name] == 1 else f"{item.name}~{seen[item.name]}"
        unique.append(NamedPath(item.path, name))
    return unique


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] at the original size (docs/decisions.md#grayscale-replication:
    gray replicated, alpha and palettes dropped, 16-bit scaled by 1/65535).

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt (message names it).
    """
    try:
        return load_image(path)
    except _READ_ERRORS as e:
        raise ImageReadError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image → (3, H, W) float32 in [0, 1], with exactly the file loader's conversions."""
    buf = io.BytesIO()
    # TIFF stores every PIL mode losslessly (16-bit, float, palette, alpha), so the file path's
    # conversion code is reused unchanged.
    image.save(buf, format="TIFF")
    buf.seek(0)
    return load_image(buf)


def as_image(item: Any) -> torch.Tensor:
    """One image (path, PIL image or (C, H, W) float tensor in [0, 1], C = 1 or 3) → (3, H, W)."""
    if isinstance(item, str | os.PathLike):
        return read_image(item)
    if isinstance(item, Image.Image):
        return pil_to_tensor(item)
    if isinstance(item, torch.Tensor):
        if item.dim() != 3:
            raise ValueError(f"expected an image tensor (C, H, W), got shape {tuple(item.shape)}")
        return check_batch(item[None])[0]
    raise TypeError(f"expected an image path, a PIL image or a tensor, got {type(item).__name__}")


def check_batch(images: torch.Tensor) -> torch.Tensor:
    """Validate a (B, C, H, W) float batch in [0, 1] (C = 1 or 3) and return it with 3 channels."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected images (B, 3, H, W) (or (B, 1, H, W)), got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"expected float images in [0, 1], got dtype {images.dtype}; divide uint8 images by 255"
        )
    return to_three_channels(images.float())


def as_items(images: Any) -> list[Any]:
    """Split any accepted input into single images, none loaded yet.

    Accepted: a (B, C, H, W) tensor, one path / PIL image / (C, H, W) tensor, or a sequence of them.
    A folder path stands for the images under it (:func:`find_images`).
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(check_batch(images))
    if isinstance(images, str | os.PathLike) and Path(images).is_dir():
        return [n.path for n in collect_images([images])]
    if isinstance(images, str | os.PathLike | Image.Image | torch.Tensor):
        return [images]
    if not isinstance(images, Sequence):
        raise TypeError(f"expected images or a sequence of images, got {type(images).__name__}")
    return list(images)


def as_images(images: Any) -> list[torch.Tensor]:
    """Any input :func:`as_items` accepts → (3, H, W) float32 tensors in [0, 1], original sizes."""
    return [as_image(x) for x in as_items(images)]


def zoom(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """(3, H_i, W_i) images → (N, 3, size, size): bilinear, antialiased when shrinking, clamped to
    [0, 1], exactly as :func:`ust.data.mvtec.load_image` zooms (docs/decisions.md#image-resizing)."""
    return torch.cat([resize(x[None], size).clamp(0.0, 1.0) for x in images])


def sizes_of(images: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """Original (H, W) of each (3, H, W) image."""
    return [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
