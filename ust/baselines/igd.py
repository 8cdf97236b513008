"""IGD — Interpolated Gaussian Descriptor (Chen et al., AAAI 2022; docs/decisions.md#igd).

Model: an encoder ``z = f_ψ(x) ∈ R^Z`` (Z = 128, torchvision ResNet-18 trunk, global
average pool, linear 512 → Z), a decoder ``x̂ = g_φ(z)`` (the reversed ResNet-18: linear → 512-channel
feature map → residual up-sampling stages mirroring ``layer4 … layer1`` → stem mirror → sigmoid, so
``x̂ ∈ [0, 1]``), a Gaussian anomaly classifier ``p(y=0|ω,x) = exp(−‖f(x) − ω(1)‖² / ω(2)²)`` (Eq. 5)
and a critic ``d_η`` (small strided LeakyReLU conv net, output ``0.5·sigmoid`` so ``α̂ ∈ (0, 0.5)``).

Training (EM):

* **E-step** — ``ω(1) = μ_x = E[f(x)]``, ``ω(2) = σ_x`` with ``σ_x² = E‖f(x) − μ_x‖²`` over the whole
  training set, computed with the *current* encoder. "θ_old = the previous EM iteration" is read as
  **one E-step per epoch**: the first before epoch 1, then before every later epoch — with the
  BatchNorm layers in batch-statistics mode (running statistics untouched), i.e. on the same embedding
  that ℓ_h sees during training — and a final one after the last epoch in eval mode, so that the stored
  ω matches the embedding used for scoring (see :func:`estep`). (The authors' code re-estimates every
  10 epochs; one per epoch is the literal, cheap reading.)
* **M-step** — every mini-batch makes two alternating (1:1, GAN-style) updates from one forward pass:

  1. auto-encoder + encoder step on ``ℓ_h + λ2·ℓ_{f,g}`` with ``ℓ_h = 1 − p(y=0|ω,x)`` (Eq. 8),
     ``ℓ_{f,g} = ℓ_r(x, x̂) + λ3·‖d(x̂_α)‖²`` (Eq. 11), ``x̂_α = g(α z1 + (1−α) z2)``,
     ``α ~ U(0, 0.5)`` per sample and ``z2`` = the batch rolled by one (so ``x1 ≠ x2``);
  2. critic step on ``λ1·ℓ_d`` with ``ℓ_d = ‖d(x̂_α) − α‖² + ‖d(x̂_ζ)‖²`` (Eq. 10),
     ``x̂_ζ = ζ x + (1−ζ) x̂``, ``ζ ~ U(0, 1)`` per sample, using the (detached) ``x̂_α`` and ``x̂``
     of the same forward pass (as in ACAI).

  All terms are per-sample means over the batch (the 1/|D| of Eq. 7).
* ``ℓ_r = ρ·MAE + (1−ρ)·(1 − MS-SSIM)`` (Eq. 12, ρ = 0.15), both as means over pixels (and channels)
  of images in [0, 1] (``data_range = 1``). MS-SSIM is computed level by level with pytorch-msssim's own
  SSIM kernel (``pytorch_msssim.ssim._ssim``, Gaussian window σ = 1.5, K = (0.01, 0.03)); the number of
  scales and the window fit the image (:func:`msssim_settings`): the standard 5 scales with an 11×11
  window when the shorter side exceeds 160 px (there the value equals ``pytorch_msssim.ms_ssim``),
  otherwise a 3×3 window and as many scales as keep the coarsest level ≥ 4 px (32×32 → 4 scales,
  weights = the first 4 standard weights renormalised, which is exactly what the authors' code uses
  for 32×32 patches). pytorch-msssim's ``ms_ssim`` itself asserts ``side > 16·(win − 1)`` and therefore
  cannot run on 32×32 images. Negative cs/SSIM values are clamped at 1e-6 instead of 0 (ReLU) so that
  the fractional powers never produce NaN gradients.
* Adam (lr 1e-4, weight decay 1e-6) for the auto-encoder+encoder and, separately, for the critic;
  batch 64; ``epochs`` is a parameter (paper 256). There is no epoch selection: the last epoch is used.

BatchNorm statistics for scoring: after the last epoch the running mean/variance of every BatchNorm
layer are recomputed on the training images (:func:`recompute_bn`: a no-grad pass in train mode with
``momentum=None``, i.e. the average of the per-batch statistics), then ω is re-estimated in eval
mode. Without it the running statistics after a short run are still mostly their initial 0/1 values
(momentum 0.1: after k steps a fraction 0.9^k of the initial value remains).

Score (Eq. 13–15): global ``s_G(x) = ℓ_r(x, x̂) + ℓ_h(x)`` (:func:`score_igd`); local
``s_L(x) = max_ω [ℓ_r + ℓ_h](x^(L)(ω))`` of a second IGD trained on patches
(:func:`train_igd_local` on all grid patches of :func:`extract_patches`; :func:`score_igd_local`
takes the max over the same grid); fused ``s = s_G + s_L`` (:func:`fused_scores`). Higher = more
anomalous.

Input conventions: images are float tensors (N, 3, H, W) in [0, 1] (1-channel input is replicated);
the encoder applies the ImageNet mean/std normalisation internally (``ust.data.transforms``), the
decoder predicts [0, 1] images.

ImageNet-KD variant: ``pretrained=True`` initialises the encoder trunk from torchvision's
ImageNet ResNet-18 weights (standard 7×7/stride-2 stem + max-pool) loaded from a local file — either
``pretrained_path`` or torchvision's hub cache ``<torch.hub.get_dir()>/checkpoints/resnet18-f37072fd.pth``
— and raises :class:`FileNotFoundError` naming the expected path when it is missing; it never falls
back to random weights. The paper's 50 000-iteration knowledge distillation into a from-scratch
encoder is out of scope: copying the ImageNet trunk is the practical equivalent (the KD target *is*
that trunk's 512-d feature).

Determinism: parameters are initialised from ``seed`` (in a forked RNG, the global RNG is untouched);
every epoch draws its shuffling, α and ζ from a ``torch.Generator`` seeded with ``(seed, epoch)``, so a
run resumed from a per-epoch checkpoint is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torch import nn
from tqdm.auto import tqdm

from ust.data.transforms import imagenet_normalize, to_three_channels
from ust.io import atomic_torch_save
from ust.paths import resolve
from ust.train.live import log_step, replay

__all__ = [
    "IGD",
    "IGDConfig",
    "IGDCritic",
    "IGDDecoder",
    "IGDEncoder",
    "RESNET18_IMAGENET_FILE",
    "extract_patches",
    "gaussian_normal_prob",
    "gaussian_params",
    "igd_score_components",
    "imagenet_resnet18_path",
    "ms_ssim_per_image",
    "msssim_settings",
    "reconstruction_loss",
    "score_igd",
    "score_igd_local",
    "IGDLocalSettings",
    "fused_scores",
    "recompute_bn",
    "train_igd",
    "train_igd_local",
]

RESNET18_IMAGENET_FILE = "resnet18-f37072fd.pth"
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_CLAMP = 1e-6
CHECKPOINT_NAME = "igd_last.pt"


@dataclass
class IGDConfig:
    """Hyper-parameters of IGD (defaults = the IGD paper; ``stem`` and the critic are ours,
    docs/decisions.md#igd).

    ``stem``: ``"cifar"`` (3×3 conv stride 1, no max-pool; total down-sampling 8, for 32×32 input) or
    ``"imagenet"`` (torchvision's 7×7 stride-2 conv + max-pool; down-sampling 32). ``None`` picks
    ``"imagenet"`` when ``pretrained`` else ``"cifar"``. ``image_size`` is (H, W) or one int and must be
    divisible by the down-sampling factor. ``msssim_win_size``/``msssim_levels`` override
    :func:`msssim_settings`. ``sigma_eps`` floors σ_x² (guards a collapsed embedding).
    ``recompute_bn``: after the last epoch, replace the BatchNorm running statistics by those of
    the training images (:func:`recompute_bn`) before the final E-step (docs/decisions.md#igd).
    """

    image_size: int | tuple[int, int] = 32
    latent_dim: int = 128
    stem: str | None = None
    pretrained: bool = False
    pretrained_path: str | None = None
    critic_width: int = 32
    rho: float = 0.15
    lambda1: float = 1.0
    lambda2: float = 1.0
    lambda3: float = 0.1
    alpha_max: float = 0.5
    lr: float = 1e-4
    weight_decay: float = 1e-6
    critic_lr: float = 1e-4
    critic_weight_decay: float = 1e-6
    batch_size: int = 64
    epochs: int = 256
    seed: int = 0
    msssim_win_size: int | None = None
    msssim_levels: int | None = None
    sigma_eps: float = 1e-8
    estep_batch_size: int = 256
    recompute_bn: bool = True
    progress: bool = True

    def hw(self) -> tuple[int, int]:
        s = self.image_size
        return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))

    def resolved_stem(self) -> str:
        stem = self.stem if self.stem is not None else ("imagenet" if self.pretrained else "cifar")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        if self.pretrained and stem != "imagenet":
            raise ValueError("pretrained ImageNet weights need the standard 'imagenet' stem")
        return stem


# --------------------------------------------------------------------------------------------------
# MS-SSIM reconstruction loss (Eq. 12)
# --------------------------------------------------------------------------------------------------


def msssim_settings(height: int, width: int) -> tuple[int, int]:
    """(window size, number of scales) of MS-SSIM for an H×W image (see the module docstring).

    Shorter side > 160 px: (11, 5) — the standard MS-SSIM. Otherwise (3, L) with the largest
    L ≤ 5 such that the coarsest scale is still ≥ 4 px (32 → 4 scales, 16 → 3, 8 → 2, 4..7 → 1).
    """
    side = min(int(height), int(width))
    if side > (11 - 1) * 2**4:
        return 11, 5
    if side < 3:
        raise ValueError(f"images of {height}×{width} px are too small for SSIM (need ≥ 3 px)")
    levels = 1
    while levels < 5 and side // 2**levels >= 4:
        levels += 1
    return 3, levels


def ms_ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    win_size: int | None = None,
    levels: int | None = None,
    data_range: float = 1.0,
    K: tuple[float, float] = (0.01, 0.03),
) -> torch.Tensor:
    """MS-SSIM of each image pair, (B, C, H, W) × (B, C, H, W) → (B,), unitless in (0, 1].

    Uses pytorch-msssim's SSIM kernel per scale (Gaussian window σ = 1.5, valid convolution,
    2×2 average pooling between scales) with the first ``levels`` standard weights renormalised to 1.
    cs/SSIM are clamped at 1e-6 (pytorch-msssim uses ReLU) to keep gradients finite. With (11, 5)
    and positive values this equals ``pytorch_msssim.ms_ssim(x, y, data_range, size_average=False)``.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of equal shape, got {x.shape}, {y.shape}"
        )
    auto_win, auto_levels = msssim_settings(x.shape[-2], x.shape[-1])
    win_size = auto_win if win_size is None else int(win_size)
    levels = auto_levels if levels is None else int(levels)
    if not 1 <= levels <= len(MSSSIM_WEIGHTS):
        raise ValueError(f"levels must be in 1..5, got {levels}")
    if win_size % 2 != 1:
        raise ValueError(f"window size must be odd, got {win_size}")
    if min(x.shape[-2:]) // 2 ** (levels - 1) < win_size:
        raise ValueError(
            f"{tuple(x.shape[-2:])} images are too small for {levels} scales with a {win_size}² window"
        )
    weights = x.new_tensor(MSSSIM_WEIGHTS[:levels])
    if levels < len(MSSSIM_WEIGHTS):
        weights = weights / weights.sum()
    win = _fspecial_gauss_1d(win_size, 1.5).repeat([x.shape[1], 1, 1, 1])
    values = []
    for i in range(levels):
        ssim_pc, cs = _ssim(x, y, data_range=data_range, win=win, size_average=False, K=K)
        if i < levels - 1:
            values.append(cs.clamp_min(_CLAMP))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    values.append(ssim_pc.clamp_min(_CLAMP))
    stacked = torch.stack(values, dim=0)  # (levels, B, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(dim=1)


def reconstruction_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    rho: float = 0.15,
    win_size: int | None = None,
    levels: int | None = None,
) -> torch.Tensor:
    """ℓ_r of Eq. 12 per image: ρ·mean|x − x̂| + (1 − ρ)·(1 − MS-SSIM(x, x̂)) → (B,), images in [0, 1]."""
    mae = (x - x_hat).abs().flatten(1).mean(dim=1)
    return rho * mae + (1.0 - rho) * (1.0 - ms_ssim_per_image(x, x_hat, win_size, levels))


