"""Global Context Anomaly Detection, GCAD (thesis chapter 7; Bergmann et al., IJCV 2022): a local and
a global branch whose regression errors are standardised on validation images and summed.

Local branch: the frozen Student–Teacher teacher E_loc (a dense :class:`~ust.method.networks.PatchNet`,
d_loc = 128), its descriptors standardised by folding μ/σ into its last layer
(:func:`fold_normalisation`), and a U-Net R_loc regressing them (L_loc, Eq. 7.1).

Global branch: an encoder E_glo with a g = 32 bottleneck and d_glo = 10 output channels (Fig. 7.4,
:class:`GlobalEncoder`), distilled from E_loc through an upsampling network U of three 1×1
convolutions (L_kd, Eq. 7.2), and a U-Net R_glo without bottleneck regressing E_glo (L_glo,
Eq. 7.3). The training objective is Eq. 7.4 (:func:`total_loss`); the loop lives in
:mod:`ust.train.gcad`.

Scores: A_loc = ‖E_loc − R_loc‖² and A_glo = ‖E_glo − R_glo‖² per pixel, each standardised with the
mean and std over all pixels of anomaly-free validation images (buffers of :class:`GCAD`, set by
:meth:`GCAD.calibrate`) and summed. The multiscale map (p ∈ {17, 33}) is the mean of the models'
maps, formed by the caller (:func:`ust.method.scoring.fuse_multiscale`).

Every map has the network resolution: (B, C, S, S) images give (B, S, S) scores, S = image_size.
The reconstruction of the architecture from Fig. 7.4, Table 6.3 and the public U-Net the thesis names
is recorded in docs/decisions.md#gcad-architecture.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ust.data.transforms import imagenet_normalize, to_three_channels
from ust.io import atomic_torch_save, torch_load
from ust.method.dense import dense_net
from ust.method.networks import NetConfig, PatchNet
from ust.method.scoring import RunningMoments
from ust.method.students import batch_indices, derive_seed

#: identifies the content of a file written by :func:`save_gcad`
FILE_FORMAT = "ust.gcad/1"


@dataclass(frozen=True)
class GCADConfig:
    """Architecture of a GCAD model besides its teacher (defaults: the thesis' settings).

    Attributes:
        image_size: side S in pixels of the (square) input; E_glo's bottleneck convolution has an
            (S / 2^L) × (S / 2^L) kernel for L encoder levels, so S is fixed per model (thesis: 256).
        g: dimension of E_glo's global context vector (thesis: 32).
        d_glo: depth of E_glo's output features (thesis: 10).
        encoder_channels: output channels of E_glo's 4×4 stride-2 convolutions, top level first
            (Table 6.3's autoencoder: 32, 32, 64, 64, 64); one skip connection per level.
        slope: negative slope of E_glo's and U's Leaky ReLUs (Table 6.3: 0.05).
        unet_depth: number of U-Net levels (conv blocks on the down path) of R_loc and R_glo
            (5: a 16×16×1024 latent at 256²).
        unet_width: channels of the U-Net's first level, doubled per level (64).
        upsampler_width: hidden width of U's 1×1 convolutions; ``None``: d_loc (128).
    """

    image_size: int = 256
    g: int = 32
    d_glo: int = 10
    encoder_channels: tuple[int, ...] = (32, 32, 64, 64, 64)
    slope: float = 0.05
    unet_depth: int = 5
    unet_width: int = 64
    upsampler_width: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        levels = len(self.encoder_channels)
        if levels < 1 or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be positive, got {self.encoder_channels}")
        if min(self.g, self.d_glo, self.unet_depth, self.unet_width) < 1:
            raise ValueError("g, d_glo, unet_depth and unet_width must be positive")
        unit = max(2**levels, 2 ** (self.unet_depth - 1))
        if self.image_size < unit or self.image_size % unit:
            raise ValueError(
                f"image_size={self.image_size} must be a positive multiple of {unit}: E_glo halves "
                f"it {levels} times and the U-Nets {self.unet_depth - 1} times"
            )


@dataclass(frozen=True)
class GCADScoreStats:
    """Mean and std of A_loc and A_glo over all pixels of the anomaly-free validation images."""

    loc_mean: float
    loc_std: float
    glo_mean: float
    glo_std: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --- networks ----------------------------------------------------------------------------------


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3 convolutions (zero padding 1) with ReLU: one U-Net level (jvanvugt/pytorch-unet)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """R_loc / R_glo: (B, in, H, W) → (B, out, H, W), H and W multiples of 2^(depth − 1).

    The public implementation the thesis cites (jvanvugt/pytorch-unet, ``UNet(depth=5, wf=6,
    padding=True, batch_norm=False, up_mode='upconv')``): ``depth`` levels of two padded 3×3
    convolutions + ReLU with ``width·2^i`` channels, 2×2 average pooling between them, 2×2
    stride-2 transposed convolutions up, concatenation with the skip, two 3×3 convolutions, and a
    final 1×1 convolution without activation. At 256² and the defaults the latent is 16×16×1024
    (docs/decisions.md#gcad-architecture).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 5, width: int = 64):
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        self.down = nn.ModuleList(
            _double_conv(cin, cout) for cin, cout in zip([in_channels, *widths], widths)
        )
        self.upconv = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(depth - 1))
        )
        self.up = nn.ModuleList(
            _double_conv(2 * widths[i], widths[i]) for i in reversed(range(depth - 1))
        )
        self.last = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                # Average pooling as in the public implementation we read (commit 00e358b);
                # docs/decisions.md#gcad-architecture.
                x = F.avg_pool2d(x, 2)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips)):
            x = block(torch.cat([upconv(x), skip], 1))
        return self.last(x)


