"""SSIM autoencoder (Bergmann et al., VISAPP 2019; thesis ch. 3;
docs/decisions.md#ssim-ae-protocol).

Architecture = thesis Table 3.1 (encoder; the decoder is its mirror with transposed convolutions):

======  ============  =====================  (input 128×128×C, C = 1: grayscale)
Layer   Output        kernel / stride / pad
======  ============  =====================
Conv1   64×64×32      4×4 / 2 / 1
Conv2   32×32×32      4×4 / 2 / 1
Conv3   32×32×32      3×3 / 1 / 1
Conv4   16×16×64      4×4 / 2 / 1
Conv5   16×16×64      3×3 / 1 / 1
Conv6   8×8×128       4×4 / 2 / 1
Conv7   8×8×64        3×3 / 1 / 1
Conv8   8×8×32        3×3 / 1 / 1
Conv9   1×1×d         8×8 / 1 / 0
======  ============  =====================

LeakyReLU(0.2) after every layer except the encoder output (Conv9, the latent code) and the decoder
output (linear). The decoder applies, in reverse order, one ``ConvTranspose2d`` per encoder layer with
the same kernel/stride/padding and swapped channel counts (d → 32 → 64 → 128 → 64 → 64 → 32 → 32 → 32
→ C), so every decoder layer output has the size of the matching encoder layer input. For 256×256
input (thesis §4.6.1: "an additional convolution layer") one more 4×4/2/1 conv (C → 32 channels,
256 → 128) is put *in front of* Conv1, which then takes 32 channels; the decoder ends with its mirror.

Loss: ``1 − SSIM`` with pytorch-msssim ``SSIM(win_size=11, win_sigma=1.5, K=(0.01, 0.03), data_range=1)``
(the thesis' c1 = 0.01, c2 = 0.03 are read as the usual K1, K2, i.e. C1 = (0.01·L)², C2 = (0.03·L)²
with L = 1 — the convention of every SSIM implementation incl. the one the MVTec baselines used).
Adam lr 2e-4, weight decay 1e-5, batch and epochs are parameters (thesis ch. 3: 64 / 200; ch. 4: 128 /
100, d = 128). Training data (``protocol``; docs/decisions.md#ssim-ae-protocol), ``num_patches``
(thesis 10 000) samples drawn once from the seed:

* ``"crops"`` (textures): random ``input_size`` crops of the training images; textures were
  down-scaled to 256×256 before cropping (``resize_to``);
* ``"whole"`` (objects, thesis ch. 4): whole training images zoomed to ``input_size``, each sample
  with a random rotation about the centre (uniform in ±``max_rotation`` degrees), a random
  translation (uniform in ±``max_translation`` of the side, x and y independently) and, where the
  object permits it (``hflip``/``vflip``), a mirroring with probability 1/2; bilinear resampling,
  border pixels extended (:func:`augment_whole`).

Anomaly map: per-pixel ``1 − SSIM`` between a patch and its reconstruction, computed by
:func:`ssim_map` (standard SSIM formula, 11×11 Gaussian window σ = 1.5 via ``conv2d``); for maps the
inputs are reflect-padded by 5 px ("same" padding) so that the map has the patch's size; ``"valid"``
padding reproduces pytorch-msssim exactly. Whole images are evaluated patch-wise with a stride
(thesis ch. 3: 30, ch. 4 textures: 64) — the last row/column of patches is moved to end at the border
— and the per-pixel values are averaged over all patches covering a pixel. The morphological
post-processing of the thesis (opening, thresholding) is not part of this module.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import SSIM
from torch import nn
from tqdm.auto import tqdm

from ust.data.transforms import resize
from ust.io import atomic_torch_save
from ust.paths import resolve

__all__ = [
    "ENCODER_TABLE",
    "PROTOCOLS",
    "SSIMAE",
    "SSIMAEConfig",
    "augment_whole",
    "gaussian_window",
    "sample_augmentations",
    "ssim_ae_anomaly_map",
    "ssim_map",
    "to_grayscale",
    "train_ssim_ae",
    "training_batch",
]

# (out_channels, kernel, stride, padding) of Conv1..Conv9 (thesis Table 3.1); "d" = latent size.
ENCODER_TABLE: list[tuple[int | str, int, int, int]] = [
    (32, 4, 2, 1),
    (32, 4, 2, 1),
    (32, 3, 1, 1),
    (64, 4, 2, 1),
    (64, 3, 1, 1),
    (128, 4, 2, 1),
    (64, 3, 1, 1),
    (32, 3, 1, 1),
    ("d", 8, 1, 0),
]
CHECKPOINT_NAME = "ssim_ae_last.pt"
#: training-data protocols: random crops (textures) or augmented whole images (objects)
PROTOCOLS = ("crops", "whole")


@dataclass
class SSIMAEConfig:
    """Hyper-parameters of the SSIM-AE (defaults = thesis ch. 3 on textures;
    docs/decisions.md#ssim-ae-protocol).

    ``input_size`` ∈ {128, 256} (256 adds the extra layer). ``resize_to`` rescales the training images
    once before cropping (thesis: 256 for textures; ``None`` = as given). ``K`` = (K1, K2) of SSIM.
    ``protocol`` ∈ :data:`PROTOCOLS`; ``max_rotation`` (degrees), ``max_translation`` (fraction of
    the image side), ``hflip`` and ``vflip`` describe the ``"whole"`` protocol's augmentation and
    are ignored by ``"crops"`` (see the module docstring).
    """

    latent_dim: int = 100
    input_size: int = 128
    in_channels: int = 1
    lr: float = 2e-4
    weight_decay: float = 1e-5
    batch_size: int = 64
    epochs: int = 200
    num_patches: int = 10_000
    resize_to: int | None = None
    win_size: int = 11
    win_sigma: float = 1.5
    K: tuple[float, float] = (0.01, 0.03)
    seed: int = 0
    protocol: str = "crops"
    max_rotation: float = 3.0
    max_translation: float = 0.05
    hflip: bool = False
    vflip: bool = False
    progress: bool = True


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class SSIMAE(nn.Module):
    """Table 3.1 autoencoder: (B, C, S, S) → reconstruction (B, C, S, S), S = ``input_size``.

    ``encoder``: (B, C, S, S) → (B, d, 1, 1); ``decoder``: (B, d, 1, 1) → (B, C, S, S) (linear output,
    not clamped).
    """

    def __init__(self, latent_dim: int = 100, input_size: int = 128, in_channels: int = 1) -> None:
        super().__init__()
        if input_size not in (128, 256):
            raise ValueError(f"input_size must be 128 or 256 (thesis Table 3.1), got {input_size}")
        self.latent_dim = latent_dim
        self.input_size = input_size
        self.in_channels = in_channels
        table = [(c if c != "d" else latent_dim, k, s, p) for c, k, s, p in ENCODER_TABLE]
        if input_size == 256:
            table = [(32, 4, 2, 1), *table]  # the extra layer for 256×256 input, in front of Conv1
        enc: list[nn.Module] = []
        chans = [in_channels]
        for i, (c, k, s, p) in enumerate(table):
            enc.append(nn.Conv2d(chans[-1], c, k, s, p))
            if i < len(table) - 1:
                enc.append(_lrelu())
            chans.append(c)
        dec: list[nn.Module] = []
        for i, (_, k, s, p) in reversed(list(enumerate(table))):
            dec.append(nn.ConvTranspose2d(chans[i + 1], chans[i], k, s, p))
            if i > 0:
                dec.append(_lrelu())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != (s, s):
            raise ValueError(
                f"expected (B, {self.in_channels}, {s}, {s}) input, got {tuple(x.shape)}"
            )
        return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------------------------------
# SSIM map
# --------------------------------------------------------------------------------------------------


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size), the outer product of pytorch-msssim's 1-D kernel."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    win_size: int = 11,
    sigma: float = 1.5,
    K: tuple[float, float] = (0.01, 0.03),
    data_range: float = 1.0,
    padding: str = "same",
) -> torch.Tensor:
    """Per-pixel SSIM (Eq. 3.9, α = β = γ = 1) of (B, C, H, W) image pairs, averaged over channels.

    ``SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``, C1 = (K1·L)²,
    C2 = (K2·L)², L = ``data_range``; local statistics with a Gaussian window (``conv2d``).

    Returns (B, H, W) for ``padding="same"`` (inputs reflect-padded by ``win_size // 2``) or
    (B, H − win + 1, W − win + 1) for ``"valid"`` (whose mean equals ``pytorch_msssim.ssim``). Unitless,
    in [−1, 1]; 1 where the images agree.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of equal shape, got {x.shape}, {y.shape}"
        )
    if win_size % 2 != 1:
        raise ValueError(f"window size must be odd, got {win_size}")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if min(x.shape[-2:]) < (win_size if padding == "valid" else win_size // 2 + 1):
        raise ValueError(f"images {tuple(x.shape[-2:])} too small for a {win_size}² window")
    c = x.shape[1]
    w = gaussian_window(win_size, sigma, x.dtype).to(x.device).expand(c, 1, win_size, win_size)
    if padding == "same":
        r = win_size // 2
        x = F.pad(x, (r, r, r, r), mode="reflect")
        y = F.pad(y, (r, r, r, r), mode="reflect")

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    c1 = (K[0] * data_range) ** 2
    c2 = (K[1] * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=1)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] → (N, 1, H, W) luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B);
    (N, 1, H, W) is returned unchanged."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) images, got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images
    wts = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * wts).sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _crop_positions(n: int, h: int, w: int, size: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (count,), generator=g)
    ys = torch.randint(0, h - size + 1, (count,), generator=g)
    xs = torch.randint(0, w - size + 1, (count,), generator=g)
    return torch.stack([idx, ys, xs], dim=1)


