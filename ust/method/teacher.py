"""The teacher T̂ (paper §3.1): its configuration, its three losses on a batch of patch triplets, and
the held-out triplet accuracy that measures it.

L = λ_k L_k + λ_m L_m + λ_c L_c, where
* L_k: the anchor's decoded descriptor D(T̂(P)) against the frozen ResNet-18 feature F(P) of the
  part of the patch the network reads (its centred rf×rf field, :meth:`PatchNet.field`);
* L_m: triplet loss with anchor swap on the descriptors of (anchor, positive, negative);
* L_c: decorrelation of the **anchor** descriptors of the batch (B×d; positives and negatives are
  left out so L_c sees B independent crops, as in the paper's "descriptors in the minibatch").

Every network input is the [0, 1] patch, ImageNet-normalised. The training loop is
:func:`ust.train.teacher.pretrain`; :func:`load_teacher` reads the file it writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ust.data.patches import PatchTriplets
from ust.data.transforms import imagenet_normalize
from ust.io import torch_load
from ust.method.losses import decorrelation_loss, distillation_loss, triplet_loss
from ust.method.networks import NetConfig, PatchNet

FILE_FORMAT = "ust.teacher/1"
EVAL_SEED_OFFSET = 1_000_003  # held-out triplets use their own stream, never the training one


@dataclass
class TeacherConfig:
    """The whole pretraining recipe; defaults are the paper's (MVTec setting λ_k = λ_c = 1, λ_m = 0).

    ``decorrelation_normalized``: ``True`` divides L_c by d(d − 1) (the mean squared correlation,
    see :mod:`ust.method.losses`); ``False`` keeps the raw sum, with ``decorrelation_squared=True``
    the thesis' Σ_{k≠l} C_kl² and with ``False`` the paper's unsquared Σ C_kl; ``"auto"`` (default)
    is the raw sum when λ_k > 0 (the (k, c) and (k, m, c) teachers, as printed) and the mean
    otherwise (self-supervised teachers); see :meth:`normalizes_decorrelation` and
    docs/decisions.md#decorrelation-normalisation.
    """

    # network (docs/decisions.md#teacher-architecture)
    patch_size: int = 33
    d: int = 128
    variant: str = "default"
    slope: float = 0.005
    act_on_descriptor: bool = False
    # data (docs/decisions.md#triplet-augmentation): "embedded" or a folder of images
    images: str = "embedded"
    heldout_fraction: float = 0.1
    zoom_min: int = 4  # zoomed side s ∈ {zoom_min·p, zoom_min·p + 1, …, zoom_max·p}, every integer
    zoom_max: int = 16
    max_shift: int | None = None  # None: (p − 1) // 4
    luminance_min: float = 0.8
    luminance_max: float = 1.2
    noise_std: float = 0.1
    grayscale_prob: float = 0.1
    # optimisation (docs/decisions.md#teacher-optimiser)
    iterations: int = 50_000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 1e-5
    # losses (paper §3.1; docs/decisions.md#decorrelation-normalisation)
    lambda_k: float = 1.0
    lambda_m: float = 0.0
    lambda_c: float = 1.0
    margin: float = 1.0
    decorrelation_squared: bool = True
    decorrelation_normalized: bool | str = "auto"  # True, False or "auto"
    decorrelation_eps: float = 1e-8
    # distillation target (docs/decisions.md#distillation-target, docs/decisions.md#resnet-weights)
    resnet_weights: str | None = None
    resnet_input_size: int | None = 224
    allow_download: bool = False
    # run
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    tf32: bool = False
    num_workers: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    eval_triplets: int = 1000

    def __post_init__(self) -> None:
        # Paths compare (resume check) and serialise as plain strings.
        self.images = str(self.images)
        if self.resnet_weights is not None:
            self.resnet_weights = str(self.resnet_weights)
        if self.decorrelation_normalized not in (True, False, "auto"):
            raise ValueError(
                "decorrelation_normalized must be true, false or 'auto' (raw sum when "
                f"lambda_k > 0, mean otherwise), got {self.decorrelation_normalized!r}"
            )

    def normalizes_decorrelation(self) -> bool:
        """Whether L_c is divided by d(d − 1) in this run: ``decorrelation_normalized``, with
        ``"auto"`` resolved to ``lambda_k == 0`` (docs/decisions.md#decorrelation-normalisation)."""
        if self.decorrelation_normalized == "auto":
            return self.lambda_k == 0
        return bool(self.decorrelation_normalized)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work, before anything is computed."""
        lambdas = (self.lambda_k, self.lambda_m, self.lambda_c)
        if min(lambdas) < 0 or max(lambdas) <= 0:
            raise ValueError(
                f"loss weights must be >= 0 with at least one > 0, got lambda_k={self.lambda_k}, "
                f"lambda_m={self.lambda_m}, lambda_c={self.lambda_c}"
            )
        if self.iterations < 0 or self.batch_size < 2:
            raise ValueError(
                f"need iterations >= 0 and batch_size >= 2 (L_c needs a batch), got "
                f"{self.iterations} and {self.batch_size}"
            )
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.eval_triplets < 0:
            raise ValueError(f"eval_triplets must be >= 0, got {self.eval_triplets}")

    def net_config(self) -> NetConfig:
        return NetConfig(
            self.patch_size, self.d, self.variant, self.slope, self.act_on_descriptor, True
        )

    def loss_config(self) -> dict:
        """The loss settings as run (``decorrelation_normalized`` resolved to a bool; the value as
        configured, possibly ``"auto"``, is ``decorrelation_normalized_setting``)."""
        return {
            "lambda_k": self.lambda_k,
            "lambda_m": self.lambda_m,
            "lambda_c": self.lambda_c,
            "margin": self.margin,
            "decorrelation_squared": self.decorrelation_squared,
            "decorrelation_normalized": self.normalizes_decorrelation(),
            "decorrelation_normalized_setting": self.decorrelation_normalized,
            "decorrelation_eps": self.decorrelation_eps,
            "decorrelation_on": "anchor descriptors",
            "resnet_input_size": self.resnet_input_size,
        }

    @classmethod
    def from_dict(cls, values: dict) -> TeacherConfig:
        """Build from a params.yaml section; unknown keys raise ValueError naming the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown teacher settings {unknown}; valid keys: {sorted(names)}")
        return cls(**values)


@torch.no_grad()
def triplet_accuracy(
    net: PatchNet,
    triplets: PatchTriplets | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Fraction of triplets with ‖T̂(a) − T̂(p)‖² < ‖T̂(a) − T̂(n)‖² (strict), in [0, 1].

    ``triplets``: a :class:`PatchTriplets` (all its items) or three (N, 3, p, p) tensors in [0, 1].
    The network sees ImageNet-normalised input; its train/eval mode is restored afterwards.
    """
    if isinstance(triplets, PatchTriplets):
        n = len(triplets)
        get = lambda lo, hi: triplets.batch(range(lo, hi))  # noqa: E731
    else:
        a, p, neg = triplets
        if not (a.shape == p.shape == neg.shape) or a.dim() != 4:
            raise ValueError(
                "expected three (N, 3, p, p) tensors of equal shape, got "
                f"{tuple(a.shape)}, {tuple(p.shape)}, {tuple(neg.shape)}"
            )
        n = a.shape[0]
        get = lambda lo, hi: (a[lo:hi], p[lo:hi], neg[lo:hi])  # noqa: E731
    if n == 0:
        raise ValueError("triplet_accuracy needs at least one triplet")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    try:
        for lo in range(0, n, batch_size):
            xa, xp, xn = (x.to(device) for x in get(lo, min(lo + batch_size, n)))
            da, dp, dn = net(imagenet_normalize(torch.cat([xa, xp, xn]))).float().chunk(3)
            d_pos = (da - dp).pow(2).sum(1)
            d_neg = (da - dn).pow(2).sum(1)
            correct += int((d_pos < d_neg).sum())
    finally:
        net.train(was_training)
    return correct / n


def sampler_kwargs(cfg: TeacherConfig) -> dict:
    return {
        "zoom": (cfg.zoom_min, cfg.zoom_max),
        "max_shift": cfg.max_shift,
        "luminance": (cfg.luminance_min, cfg.luminance_max),
        "noise_std": cfg.noise_std,
        "grayscale_prob": cfg.grayscale_prob,
        "heldout_fraction": cfg.heldout_fraction,
    }


def heldout_triplets(cfg: TeacherConfig, n: int | None = None) -> PatchTriplets:
    """The evaluation triplets of ``cfg``: ``n`` (default ``cfg.eval_triplets``) held-out triplets."""
    return PatchTriplets(
        cfg.images,
        cfg.patch_size,
        cfg.eval_triplets if n is None else n,
        split="heldout",
        seed=cfg.seed + EVAL_SEED_OFFSET,
        **sampler_kwargs(cfg),
    )


def init_teacher(cfg: TeacherConfig) -> PatchNet:
    """The randomly initialised network of ``cfg`` (seeded; the caller's global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return PatchNet(cfg.net_config())


def compute_losses(
    net: PatchNet,
    target: nn.Module | None,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: TeacherConfig,
    autocast: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss (scalar tensor, differentiable) and its terms ``loss_k/m/c`` (NaN when off),
    unweighted; the total is Σ λ·L (see :func:`weighted_terms`).

    ``batch``: anchor, positive, negative, each (B, 3, p, p) in [0, 1] on the network's device.
    Only the terms with λ > 0 are computed (positives/negatives are not even forwarded if λ_m = 0).
    The distillation target sees the anchor's rf×rf field (:meth:`PatchNet.field`), the pixels the
    network reads (docs/decisions.md#distillation-target). L_c is divided by d(d − 1) when
    :meth:`TeacherConfig.normalizes_decorrelation` says so.
    """
    a, p, n = batch
    if cfg.lambda_k > 0 and target is None:
        raise ValueError(
            "lambda_k > 0 needs a distillation target (ust.method.distillation.DistillationTarget)"
        )
    nan = float("nan")
    with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=autocast):
        if cfg.lambda_m > 0:
            da, dp, dn = net(imagenet_normalize(torch.cat([a, p, n]))).float().chunk(3)
        else:  # positives and negatives are only needed by L_m
            da = net(imagenet_normalize(a)).float()
        total = da.new_zeros(())
        terms = {"loss_k": nan, "loss_m": nan, "loss_c": nan}
        if cfg.lambda_k > 0:
            lk = distillation_loss(net.decode(da).float(), target(net.field(a)).float())
            total = total + cfg.lambda_k * lk
            terms["loss_k"] = lk.item()
        if cfg.lambda_m > 0:
            lm = triplet_loss(da, dp, dn, margin=cfg.margin)
            total = total + cfg.lambda_m * lm
            terms["loss_m"] = lm.item()
        if cfg.lambda_c > 0:
            lc = decorrelation_loss(
                da,
                squared=cfg.decorrelation_squared,
                eps=cfg.decorrelation_eps,
                normalized=cfg.normalizes_decorrelation(),
            )
            total = total + cfg.lambda_c * lc
            terms["loss_c"] = lc.item()
    return total, terms


WEIGHTED_TERMS = {"loss_k": "lambda_k", "loss_m": "lambda_m", "loss_c": "lambda_c"}


def weighted_terms(terms: dict, cfg: TeacherConfig) -> dict[str, float | None]:
    """The balance of the loss: λ·L of each term, ``{"k": λ_k·L_k, "m": λ_m·L_m, "c": λ_c·L_c}``
    in the loss' units, ``None`` for a term that is off (λ = 0 or NaN/None in ``terms``).

    ``terms``: a dict with ``loss_k``, ``loss_m``, ``loss_c`` (a loss-log row or the terms of
    :func:`compute_losses`). Their sum is the total loss.
    """
    out: dict[str, float | None] = {}
    for key, weight in WEIGHTED_TERMS.items():
        value, lam = terms.get(key), getattr(cfg, weight)
        off = value is None or value != value or lam == 0  # value != value: NaN
        out[key[-1]] = None if off else lam * float(value)
    return out


def teacher_file(folder: str | os.PathLike, p: int, losses: str) -> Path:
    """``<folder>/p<p>/<losses>/teacher.pt``: where the pipeline's teacher of receptive field ``p``
    and loss letters ``losses`` lives, whether it exists or not."""
    return Path(folder) / f"p{int(p)}" / losses / "teacher.pt"


def find_teacher(folder: str | os.PathLike, p: int, losses: str | None = None) -> Path:
    """The teacher file of receptive field ``p`` in ``folder`` (the one lookup rule for folders).

    With ``losses``: ``<folder>/p<p>/<losses>/teacher.pt`` (the pipeline's layout,
    ``results/teachers``). Without: ``<folder>/p<p>.pt`` (what ``ust teacher --out`` suggests) or
    else the single ``<folder>/p<p>/*/teacher.pt``. Raises FileNotFoundError saying how to train the
    missing teacher, or ValueError when several pipeline teachers of that p exist.
    """
    folder = Path(folder)
    if losses is not None:
        path = teacher_file(folder, p, losses)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: add `p{p}-{losses}` (p: {p}, losses: {losses}) to "
                "`teachers` in params.yaml and run `dvc repro teacher`, or train one with "
                f"`ust teacher --patch-size {p} --out {path}`"
            )
        return path
    direct = folder / f"p{int(p)}.pt"
    if direct.exists():
        return direct
    found = sorted(folder.glob(f"p{int(p)}/*/teacher.pt"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(
            f"several p={p} teachers under {folder}: {[str(f) for f in found]}; "
            f"copy the one to use to {direct}"
        )
    raise FileNotFoundError(
        f"no p={p} teacher in {folder} (looked for {direct} and {folder}/p{p}/*/teacher.pt); "
        f"train one with `ust teacher --patch-size {p} --out {direct}`"
    )


def resolve_teacher(
    teacher: PatchNet | str | os.PathLike, device: str | torch.device = "cpu"
) -> PatchNet:
    """A private eval-mode copy of ``teacher`` on ``device``: a :class:`PatchNet` (deep-copied,
    never modified) or a file written by :func:`ust.train.teacher.pretrain`."""
    if isinstance(teacher, PatchNet):
        return copy.deepcopy(teacher).to(device).eval()
    return load_teacher(teacher, device)


def teacher_fingerprint(teacher: PatchNet) -> str:
    """SHA-256 of the teacher's configuration and descriptor weights (the decoder is ignored):
    what a trained student ensemble depends on."""
    h = hashlib.sha256(json.dumps(asdict(teacher.config), sort_keys=True).encode())
    for key, value in sorted(teacher.state_dict().items()):
        if key.startswith("decoder."):
            continue
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_teacher(path: str | os.PathLike, device: str | torch.device = "cpu") -> PatchNet:
    """Load a file written by :func:`pretrain` as a :class:`PatchNet` in eval mode on ``device``.

    The result is what :func:`ust.method.dense.dense_net` consumes; its ``decode`` head is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher file {str(path)!r} does not exist; train one with `ust teacher --out {path}`"
        )
    blob = torch_load(path)
    if not isinstance(blob, dict) or "state_dict" not in blob or "net_config" not in blob:
        raise ValueError(
            f"{str(path)!r} is not a teacher file (expected a dict with 'state_dict' and "
            "'net_config', as written by ust.train.teacher.pretrain); a .ckpt is a resume checkpoint"
        )
    net = PatchNet(NetConfig(**blob["net_config"]))
    net.load_state_dict(blob["state_dict"])
    return net.to(device).eval()


@torch.no_grad()
def nearest_neighbours(
    net: PatchNet, patches: torch.Tensor, queries: int = 6, k: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """Each of ``queries`` seeded query patches and its k nearest other patches in descriptor space.

    ``patches`` (N, 3, p, p) in [0, 1]. Returns ``query`` (Q, p, p, 3), ``neighbours``
    (Q, k, p, p, 3) (channels last, for drawing) and ``distances`` (Q, k) (ℓ2 in descriptor units).
    """
    net.eval()
    desc = torch.cat([net(imagenet_normalize(b)) for b in patches.split(256)])
    g = torch.Generator().manual_seed(seed)
    q = torch.randperm(len(patches), generator=g)[:queries]
    dist = torch.cdist(desc[q], desc)
    dist[torch.arange(len(q)), q] = float("inf")  # a patch is not its own neighbour
    d, idx = dist.topk(k, largest=False)
    pixels = patches.permute(0, 2, 3, 1)
    return {
        "query": pixels[q].numpy(),
        "neighbours": pixels[idx].numpy(),
        "distances": d.numpy(),
    }