# --------------------------------------------------------------------------------------------------
# Gaussian anomaly classifier and E-step (Eq. 3, 5)
# --------------------------------------------------------------------------------------------------


def gaussian_params(
    embeddings: torch.Tensor, eps: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step statistics of (N, Z) embeddings: μ = mean embedding (Z,), σ = sqrt(E‖z − μ‖²) (scalar).

    ``eps`` floors σ² (only to avoid a division by zero for a collapsed embedding).
    """
    if embeddings.dim() != 2 or embeddings.shape[0] < 1:
        raise ValueError(f"expected (N, Z) embeddings with N ≥ 1, got {tuple(embeddings.shape)}")
    e = embeddings.double()
    mu = e.mean(dim=0)
    sigma2 = ((e - mu) ** 2).sum(dim=1).mean().clamp_min(eps)
    return mu.to(embeddings.dtype), sigma2.sqrt().to(embeddings.dtype)


def gaussian_normal_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """p(y=0 | ω, x) = exp(−‖z − μ‖² / σ²) (Eq. 5) for (B, Z) embeddings → (B,) in (0, 1]."""
    if z.dim() != 2 or z.shape[1] != mu.shape[-1]:
        raise ValueError(f"expected (B, {mu.shape[-1]}) embeddings, got {tuple(z.shape)}")
    return torch.exp(-((z - mu) ** 2).sum(dim=1) / sigma**2)


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def imagenet_resnet18_path(path: str | os.PathLike | None = None) -> Path:
    """Where the ImageNet ResNet-18 weights are expected: ``path`` (resolved against the repository
    root) or ``<torch.hub.get_dir()>/checkpoints/resnet18-f37072fd.pth``. Existence is not checked."""
    if path is not None:
        return resolve(path)
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_IMAGENET_FILE


class IGDEncoder(nn.Module):
    """f_ψ: (B, 3, H, W) images in [0, 1] → (B, Z) embeddings.

    torchvision ResNet-18 (``weights=None``) with ``fc`` replaced by the identity (512-d global
    average pool) followed by ``nn.Linear(512, Z)``. ``stem="cifar"`` replaces ``conv1`` by a 3×3
    stride-1 conv and drops the max-pool (down-sampling 8); ``"imagenet"`` keeps torchvision's stem
    (down-sampling 32). The input is ImageNet-normalised inside ``forward``.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        stem: str = "cifar",
        pretrained: bool = False,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        trunk = torchvision.models.resnet18(weights=None)
        if pretrained:
            if stem != "imagenet":
                raise ValueError("pretrained ImageNet weights need the standard 'imagenet' stem")
            path = imagenet_resnet18_path(pretrained_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"ImageNet ResNet-18 weights requested but not found; put torchvision's "
                    f"'{RESNET18_IMAGENET_FILE}' (ResNet18_Weights.IMAGENET1K_V1) at: {path}"
                )
            if pretrained_path is None:
                from ust.method.distillation import check_hub_file

                check_hub_file(path)  # a foreign file under torchvision's name is refused
            state = torch.load(path, map_location="cpu", weights_only=True)
            trunk.load_state_dict(state)
        if stem == "cifar":
            trunk.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
            trunk.maxpool = nn.Identity()
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.fc = nn.Linear(512, latent_dim)
        self.stem = stem
        self.downsample = 8 if stem == "cifar" else 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(imagenet_normalize(x)))


