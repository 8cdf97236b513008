"""Image conventions shared by every network input: float images in [0, 1], 3 channels, then ImageNet
mean/std normalisation (the teacher, students and ResNet-18 all see normalised input;
docs/decisions.md#input-normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_three_channels(x: torch.Tensor) -> torch.Tensor:
    """Replicate a grayscale batch (B, 1, H, W) to (B, 3, H, W); 3-channel input is returned as is."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 1, H, W) or (B, 3, H, W) images, got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] → ImageNet-normalised tensor of the same shape."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) zoom of (B, C, H, W) to ``size``
    (docs/decisions.md#image-resizing)."""
    if isinstance(size, int):
        size = (size, size)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def prepare(x: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """[0, 1] images of 1 or 3 channels → resized, 3-channel, ImageNet-normalised network input."""
    x = to_three_channels(x.float())
    if size is not None:
        x = resize(x, size)
    return imagenet_normalize(x)


def upsample_map(score_map: torch.Tensor | np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear zoom (``align_corners=False``) of one map (h, w) to ``size`` = (H, W) pixels.

    Returns a float32 numpy array (H, W) (scores keep their units;
    docs/decisions.md#evaluation-resolution).
    """
    t = torch.as_tensor(np.asarray(score_map, dtype=np.float32))
    if t.dim() != 2:
        raise ValueError(f"expected a 2-D map (h, w), got shape {tuple(t.shape)}")
    h, w = int(size[0]), int(size[1])
    if tuple(t.shape) != (h, w):
        t = F.interpolate(t[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return t.numpy().astype(np.float32, copy=False)