def sample_augmentations(n: int, count: int, config: SSIMAEConfig) -> torch.Tensor:
    """``count`` seeded augmentations of the ``"whole"`` protocol over ``n`` images → (count, 6)
    float64 rows (image index, angle in degrees, x shift, y shift as fractions of the side,
    horizontal flip ∈ {0, 1}, vertical flip ∈ {0, 1}); a flip is 0 unless the config allows it."""
    g = torch.Generator().manual_seed(config.seed)
    idx = torch.randint(0, n, (count,), generator=g).double()
    angle = (2 * torch.rand(count, generator=g, dtype=torch.float64) - 1) * config.max_rotation
    shift = (
        2 * torch.rand(count, 2, generator=g, dtype=torch.float64) - 1
    ) * config.max_translation
    flips = (torch.rand(count, 2, generator=g) < 0.5).double()
    flips *= torch.tensor([float(config.hflip), float(config.vflip)], dtype=torch.float64)
    return torch.cat([idx[:, None], angle[:, None], shift, flips], dim=1)


def augment_whole(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply (B, 6) :func:`sample_augmentations` rows to the (B, C, S, S) images they index.

    Output pixel p (normalised coordinates in [−1, 1]) samples the input at R(angle)·M·p − 2·shift,
    with M the mirroring (x → −x for a horizontal, y → −y for a vertical flip): the content is
    mirrored, rotated about the centre by the angle and moved by ``shift``·S pixels. Bilinear
    resampling, border pixels extended (``grid_sample(padding_mode="border")``). Returns (B, C, S, S).
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square (B, C, S, S) images, got {tuple(images.shape)}")
    p = params.to(torch.float64)
    rad = torch.deg2rad(p[:, 1])
    cos, sin = torch.cos(rad), torch.sin(rad)
    mx, my = 1 - 2 * p[:, 4], 1 - 2 * p[:, 5]
    theta = torch.stack(
        [
            torch.stack([cos * mx, -sin * my, -2 * p[:, 2]], dim=1),
            torch.stack([sin * mx, cos * my, -2 * p[:, 3]], dim=1),
        ],
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _training_images(images: torch.Tensor, config: SSIMAEConfig) -> torch.Tensor:
    """(N, C, H, W) float CPU images, rescaled to ``resize_to`` (``"crops"``) or to ``input_size``
    (``"whole"``); checked against the config."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown SSIM-AE protocol {config.protocol!r}; expected {PROTOCOLS}")
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.dim() != 4 or images.shape[1] != config.in_channels:
        raise ValueError(
            f"expected (N, {config.in_channels}, H, W) training images, got {tuple(images.shape)}"
        )
    images = images.float().cpu()
    s = config.input_size
    if config.protocol == "whole":
        return images if tuple(images.shape[-2:]) == (s, s) else resize(images, s)
    if config.resize_to is not None:
        images = resize(images, config.resize_to)
    h, w = images.shape[-2:]
    if h < s or w < s:
        raise ValueError(f"training images {h}×{w} are smaller than the {s}×{s} patches")
    return images


def _training_samples(images: torch.Tensor, config: SSIMAEConfig) -> torch.Tensor:
    """The ``num_patches`` samples of one run: crop positions (count, 3) or augmentations (count, 6)."""
    n, _, h, w = images.shape
    if config.protocol == "whole":
        return sample_augmentations(n, config.num_patches, config)
    return _crop_positions(n, h, w, config.input_size, config.num_patches, config.seed)


def training_batch(
    images: torch.Tensor, samples: torch.Tensor, config: SSIMAEConfig
) -> torch.Tensor:
    """The (B, C, S, S) network input of B sample rows (crop positions or augmentations)."""
    if config.protocol == "whole":
        return augment_whole(images[samples[:, 0].long()], samples)
    s = config.input_size
    return torch.stack([images[i, :, y : y + s, x : x + s] for i, y, x in samples.tolist()])


def _resume(
    ckpt_path: Path | None, model: SSIMAE, opt: torch.optim.Optimizer, config: SSIMAEConfig, device
) -> tuple[list[dict], int]:
    """(history, epochs done) from ``ssim_ae_last.pt`` when there is one, else a fresh start."""
    if ckpt_path is None or not ckpt_path.is_file():
        return [], 0
    state = torch.load(ckpt_path, map_location=device, weights_only=False)
    ignore = {"epochs", "progress"}
    saved, now, default = state["config"], asdict(config), asdict(SSIMAEConfig())
    # a key the checkpoint lacks (written before it existed) had its default value
    if any(saved.get(k, default[k]) != v for k, v in now.items() if k not in ignore):
        raise ValueError(f"checkpoint {ckpt_path} was written with a different SSIMAEConfig")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return list(state["history"]), int(state["epoch"])


def _train_epoch(
    model: SSIMAE,
    images: torch.Tensor,
    samples: torch.Tensor,
    criterion: nn.Module,
    opt: torch.optim.Optimizer,
    config: SSIMAEConfig,
    epoch: int,
) -> dict:
    """One pass over the training samples in a seeded order; returns the epoch's history record."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    perm = torch.randperm(len(samples), generator=gen)
    total, count = 0.0, 0
    bar = tqdm(
        range(0, len(samples), config.batch_size),
        desc=f"SSIM-AE epoch {epoch + 1}/{config.epochs}",
        disable=not config.progress,
        leave=False,
    )
    for b0 in bar:
        x = training_batch(images, samples[perm[b0 : b0 + config.batch_size]], config).to(device)
        loss = 1.0 - criterion(x, model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return {"epoch": epoch + 1, "loss": total / count, "seconds": time.perf_counter() - t0}


def train_ssim_ae(
    images: torch.Tensor,
    config: SSIMAEConfig | None = None,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
) -> tuple[SSIMAE, list[dict]]:
    """Train the SSIM-AE on ``num_patches`` samples of defect-free images: random ``input_size``
    crops (``protocol="crops"``) or augmented whole images (``"whole"``).

    Args:
        images: (N, C, H, W) float images in [0, 1], C = ``config.in_channels`` (use
            :func:`to_grayscale` for RGB); crops: H, W ≥ ``input_size`` (after ``resize_to``);
            whole images: zoomed to ``input_size``² here if they are not already.
        config: :class:`SSIMAEConfig`.
        device: torch device.
        checkpoint_dir: if given, ``ssim_ae_last.pt`` is written atomically after every epoch and
            resumed from (same config apart from ``epochs``/``progress``).

    Returns:
        (model in eval mode, history) — one dict per epoch with ``epoch``, ``loss`` (mean 1 − SSIM
        over the epoch's batches) and ``seconds``.
    """
    config = config or SSIMAEConfig()
    images = _training_images(images, config)
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SSIMAE(config.latent_dim, config.input_size, config.in_channels)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = SSIM(
        data_range=1.0,
        win_size=config.win_size,
        win_sigma=config.win_sigma,
        K=config.K,
        channel=config.in_channels,
    ).to(device)
    samples = _training_samples(images, config)
    ckpt_path = Path(resolve(checkpoint_dir)) / CHECKPOINT_NAME if checkpoint_dir else None
    history, start_epoch = _resume(ckpt_path, model, opt, config, device)

    model.train()
    for epoch in range(start_epoch, config.epochs):
        history.append(_train_epoch(model, images, samples, criterion, opt, config, epoch))
        if ckpt_path is not None:
            atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": history,
                    "config": asdict(config),
                },
                ckpt_path,
            )
    model.eval()
    return model, history


# --------------------------------------------------------------------------------------------------
# Anomaly maps
# --------------------------------------------------------------------------------------------------


def _grid(size: int, patch: int, stride: int) -> list[int]:
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


@torch.no_grad()
def ssim_ae_anomaly_map(
    model: SSIMAE,
    image: torch.Tensor,
    patch: int | None = None,
    stride: int = 30,
    batch_size: int = 32,
    win_size: int = 11,
    K: tuple[float, float] = (0.01, 0.03),
) -> torch.Tensor:
    """Per-pixel 1 − SSIM anomaly map of one image, evaluated patch-wise and averaged over overlaps.

    Args:
        model: trained :class:`SSIMAE`.
        image: (C, H, W) float image in [0, 1] (C = the model's channels), H, W ≥ ``patch``.
        patch: patch side; must equal ``model.input_size`` (default).
        stride: step between patches in pixels (thesis ch. 3: 30); the last patch of each row/column
            ends at the image border.
        batch_size: patches per forward pass.
        win_size, K: SSIM window and constants (same padding, Gaussian σ = 1.5).

    Returns:
        (H, W) float tensor on the CPU, values in [0, 2] (0 = perfect reconstruction).
    """
    patch = model.input_size if patch is None else int(patch)
    if patch != model.input_size:
        raise ValueError(f"patch must equal the model's input size {model.input_size}, got {patch}")
    if image.dim() != 3 or image.shape[0] != model.in_channels:
        raise ValueError(f"expected a ({model.in_channels}, H, W) image, got {tuple(image.shape)}")
    _, h, w = image.shape
    if h < patch or w < patch:
        raise ValueError(f"image {h}×{w} is smaller than the {patch}×{patch} patch")
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, got {stride}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    img = image.float().to(device)
    pos = [(y, x) for y in _grid(h, patch, stride) for x in _grid(w, patch, stride)]
    acc = torch.zeros(h, w, dtype=torch.float64, device=device)
    cnt = torch.zeros(h, w, dtype=torch.float64, device=device)
    for b0 in range(0, len(pos), batch_size):
        chunk = pos[b0 : b0 + batch_size]
        x = torch.stack([img[:, y : y + patch, xx : xx + patch] for y, xx in chunk])
        amap = 1.0 - ssim_map(x, model(x), win_size=win_size, K=K, padding="same")
        for (y, xx), m in zip(chunk, amap, strict=True):
            acc[y : y + patch, xx : xx + patch] += m
            cnt[y : y + patch, xx : xx + patch] += 1
    model.train(was_training)
    return (acc / cnt).float().cpu()