class _UpBlock(nn.Module):
    """Mirror of torchvision's BasicBlock: (B, C_in, h, w) → (B, C_out, s·h, s·w), s ∈ {1, 2}."""

    def __init__(self, c_in: int, c_out: int, upsample: bool) -> None:
        super().__init__()
        if upsample:
            self.conv1 = nn.ConvTranspose2d(
                c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False
            )
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        if upsample or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.ConvTranspose2d(
                    c_in,
                    c_out,
                    1,
                    stride=2 if upsample else 1,
                    output_padding=1 if upsample else 0,
                    bias=False,
                ),
                nn.BatchNorm2d(c_out),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class IGDDecoder(nn.Module):
    """g_φ: (B, Z) → (B, 3, H, W) images in [0, 1] — the reversed ResNet-18.

    Linear Z → 512·(H/s)·(W/s) (s = the encoder's down-sampling), reshaped to a 512-channel map, then
    four stages of two residual blocks mirroring ``layer4 … layer1`` (512→256, 256→128, 128→64 with
    ×2 transposed-conv up-sampling in the second block, 64→64 without), then the stem mirror
    (``"cifar"``: 3×3 conv 64 → 3; ``"imagenet"``: ×2 transposed conv for the max-pool and a ×2 7×7
    transposed conv 64 → 3) and a sigmoid.
    """

    def __init__(self, image_size: tuple[int, int], latent_dim: int = 128, stem: str = "cifar"):
        super().__init__()
        ds = 8 if stem == "cifar" else 32
        h, w = image_size
        if h % ds or w % ds:
            raise ValueError(f"image size {h}×{w} must be divisible by {ds} for the '{stem}' stem")
        self.h0, self.w0 = h // ds, w // ds
        self.fc = nn.Linear(latent_dim, 512 * self.h0 * self.w0)
        self.stages = nn.Sequential(
            _UpBlock(512, 512, False),
            _UpBlock(512, 256, True),
            _UpBlock(256, 256, False),
            _UpBlock(256, 128, True),
            _UpBlock(128, 128, False),
            _UpBlock(128, 64, True),
            _UpBlock(64, 64, False),
            _UpBlock(64, 64, False),
        )
        if stem == "cifar":
            self.head = nn.Conv2d(64, 3, 3, stride=1, padding=1)
        else:
            self.head = nn.Sequential(
                nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(64, 3, 7, stride=2, padding=3, output_padding=1),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fc(z).view(z.shape[0], 512, self.h0, self.w0)
        return torch.sigmoid(self.head(self.stages(out)))


class IGDCritic(nn.Module):
    """d_η: (B, 3, H, W) images → (B,) interpolation coefficient α̂ = 0.5·sigmoid(·) ∈ (0, 0.5).

    Strided 4×4 convs (stride 2, LeakyReLU 0.2, widths w, 2w, 4w, … ≤ 256) until the map is ≤ 4 px,
    then global average pooling and a linear layer.
    """

    def __init__(self, image_size: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c, side = 3, width, min(image_size)
        while True:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c_in, side = c, side // 2
            if side <= 4:
                break
            c = min(2 * c, 256)
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).mean(dim=(2, 3))
        return 0.5 * torch.sigmoid(self.out(f)).squeeze(1)


class IGD(nn.Module):
    """Encoder + decoder + critic + the Gaussian parameters ω = (μ, σ) stored as buffers."""

    def __init__(self, config: IGDConfig | None = None) -> None:
        super().__init__()
        config = config or IGDConfig()
        self.config = config
        stem = config.resolved_stem()
        self.image_size = config.hw()
        self.encoder = IGDEncoder(
            config.latent_dim, stem, config.pretrained, config.pretrained_path
        )
        self.decoder = IGDDecoder(self.image_size, config.latent_dim, stem)
        self.critic = IGDCritic(self.image_size, config.critic_width)
        self.register_buffer("mu", torch.zeros(config.latent_dim))
        self.register_buffer("sigma", torch.ones(()))

    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        """Validate (B, 1|3, H, W) input of the configured size; return it as 3-channel float."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"expected {self.image_size[0]}×{self.image_size[1]} images, got {tuple(x.shape[-2:])}"
            )
        return to_three_channels(x.float())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, Z)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z) → (B, 3, H, W) in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] → (z (B, Z), x̂ (B, 3, H, W))."""
        z = self.encoder(x)
        return z, self.decoder(z)

    def normal_prob(self, z: torch.Tensor) -> torch.Tensor:
        """p(y=0 | ω, x) for (B, Z) embeddings with the stored ω → (B,)."""
        return gaussian_normal_prob(z, self.mu, self.sigma)

    def rec_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """ℓ_r per image (B,) with this model's ρ and MS-SSIM settings."""
        c = self.config
        return reconstruction_loss(x, x_hat, c.rho, c.msssim_win_size, c.msssim_levels)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _check_train_images(images: torch.Tensor, config: IGDConfig) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected training images (N, 3, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != config.hw():
        raise ValueError(
            f"config.image_size is {config.hw()} but images are {tuple(images.shape[-2:])}"
        )
    if images.shape[0] < 2:
        raise ValueError("IGD needs at least 2 training images (x1 ≠ x2 for the interpolation)")
    return to_three_channels(images.float())


@torch.no_grad()
def estep(
    model: IGD, images: torch.Tensor, batch_size: int = 256, bn: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: set ``model.mu``/``model.sigma`` from the current encoder over (N, 3, H, W) images.

    ``bn="eval"`` runs the encoder in eval mode (BatchNorm running statistics — the embedding used for
    scoring). ``bn="batch"`` uses per-batch BatchNorm statistics *without* touching the running
    statistics, i.e. the same embedding as in the training forward passes; training uses it for the
    per-epoch E-steps so that ω describes the embeddings ℓ_h is computed on (at initialisation the
    running statistics are 0/1 and the two embeddings differ by orders of magnitude). Returns
    (μ (Z,), σ scalar); the model's modes are restored.
    """
    if bn not in ("eval", "batch"):
        raise ValueError(f"bn must be 'eval' or 'batch', got {bn!r}")
    was_training = model.training
    device = model.mu.device
    n_chunks = max(1, -(-len(images) // batch_size))
    chunks = torch.arange(len(images)).tensor_split(n_chunks)  # no trailing 1-image batch
    bns = [m for m in model.encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn == "eval":
        model.eval()
    else:
        model.train()
        for m in bns:
            m.track_running_stats = False  # batch statistics, running buffers left untouched
    try:
        zs = [model.encode(images[idx].to(device)) for idx in chunks]
    finally:
        for m in bns:
            m.track_running_stats = True
        model.train(was_training)
    mu, sigma = gaussian_params(torch.cat(zs), eps=model.config.sigma_eps)
    model.mu.copy_(mu)
    model.sigma.copy_(sigma)
    return mu, sigma


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn(model: IGD, images: torch.Tensor, batch_size: int = 64) -> int:
    """Replace every BatchNorm layer's running statistics by those of the training images
    (docs/decisions.md#igd).

    The running buffers are reset, ``momentum`` is set to ``None`` (cumulative average) and the
    auto-encoder (encoder, then decoder) runs once over (N, 3, H, W) ``images`` in train mode, in
    ``ceil(N / batch_size)`` near-equal batches (``tensor_split``, no trailing 1-image batch), without
    gradients. Afterwards each layer's ``running_mean`` is the mean of its per-batch means (the
    training-set mean of its input when the batches are equal) and ``running_var`` the mean of its
    per-batch unbiased variances — what ``torch.optim.swa_utils.update_bn`` computes. Momenta and
    the model's mode are restored; the critic has no BatchNorm. Returns the number of batches.
    """
    bns = _batch_norms(model)
    momenta = [m.momentum for m in bns]
    was_training = model.training
    device = model.mu.device
    n_chunks = max(1, -(-len(images) // batch_size))
    chunks = torch.arange(len(images)).tensor_split(n_chunks)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for idx in chunks:
            model(images[idx].to(device))
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(chunks)


def _config_compatible(saved: dict, config: IGDConfig) -> bool:
    now = asdict(config)
    ignore = {"epochs", "progress", "estep_batch_size", "recompute_bn"}  # not in the saved state
    return all(saved.get(k) == v for k, v in now.items() if k not in ignore)


def _init_training(config: IGDConfig, device: torch.device) -> tuple[IGD, tuple]:
    """(model, (auto-encoder + encoder optimiser, critic optimiser)); parameters seeded in a forked
    RNG, so the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = IGD(config)
    model.to(device)
    ae_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt_ae = torch.optim.Adam(ae_params, lr=config.lr, weight_decay=config.weight_decay)
    opt_c = torch.optim.Adam(
        model.critic.parameters(), lr=config.critic_lr, weight_decay=config.critic_weight_decay
    )
    return model, (opt_ae, opt_c)


def _resume(
    ckpt_path: Path | None, model: IGD, opts: tuple, config: IGDConfig, device: torch.device
) -> tuple[list[dict], int]:
    """(history, epochs done) from ``igd_last.pt`` when there is one, else a fresh start."""
    if ckpt_path is None or not ckpt_path.is_file():
        return [], 0
    state = torch.load(ckpt_path, map_location=device, weights_only=False)
    if not _config_compatible(state["config"], config):
        raise ValueError(f"checkpoint {ckpt_path} was written with a different IGDConfig")
    model.load_state_dict(state["model"])
    opts[0].load_state_dict(state["opt_ae"])
    opts[1].load_state_dict(state["opt_critic"])
    return list(state["history"]), int(state["epoch"])


def _batch_starts(n: int, batch_size: int) -> list[int]:
    starts = list(range(0, n, batch_size))
    if n - starts[-1] < 2:  # a 1-image batch cannot form a pair x1 ≠ x2
        starts = starts[:-1]
    return starts


def _m_step(
    model: IGD,
    x: torch.Tensor,
    alpha: torch.Tensor,
    zeta: torch.Tensor,
    config: IGDConfig,
    opts: tuple,
) -> dict[str, torch.Tensor]:
    """The two alternating updates of one mini-batch; returns the (batch-mean) loss terms."""
    opt_ae, opt_c = opts
    # (1) auto-encoder + encoder step: ℓ_h + λ2 (ℓ_r + λ3 ‖d(x̂_α)‖²)
    model.critic.requires_grad_(False)
    z, x_hat = model(x)
    l_h = (1.0 - model.normal_prob(z)).mean()
    l_r = model.rec_loss(x, x_hat).mean()
    z_mix = alpha[:, None] * z + (1.0 - alpha[:, None]) * z.roll(1, dims=0)
    x_alpha = model.decode(z_mix)
    l_adv = model.critic(x_alpha).pow(2).mean()
    loss = l_h + config.lambda2 * (l_r + config.lambda3 * l_adv)
    opt_ae.zero_grad(set_to_none=True)
    loss.backward()
    opt_ae.step()
    model.critic.requires_grad_(True)

    # (2) critic step: λ1 (‖d(x̂_α) − α‖² + ‖d(ζ x + (1 − ζ) x̂)‖²)
    x_zeta = zeta * x + (1.0 - zeta) * x_hat.detach()
    l_d = (model.critic(x_alpha.detach()) - alpha).pow(2).mean() + model.critic(x_zeta).pow(
        2
    ).mean()
    opt_c.zero_grad(set_to_none=True)
    (config.lambda1 * l_d).backward()
    opt_c.step()
    return {"loss": loss, "l_h": l_h, "l_r": l_r, "l_adv": l_adv, "l_d": l_d}


def _train_epoch(
    model: IGD, images: torch.Tensor, config: IGDConfig, opts: tuple, epoch: int
) -> dict:
    """E-step, then one M-step pass over the training set; returns the epoch's history record."""
    t0 = time.perf_counter()
    device = model.mu.device
    estep(model, images, config.estep_batch_size, bn="batch")
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    perm = torch.randperm(len(images), generator=gen)
    bs = config.batch_size
    model.train()
    sums = dict.fromkeys(("loss", "l_h", "l_r", "l_adv", "l_d"), 0.0)
    count = 0
    bar = tqdm(
        _batch_starts(len(images), bs),
        desc=f"IGD epoch {epoch + 1}/{config.epochs}",
        disable=not config.progress,
        leave=False,
    )
    for s in bar:
        x = images[perm[s : s + bs]].to(device)
        b = x.shape[0]
        alpha = (torch.rand(b, generator=gen) * config.alpha_max).to(device)
        zeta = torch.rand(b, 1, 1, 1, generator=gen).to(device)
        vals = _m_step(model, x, alpha, zeta, config, opts)
        for k, v in vals.items():
            sums[k] += v.item() * b
        count += b
        bar.set_postfix(loss=f"{vals['loss'].item():.4f}", l_d=f"{vals['l_d'].item():.4f}")
    record = {"epoch": epoch + 1, **{k: v / count for k, v in sums.items()}}
    record["mu_norm"] = float(model.mu.norm())
    record["sigma"] = float(model.sigma)
    record["seconds"] = time.perf_counter() - t0
    return record


def _live_metrics(record: dict) -> dict:
    """dvclive metrics of an epoch record (its losses and ω; not the wall-clock seconds)."""
    return {k: v for k, v in record.items() if k not in ("epoch", "seconds")}


def train_igd(
    train_images: torch.Tensor,
    config: IGDConfig | None = None,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    live_dir: str | os.PathLike | None = None,
) -> tuple[IGD, list[dict]]:
    """Train a (global) IGD model on normal images; return (model in eval mode, per-epoch history).

    Args:
        train_images: (N, 3, H, W) float images in [0, 1] (1-channel is replicated); H×W must equal
            ``config.image_size``. Kept on the CPU, batches are moved to ``device``.
        config: :class:`IGDConfig` (paper defaults; ``epochs`` = 256 in the paper).
        device: torch device for the networks.
        checkpoint_dir: if given, ``igd_last.pt`` is written atomically after every epoch and an existing
            one (same config apart from ``epochs``) is resumed from; a finished run is just loaded.
        live_dir: if given, every epoch's record (without ``epoch`` and ``seconds``) is also logged
            to dvclive there at step ``epoch`` (:mod:`ust.train.live`); a resumed run rewrites the
            folder from the checkpoint's history first.

    Returns:
        The model (eval mode; BatchNorm statistics recomputed on ``train_images`` when
        ``config.recompute_bn``, :func:`recompute_bn`; ω from a final E-step in eval mode) and a
        list with one dict per epoch: ``epoch``,
        ``loss`` (ℓ_h + λ2 ℓ_{f,g}), ``l_h``, ``l_r``, ``l_adv`` (‖d(x̂_α)‖²), ``l_d`` (critic), ``mu_norm``
        and ``sigma`` (ω used in that epoch), ``seconds``.
    """
    config = config or IGDConfig()
    images = _check_train_images(train_images, config).cpu()
    device = torch.device(device)
    model, opts = _init_training(config, device)
    ckpt_path = Path(resolve(checkpoint_dir)) / CHECKPOINT_NAME if checkpoint_dir else None
    history, start_epoch = _resume(ckpt_path, model, opts, config, device)
    live = replay(live_dir, ((r["epoch"], _live_metrics(r)) for r in history))

    for epoch in range(start_epoch, config.epochs):
        record = _train_epoch(model, images, config, opts, epoch)
        history.append(record)
        log_step(live, record["epoch"], _live_metrics(record))
        if ckpt_path is not None:
            atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "opt_ae": opts[0].state_dict(),
                    "opt_critic": opts[1].state_dict(),
                    "history": history,
                    "config": asdict(config),
                },
                ckpt_path,
            )
    if config.recompute_bn:
        recompute_bn(model, images, config.batch_size)  # running statistics of the final weights
    estep(model, images, config.estep_batch_size, bn="eval")  # ω of the final encoder, for scoring
    model.eval()
    return model, history


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def igd_score_components(
    model: IGD, images: torch.Tensor, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Per-image ``rec`` = ℓ_r(x, x̂), ``gac`` = ℓ_h(x) = 1 − p(y=0|ω,x) and ``total`` = their sum (Eq. 14).

    Args:
        model: a trained :class:`IGD` (evaluated in eval mode; its mode is restored).
        images: (N, 3, H, W) in [0, 1] of the model's image size.
    Returns:
        dict of (N,) float64 arrays (unitless; higher = more anomalous).
    """
    images = model.check_images(images)
    was_training = model.training
    model.eval()
    device = model.mu.device
    rec, gac = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        z, x_hat = model(x)
        rec.append(model.rec_loss(x, x_hat).double().cpu())
        gac.append((1.0 - model.normal_prob(z)).double().cpu())
    model.train(was_training)
    r = torch.cat(rec).numpy() if rec else np.zeros(0)
    g = torch.cat(gac).numpy() if gac else np.zeros(0)
    return {"rec": r, "gac": g, "total": r + g}


def score_igd(model: IGD, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Global IGD anomaly score s(x) = ℓ_r(x, x̂) + ℓ_h(x) (Eq. 14) of (N, 3, H, W) images in [0, 1]
    → (N,) float64, higher = more anomalous."""
    return igd_score_components(model, images, batch_size)["total"]


def extract_patches(images: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """(N, C, H, W) → (N, P, C, patch, patch) patches on a regular grid with ``stride`` (row-major);
    the last row/column of patches is shifted to end at the border so that every pixel is covered."""
    if images.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if patch > min(h, w) or patch < 1 or stride < 1:
        raise ValueError(f"patch {patch} / stride {stride} invalid for {h}×{w} images")
    ys = _grid(h, patch, stride)
    xs = _grid(w, patch, stride)
    out = [images[:, :, y : y + patch, x : x + patch] for y in ys for x in xs]
    return torch.stack(out, dim=1)


def _grid(size: int, patch: int, stride: int) -> list[int]:
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


def score_igd_local(
    model: IGD, images: torch.Tensor, stride: int, batch_size: int = 256
) -> np.ndarray:
    """Local IGD score s_L(x) = max over patches of ℓ_r + ℓ_h (Eq. 15) for (N, 3, H, W) images, with a
    local ``model`` trained on patches of its ``image_size`` (see :func:`extract_patches`) → (N,)."""
    ph, pw = model.image_size
    if ph != pw:
        raise ValueError("the local model must use square patches")
    patches = extract_patches(images, ph, stride)
    n, p = patches.shape[:2]
    scores = score_igd(model, patches.flatten(0, 1), batch_size)
    return scores.reshape(n, p).max(axis=1)


@dataclass(frozen=True)
class IGDLocalSettings:
    """The local IGD model of Eq. 15 (docs/decisions.md#igd).

    Attributes:
        patch: side of the square patches x^(L)(ω) in pixels; a multiple of the encoder's
            down-sampling (8 for the CIFAR stem) and smaller than the images.
        stride: step of the patch grid in pixels (training patches and the max of Eq. 15).
    """

    patch: int = 16
    stride: int = 8

    def config(self, base: IGDConfig) -> IGDConfig:
        """The local model's :class:`IGDConfig`: ``base`` with ``image_size = patch``."""
        return replace(base, image_size=self.patch)


def train_igd_local(
    train_images: torch.Tensor,
    config: IGDConfig,
    local: IGDLocalSettings,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    live_dir: str | os.PathLike | None = None,
) -> tuple[IGD, list[dict]]:
    """Train the local IGD model: :func:`train_igd` on every ``local.patch``² patch of the
    ``local.stride`` grid (:func:`extract_patches`) of (N, 3, H, W) ``train_images`` in [0, 1],
    i.e. N·P training samples per epoch with ``config``'s optimiser, batch and epochs
    (``image_size`` set to the patch). Returns (model in eval mode, per-epoch history)."""
    images = to_three_channels(torch.as_tensor(train_images).float())
    h, w = images.shape[-2:]
    if local.patch >= min(h, w):
        raise ValueError(f"local patches of {local.patch} px must be smaller than {h}×{w} images")
    patches = extract_patches(images, local.patch, local.stride).flatten(0, 1).contiguous()
    return train_igd(patches, local.config(config), device, checkpoint_dir, live_dir)


def fused_scores(
    global_model: IGD,
    local_model: IGD | None,
    images: torch.Tensor,
    stride: int = 8,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """IGD anomaly scores of (N, 3, H, W) images in [0, 1] (Eq. 13–15): ``global`` s_G (N,),
    ``local`` s_L (N,) (max over the ``stride`` grid of the local model's patches; absent without
    a local model) and ``total`` = s_G + s_L (= s_G without a local model). float64, unitless,
    higher = more anomalous."""
    out = {"global": score_igd(global_model, images, batch_size)}
    out["total"] = out["global"].copy()
    if local_model is not None:
        out["local"] = score_igd_local(local_model, images, stride, batch_size)
        out["total"] = out["global"] + out["local"]
    return out