class GlobalEncoder(nn.Module):
    """E_glo (Fig. 7.4): (B, 3, S, S) → (B, d_glo, S, S) through a (B, g, 1, 1) bottleneck.

    Encoder: L = len(encoder_channels) 4×4 stride-2 convolutions (padding 1) with Leaky ReLU, then
    an (S/2^L)×(S/2^L) convolution to the g-dimensional context vector (no activation). Decoder,
    the mirror image: a transposed (S/2^L)×(S/2^L) convolution back to S/2^L, then 4×4 stride-2
    transposed convolutions up to S, the last one to d_glo channels without activation. At every
    encoder level k (k = 0 the upper, S/2 level: skip weight u; k = L − 1: y) a 1×1 convolution of
    the encoder's features, scaled by ``skip_weights[k]``, is added to the output of the transposed
    convolution of the same resolution before its Leaky ReLU (docs/decisions.md#gcad-architecture).
    The training loop sets the skip weights (1 → 0 over the first 100 epochs).
    """

    def __init__(self, config: GCADConfig = GCADConfig()):
        super().__init__()
        # Table 6.3's autoencoder encoder (Fig. 7.4 draws E_glo after it), without its batch
        # normalisation (the caption names only Leaky ReLU); the bottleneck kernel is the last map's
        # side, so the context vector is 1×1×g (docs/decisions.md#gcad-architecture).
        c, s = config.encoder_channels, config.image_size // 2 ** len(config.encoder_channels)
        self.slope = config.slope
        self.down = nn.ModuleList(
            nn.Conv2d(cin, cout, 4, stride=2, padding=1) for cin, cout in zip((3, *c), c)
        )
        self.to_context = nn.Conv2d(c[-1], config.g, s)
        self.from_context = nn.ConvTranspose2d(config.g, c[-1], s)
        # up[j] takes level L − 1 − j to the level above; the last one outputs d_glo at S × S.
        outs = (*reversed(c[:-1]), config.d_glo)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
            for cin, cout in zip(reversed(c), outs)
        )
        self.skips = nn.ModuleList(nn.Conv2d(ch, ch, 1) for ch in c)
        self.register_buffer("skip_weights", torch.ones(len(c)))

    def set_skip_weights(self, weights) -> None:
        """Set the L skip weights (u, v, w, x, y for L = 5: top level first)."""
        w = torch.as_tensor(weights, dtype=self.skip_weights.dtype)
        if w.shape != self.skip_weights.shape:
            raise ValueError(
                f"expected {len(self.skip_weights)} skip weights, got {tuple(w.shape)}"
            )
        self.skip_weights.copy_(w)

    def context(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The context vector (B, g, 1, 1) and the encoder features of every level."""
        features = []
        for conv in self.down:
            x = F.leaky_relu(conv(x), self.slope)
            features.append(x)
        return self.to_context(x), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, features = self.context(x)
        h = self.from_context(z)
        for j, up in enumerate(self.up):
            k = len(features) - 1 - j  # the encoder level whose resolution h has
            # Scaled 1×1 skip added to the transposed convolution's output, before its activation
            # (docs/decisions.md#gcad-architecture).
            h = h + self.skip_weights[k] * self.skips[k](features[k])
            h = up(F.leaky_relu(h, self.slope))
        return h


class Upsampler(nn.Module):
    """U: (B, d_glo, H, W) → (B, d_loc, H, W), three 1×1 convolutions with Leaky ReLU between them
    (hidden width: docs/decisions.md#gcad-architecture)."""

    def __init__(self, d_glo: int, d_loc: int, hidden: int, slope: float = 0.05):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(d_glo, hidden, 1),
            nn.LeakyReLU(slope),
            nn.Conv2d(hidden, hidden, 1),
            nn.LeakyReLU(slope),
            nn.Conv2d(hidden, d_loc, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _frozen_copy(teacher: PatchNet) -> PatchNet:
    """A frozen, decoder-free copy of ``teacher`` on its device."""
    net = PatchNet(replace(teacher.config, with_decoder=False))
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("decoder.")}
    net.load_state_dict(state)
    return net.to(next(teacher.parameters()).device).requires_grad_(False).eval()


def fold_normalisation(teacher: PatchNet, mean: torch.Tensor, std: torch.Tensor) -> PatchNet:
    """A frozen copy of ``teacher`` (no decoder) whose descriptors are (y − μ)/σ: the last
    convolution's weights are divided by σ and its bias becomes (b − μ)/σ (computed in float64).
    ``mean``, ``std``: (d,). The descriptor convolution must be the last layer (no activation)."""
    if teacher.config.act_on_descriptor:
        raise ValueError("cannot fold μ/σ into a teacher with an activation on its descriptor")
    d = teacher.config.d
    if mean.shape != (d,) or std.shape != (d,):
        raise ValueError(f"mean and std must have shape ({d},), got {mean.shape}, {std.shape}")
    net = _frozen_copy(teacher)
    conv = net.features[-1]
    m, s = mean.double().to(conv.weight.device), std.double().to(conv.weight.device)
    with torch.no_grad():
        conv.weight.copy_(conv.weight.double() / s.view(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias.double() - m) / s)
    return net


# --- losses ------------------------------------------------------------------------------------


def feature_loss(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Eq. 7.1–7.3 per pixel: ‖target − prediction‖² summed over the features, averaged over pixels
    and images: (B, d, H, W) × 2 → scalar (docs/decisions.md#gcad-training)."""
    if target.shape != prediction.shape:
        raise ValueError(f"shapes differ: {tuple(target.shape)} and {tuple(prediction.shape)}")
    return (target - prediction).pow(2).sum(1).mean()


def total_loss(
    kd: torch.Tensor, glo: torch.Tensor | None, loc: torch.Tensor, *, d_loc: int, d_glo: int
) -> torch.Tensor:
    """Eq. 7.4: L_kd / d_loc + L_glo / d_glo + L_loc / d_loc; ``glo=None`` leaves L_glo out (the
    first 50 epochs)."""
    loss = kd / d_loc + loc / d_loc
    return loss if glo is None else loss + glo / d_glo


# --- the model ---------------------------------------------------------------------------------


class GCAD(nn.Module):
    """E_loc (frozen, normalised), R_loc, E_glo, U and R_glo, with the statistics that make their
    scores comparable (buffers, saved with the model):

    - ``teacher_moments`` (2, d_loc) float64: μ and σ folded into E_loc (NaN until
      :meth:`fit_teacher_normalisation`);
    - ``score_moments`` (4,) float64: mean/std of A_loc and A_glo (NaN until :meth:`calibrate`).

    Images are (B, C, S, S) in [0, 1] with C = 1 or 3; every network sees them ImageNet-normalised
    (docs/decisions.md#input-normalisation). E_loc is the dense network with zero padding, so all
    feature maps are S × S. ``seed`` initialises R_loc, E_glo, U and R_glo reproducibly.
    """

    def __init__(self, teacher: PatchNet, config: GCADConfig = GCADConfig(), *, seed: int = 0):
        super().__init__()
        if teacher.config.act_on_descriptor:
            raise ValueError("GCAD's teacher must output its descriptor without an activation")
        self.config = config
        d_loc = teacher.config.d
        self.e_loc = _frozen_copy(teacher)
        # E_loc runs densely with zero padding: its map is S × S like every other network's, and
        # all scores are at the network resolution (docs/decisions.md#gcad-architecture).
        nets = []
        for i, build in enumerate(
            (
                lambda: UNet(3, d_loc, config.unet_depth, config.unet_width),
                lambda: GlobalEncoder(config),
                lambda: Upsampler(
                    config.d_glo, d_loc, config.upsampler_width or d_loc, config.slope
                ),
                lambda: UNet(3, config.d_glo, config.unet_depth, config.unet_width),
            )
        ):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, 7, i))
                nets.append(build())
        self.r_loc, self.e_glo, self.u, self.r_glo = nets
        self.register_buffer(
            "teacher_moments", torch.full((2, d_loc), float("nan"), dtype=torch.float64)
        )
        self.register_buffer("score_moments", torch.full((4,), float("nan"), dtype=torch.float64))
        # Not a submodule: the dense wrapper shares E_loc's parameters (state_dict holds them once).
        object.__setattr__(self, "_t", dense_net(self.e_loc))

    @property
    def p(self) -> int:
        return self.e_loc.config.p

    @property
    def d_loc(self) -> int:
        return self.e_loc.config.d

    @property
    def d_glo(self) -> int:
        return self.config.d_glo

    @property
    def teacher_normalised(self) -> bool:
        """True once μ/σ are folded into E_loc."""
        return bool(torch.isfinite(self.teacher_moments).all())

    @property
    def calibrated(self) -> bool:
        """True once :meth:`calibrate` (or a loaded file) set the score statistics."""
        return bool(torch.isfinite(self.score_moments).all())

    def trainable(self) -> list[nn.Module]:
        """The four trained networks, in a fixed order: R_loc, E_glo, U, R_glo."""
        return [self.r_loc, self.e_glo, self.u, self.r_glo]

    def train(self, mode: bool = True) -> GCAD:
        super().train(mode)
        self.e_loc.eval()  # frozen, always
        return self

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        x = imagenet_normalize(to_three_channels(images.float()))
        s = self.config.image_size
        if tuple(x.shape[-2:]) != (s, s):
            raise ValueError(
                f"this GCAD model takes {s}×{s} images (its bottleneck is built for that size), "
                f"got {tuple(x.shape[-2:])}; zoom them first (ust.data.transforms.resize)"
            )
        return x

    def fit_teacher_normalisation(
        self, images: torch.Tensor, *, batch_size: int = 8, progress: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and population std (d_loc,) of E_loc over all pixels of the training
        ``images`` (N, C, S, S) (σ floored at 1e-6), folded into E_loc's last layer; returns them.
        Call once, before training (docs/decisions.md#gcad-training)."""
        if self.teacher_normalised:
            raise ValueError("E_loc is already normalised; build a new GCAD model to refit μ/σ")
        if len(images) == 0:
            raise ValueError("no training images: descriptor statistics need at least one image")
        device = self.teacher_moments.device
        moments = RunningMoments(dim=1)
        batches = list(batch_indices(len(images), batch_size))
        with torch.no_grad():
            for idx in tqdm(batches, desc="E_loc stats", disable=not progress):
                moments.update(self._t(self._prep(images[idx].to(device))))
        mean, std = moments.mean, moments.std.clamp_min(1e-6)
        self.e_loc = fold_normalisation(self.e_loc, mean, std)
        object.__setattr__(self, "_t", dense_net(self.e_loc))
        self.teacher_moments.copy_(torch.stack([mean, std]))
        return mean.float().cpu(), std.float().cpu()

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised E_loc descriptors: (B, C, S, S) → (B, d_loc, S, S), no gradient."""
        with torch.no_grad():
            return self._t(self._prep(images))

    def losses(
        self, images: torch.Tensor, *, targets: torch.Tensor | None = None, glo: bool = True
    ) -> dict[str, torch.Tensor]:
        """Unweighted L_kd, L_loc and (``glo=True``) L_glo on a batch, with gradients. ``targets``:
        the batch's E_loc output when already known (B, d_loc, S, S)."""
        x = self._prep(images)
        if targets is None:
            with torch.no_grad():
                targets = self._t(x)
        f_glo = self.e_glo(x)
        out = {
            "kd": feature_loss(targets, self.u(f_glo)),
            "loc": feature_loss(targets, self.r_loc(x)),
        }
        if glo:
            out["glo"] = feature_loss(f_glo, self.r_glo(x))
        return out

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 7.4 of :meth:`losses`' output."""
        return total_loss(
            losses["kd"], losses.get("glo"), losses["loc"], d_loc=self.d_loc, d_glo=self.d_glo
        )

    def raw_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A_loc and A_glo: (B, C, S, S) → two (B, S, S) maps (squared distances, no gradient)."""
        with torch.no_grad():
            x = self._prep(images)
            a_loc = (self._t(x) - self.r_loc(x)).pow(2).sum(1)
            a_glo = (self.e_glo(x) - self.r_glo(x)).pow(2).sum(1)
        return a_loc, a_glo

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.raw_scores(images)

    @property
    def score_stats(self) -> GCADScoreStats:
        if not self.calibrated:
            raise ValueError(
                "this GCAD model has no score statistics yet: calibrate it on anomaly-free "
                "validation images first (GCAD.calibrate)"
            )
        return GCADScoreStats(*(float(v) for v in self.score_moments.tolist()))

    def calibrate(self, images: torch.Tensor, *, batch_size: int = 8) -> GCADScoreStats:
        """Store and return the mean and population std of A_loc and A_glo over all pixels of the
        anomaly-free ``images`` (N, C, S, S) (std floored at 1e-12)."""
        if len(images) == 0:
            raise ValueError("the validation split is empty: score normalisation needs ≥ 1 image")
        device = self.score_moments.device
        self.eval()
        loc, glo = RunningMoments(), RunningMoments()
        for idx in batch_indices(len(images), batch_size):
            a_loc, a_glo = self.raw_scores(images[idx].to(device))
            loc.update(a_loc)
            glo.update(a_glo)
        values = [loc.mean, loc.std.clamp_min(1e-12), glo.mean, glo.std.clamp_min(1e-12)]
        self.score_moments.copy_(torch.stack(values))
        return self.score_stats

    def anomaly_maps(
        self, images: torch.Tensor, *, batch_size: int = 8, progress: bool = False
    ) -> torch.Tensor:
        """A = (A_loc − μ_loc)/σ_loc + (A_glo − μ_glo)/σ_glo of a calibrated model:
        (N, C, S, S) in [0, 1] → (N, S, S) float32 on the CPU."""
        st = self.score_stats
        device = self.score_moments.device
        self.eval()
        out = []
        batches = list(batch_indices(len(images), batch_size))
        for idx in tqdm(batches, desc="GCAD scoring", disable=not progress):
            a_loc, a_glo = self.raw_scores(images[idx].to(device))
            a = (a_loc - st.loc_mean) / st.loc_std + (a_glo - st.glo_mean) / st.glo_std
            out.append(a.float().cpu())
        return torch.cat(out)


def save_gcad(model: GCAD, path: str | os.PathLike, **extra) -> None:
    """Write the whole model (teacher configuration, architecture, weights, statistics) and
    ``extra`` metadata to one file, atomically."""
    atomic_torch_save(
        {
            "format": FILE_FORMAT,
            "teacher_config": asdict(model.e_loc.config),
            "config": asdict(model.config),
            "state": model.state_dict(),
            **extra,
        },
        Path(path),
    )


def load_gcad(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[GCAD, dict]:
    """Inverse of :func:`save_gcad`: the model in eval mode on ``device`` and the stored dict. An
    unreadable file raises :class:`ust.io.CorruptFileError` naming it."""
    state = torch_load(path)
    if state.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a GCAD model file (format {state.get('format')!r})")
    model = GCAD(PatchNet(NetConfig(**state["teacher_config"])), GCADConfig(**state["config"]))
    model.load_state_dict(state["state"])
    return model.to(device).eval(), state
