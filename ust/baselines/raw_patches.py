"""Raw-pixel patch nearest neighbour: a no-learning floor for the MVTec segmentation experiments.

Every pixel is described by the raw colour patch of side ``patch`` centred on it (images in
[0, 1], C channels), optionally average-pooled to a ``grid`` × ``grid`` lattice of cells, and scored
by the Euclidean distance to its nearest neighbour in a memory bank of such patches drawn from the
anomaly-free training images (a PatchCore without a network). Nothing is learnt, so a method that
does not beat this floor has learnt nothing useful about the images.

Patch representation (:class:`RawPatchSettings`):

* ``grid = patch`` (or ``None``): the exact raw ``patch`` × ``patch`` × C patch.
* ``grid < patch``: the image is first smoothed with a box filter of odd side
  ``b = 2·round((patch/grid − 1)/2) + 1`` (≈ ``patch / grid``), then sampled at ``grid`` × ``grid``
  offsets ``round(linspace(−r, r, grid))``, r = (patch − 1) // 2, around the pixel: a cheap
  "average-pool the patch to a smaller grid" that keeps (up to b // 2 pixels) the patch's extent.
  The descriptor has
  C·grid² entries.
* Borders: the image is padded by reflection (``padding="reflect"``, default: a border pixel is
  described by plausible texture, as in training images at the same position) or with zeros
  (``"zeros"``). The box filter pads the same way.
* ``stride`` > 1: scores are computed on the pixel grid 0, s, 2s, …, and the last row/column
  (H − 1, W − 1) always included, then interpolated bilinearly (separably, exactly through the
  grid points) to every pixel. ``stride = 1`` scores every pixel.

The memory bank holds ``min(n_bank, N·H·W)`` distinct training pixel positions drawn uniformly with
``seed``. Nearest neighbours are found by brute force in float32 via ‖q‖² − 2 q·b + ‖b‖² (matrix
products, ``chunk`` queries at a time); the distance to the chosen neighbour is then recomputed
directly, so a test patch equal to a bank patch (with no other bank patch within float32 rounding
of it) scores exactly 0. Everything runs on the device of
the images; maps are returned as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PADDINGS: tuple[str, ...] = ("reflect", "zeros")


@dataclass(frozen=True)
class RawPatchSettings:
    """Settings of the raw-patch nearest-neighbour floor (see the module docstring).

    Attributes:
        patch: odd patch side in pixels (e.g. a student's receptive field, 17, 33 or 65).
        grid: cells per side of the pooled descriptor, 1 ≤ grid ≤ patch (``None``: ``patch``, the
            raw patch).
        n_bank: patches in the memory bank (fewer when the training images have fewer pixels).
        stride: step in pixels of the scored grid (1: every pixel).
        padding: ``"reflect"`` or ``"zeros"``.
        seed: seed of the memory bank's random positions.
        chunk: query patches per nearest-neighbour matrix product.
    """

    patch: int = 17
    grid: int | None = None
    n_bank: int = 10_000
    stride: int = 1
    padding: str = "reflect"
    seed: int = 0
    chunk: int = 4096

    def cells(self) -> int:
        """The number of cells per side of the descriptor (``grid``, or ``patch`` if ``None``)."""
        return int(self.patch if self.grid is None else self.grid)

    def box(self) -> int:
        """Odd side of the box filter applied before sampling (1 for the raw patch)."""
        return 2 * int(round((self.patch / self.cells() - 1) / 2)) + 1

    def check(self) -> None:
        """ValueError for an even or non-positive patch, a grid outside [1, patch], a bad stride,
        bank size, chunk or padding."""
        p = int(self.patch)
        if p < 1 or p % 2 == 0:
            raise ValueError(f"patch must be a positive odd side, got {self.patch}")
        if not 1 <= self.cells() <= p:
            raise ValueError(f"grid must be in [1, patch={p}], got {self.grid}")
        if self.stride < 1 or self.n_bank < 1 or self.chunk < 1:
            raise ValueError(
                f"stride, n_bank and chunk must be ≥ 1, got {self.stride}, {self.n_bank}, "
                f"{self.chunk}"
            )
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")


def _check_images(images: torch.Tensor, settings: RawPatchSettings, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what}: expected a non-empty (N, C, H, W) tensor, got {shape}")
    h, w = images.shape[-2:]
    if settings.patch > min(h, w):
        raise ValueError(f"{what}: patch {settings.patch} is larger than the images ({h}×{w})")


def _pad(x: torch.Tensor, r: int, padding: str) -> torch.Tensor:
    """``x`` (N, C, H, W) padded by ``r`` pixels on every side (reflection or zeros)."""
    if r == 0:
        return x
    return F.pad(x, (r, r, r, r), mode="reflect" if padding == "reflect" else "constant")


def prepare(images: torch.Tensor, settings: RawPatchSettings) -> torch.Tensor:
    """Box-filtered (side :meth:`RawPatchSettings.box`) float32 images padded by (patch − 1) / 2:
    (N, C, H + patch − 1, W + patch − 1), ready for :func:`gather_patches`."""
    x = images.detach().to(torch.float32)
    b = settings.box()
    if b > 1:
        x = F.avg_pool2d(_pad(x, b // 2, settings.padding), b, stride=1)
    return _pad(x, (settings.patch - 1) // 2, settings.padding)


def _offsets(settings: RawPatchSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy, dx) of the grid² sampled points relative to the padded top-left corner, each (g²,)."""
    r, g = (settings.patch - 1) // 2, settings.cells()
    o = torch.from_numpy(np.rint(np.linspace(-r, r, g)).astype(np.int64) + r)
    return o.repeat_interleave(g), o.repeat(g)


def gather_patches(
    padded: torch.Tensor,
    n: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    settings: RawPatchSettings,
) -> torch.Tensor:
    """Descriptors (k, C·grid²) of the pixels (n[i], y[i], x[i]) of the prepared images ``padded``
    (:func:`prepare`); image coordinates, not padded ones."""
    dy, dx = (o.to(padded.device) for o in _offsets(settings))
    rows = y[:, None] + dy[None]
    cols = x[:, None] + dx[None]
    out = padded[n[:, None], :, rows, cols]  # (k, g², C)
    return out.reshape(len(n), -1)


def sample_bank(train_images: torch.Tensor, settings: RawPatchSettings) -> torch.Tensor:
    """The memory bank: descriptors (k, C·grid²) of ``k = min(n_bank, N·H·W)`` distinct training
    pixels drawn uniformly with ``seed``, in ascending (image, row, column) order."""
    settings.check()
    _check_images(train_images, settings, "training images")
    n, _, h, w = train_images.shape
    k = min(int(settings.n_bank), n * h * w)
    rng = np.random.default_rng(settings.seed)
    flat = torch.from_numpy(np.sort(rng.choice(n * h * w, size=k, replace=False)))
    flat = flat.to(train_images.device)
    img, rest = flat // (h * w), flat % (h * w)
    parts = []
    for i in range(n):  # one prepared image at a time keeps the memory at O(H·W)
        sel = img == i
        if sel.any():
            padded = prepare(train_images[i : i + 1], settings)
            zeros = torch.zeros(int(sel.sum()), dtype=torch.long, device=flat.device)
            parts.append(gather_patches(padded, zeros, rest[sel] // w, rest[sel] % w, settings))
    return torch.cat(parts)


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distance (k,) of each query row (k, D) to its nearest row of ``bank`` (m, D).

    The neighbour is chosen with ‖q‖² − 2 q·b + ‖b‖² (``chunk`` queries per matrix product); the
    returned distance is recomputed as ‖q − b_nn‖ (0 for a query equal to a bank row unless another
    row is within float32 rounding of it).
    """
    bank = bank.to(torch.float32)
    bank_sq = (bank * bank).sum(1)
    out = []
    for start in range(0, len(queries), max(1, int(chunk))):
        q = queries[start : start + chunk].to(torch.float32)
        d2 = torch.addmm(bank_sq[None], q, bank.T, alpha=-2.0)
        nn_idx = d2.argmin(1)
        out.append(torch.linalg.vector_norm(q - bank[nn_idx], dim=1))
    return torch.cat(out) if out else torch.zeros(0, device=bank.device)


def _grid(size: int, stride: int) -> np.ndarray:
    """Scored coordinates 0, stride, 2·stride, … plus size − 1."""
    return np.unique(np.r_[np.arange(0, size, stride), size - 1])


def _interp_matrix(coords: np.ndarray, size: int) -> torch.Tensor:
    """(size, len(coords)) matrix of 1-D linear interpolation from ``coords`` to 0 … size − 1."""
    eye = np.eye(len(coords))
    cols = [np.interp(np.arange(size), coords, eye[j]) for j in range(len(coords))]
    return torch.from_numpy(np.stack(cols, axis=1).astype(np.float32))


def score_image(image: torch.Tensor, bank: torch.Tensor, settings: RawPatchSettings) -> np.ndarray:
    """Anomaly map (H, W) float32 of one image (C, H, W): distance of each pixel's patch to its
    nearest bank patch (on the ``stride`` grid, bilinearly interpolated in between)."""
    _, h, w = image.shape
    padded = prepare(image[None], settings)
    ys, xs = _grid(h, settings.stride), _grid(w, settings.stride)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    y, x = (torch.from_numpy(a.ravel()).to(image.device) for a in (yy, xx))
    zeros, step = torch.zeros_like(y), settings.chunk
    dist = [
        nearest_distances(
            gather_patches(padded, zeros[i : i + step], y[i : i + step], x[i : i + step], settings),
            bank,
            step,
        )
        for i in range(0, len(y), step)
    ]
    coarse = torch.cat(dist).reshape(len(ys), len(xs))
    if settings.stride > 1:
        rows, cols = (_interp_matrix(c, n).to(image.device) for c, n in ((ys, h), (xs, w)))
        coarse = rows @ coarse @ cols.T
    return coarse.cpu().numpy().astype(np.float32, copy=False)


def raw_patch_maps(
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    settings: RawPatchSettings = RawPatchSettings(),
) -> list[np.ndarray]:
    """Anomaly maps of the raw-patch nearest-neighbour floor: one (H, W) float32 map per test image.

    Args:
        train_images: (N, C, H, W) anomaly-free images in [0, 1] (the memory bank's source).
        test_images: (M, C, H, W) images to score, the same C, H and W.
        settings: see :class:`RawPatchSettings`.

    Raises:
        ValueError: bad settings, images that are not (N, C, H, W), train and test images of
            different channels or sizes, or a patch larger than the images.
    """
    settings.check()
    _check_images(train_images, settings, "training images")
    _check_images(test_images, settings, "test images")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            "training and test images must have the same (C, H, W), got "
            f"{tuple(train_images.shape[1:])} and {tuple(test_images.shape[1:])}"
        )
    bank = sample_bank(train_images, settings)
    return [score_image(img, bank, settings) for img in test_images]
