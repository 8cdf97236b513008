"""Anomaly scores from a student ensemble (paper §3.2): regression error e, predictive variance v, their
normalisation on anomaly-free validation data, and the multiscale fusion.

Shapes: student predictions ``preds`` are (M, B, d, H, W) and normalised teacher targets are
(B, d, H, W). Dense maps have H × W = image size; the one-vector-per-image mode (MNIST/CIFAR) uses
H = W = 1. Every score map is (B, H, W).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch


def _check_preds(preds: torch.Tensor) -> None:
    if preds.dim() != 5:
        raise ValueError(f"student predictions must be (M, B, d, H, W), got {tuple(preds.shape)}")


def regression_error(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """e = ‖mean_i S_i − ỹ_T‖² per position (paper Eq. 8-9): (M,B,d,H,W), (B,d,H,W) → (B,H,W)."""
    _check_preds(preds)
    if preds.shape[1:] != target.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} disagree: "
            "expected (M, B, d, H, W) and (B, d, H, W)"
        )
    return (preds.mean(0) - target).pow(2).sum(1)


def predictive_variance(preds: torch.Tensor) -> torch.Tensor:
    """v = mean_i ‖S_i‖² − ‖mean_i S_i‖² (paper Eq. 10), computed as the biased ensemble variance
    summed over d (the same quantity without the cancellation): (M,B,d,H,W) → (B,H,W)."""
    _check_preds(preds)
    return (preds - preds.mean(0, keepdim=True)).pow(2).sum(2).mean(0)


class RunningMoments:
    """Mean and standard deviation of a stream of tensors, pooled over all their elements (float64).

    ``dim=None`` pools every element into one scalar; ``dim=1`` keeps the channel axis of
    (B, C, ...) tensors (per-dimension descriptor statistics over all pixels of all images).
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        if self.dim is None:
            flat = x.reshape(-1)
            s, ss, n = flat.sum(), flat.pow(2).sum(), flat.numel()
        else:
            flat = x.movedim(self.dim, 0).reshape(x.shape[self.dim], -1)
            s, ss, n = flat.sum(1), flat.pow(2).sum(1), flat.shape[1]
        self.sum = s if self.sum is None else self.sum + s
        self.sumsq = ss if self.sumsq is None else self.sumsq + ss
        self.count += n

    @property
    def mean(self) -> torch.Tensor:
        if not self.count:
            raise ValueError("no data: RunningMoments.update() was never called")
        return self.sum / self.count

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation (divides by the number of elements)."""
        mean = self.mean
        return (self.sumsq / self.count - mean.pow(2)).clamp_min(0).sqrt()


@dataclass(frozen=True)
class ScoreStats:
    """Scalar statistics of e and v over all pixels of the anomaly-free validation images
    (docs/decisions.md#score-normalisation)."""

    e_mean: float
    e_std: float
    v_mean: float
    v_std: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def fit_score_stats(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ScoreStats:
    """Pool (e, v) maps of validation images into :class:`ScoreStats`; each map is (B, H, W)."""
    me, mv = RunningMoments(), RunningMoments()
    for e, v in pairs:
        me.update(e)
        mv.update(v)
    if not me.count:
        raise ValueError("the validation split is empty: score normalisation needs ≥ 1 image")
    eps = 1e-12
    return ScoreStats(
        float(me.mean), max(float(me.std), eps), float(mv.mean), max(float(mv.std), eps)
    )


def normalized_score(e: torch.Tensor, v: torch.Tensor, stats: ScoreStats) -> torch.Tensor:
    """ẽ + ṽ = (e − e_μ)/e_σ + (v − v_μ)/v_σ (paper Eq. 11), same shape as ``e``
    (docs/decisions.md#score-normalisation)."""
    if e.shape != v.shape:
        raise ValueError(f"e {tuple(e.shape)} and v {tuple(v.shape)} must have the same shape")
    return (e - stats.e_mean) / stats.e_std + (v - stats.v_mean) / stats.v_std


def fuse_multiscale(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """(1/L) Σ_l (ẽ^(l) + ṽ^(l)) over L scales (paper Eq. 12); every map has the same
    shape (docs/decisions.md#multiscale-fusion)."""
    if len(scores) == 0:
        raise ValueError("multiscale fusion needs at least one scale")
    shapes = {tuple(s.shape) for s in scores}
    if len(shapes) != 1:
        raise ValueError(f"all scales must give maps of the same shape, got {sorted(shapes)}")
    return torch.stack(list(scores)).mean(0)
