"""Teacher pretraining losses (paper §3.1): distillation L_k, triplet L_m, decorrelation L_c
(docs/decisions.md#triplet-loss, docs/decisions.md#decorrelation-loss).

All three operate on plain tensors so that the training loop, the notebooks and the tests share them.

Why ``decorrelation_loss(normalized=...)`` exists
-------------------------------------------------
The correlation matrix C of B descriptors is ZᵀZ/B with a centred Z, so rank(C) ≤ B − 1. Its diagonal
is 1, hence ‖C‖²_F ≥ (tr C)² / rank(C) ≥ d² / (B − 1), and the squared off-diagonal sum
(docs/decisions.md#decorrelation-normalisation) can never fall below
``rank_bound(d, B) = d²/(B−1) − d``. With the paper's batch B = 64 < d = 128 the floor is
128²/63 − 128 ≈ 132.1, two orders of magnitude above a triplet loss of ≈ 1 (margin 1), so with unit
weights L_c dominates the gradient. ``normalized=True`` divides by the number of off-diagonal
entries d(d − 1), i.e. it is the *mean* squared correlation (floor 132.1/16256 ≈ 0.0081 at B = 64,
d = 128), which keeps L_c and L_m on comparable scales; its minimisers are the paper's.
``normalized=False`` is the raw sum (``squared=False``: the paper's unsquared sum).

Measured (λ_k = 0, λ_m = λ_c = 1, batch 64, d = 128, 200 Adam steps at lr 2e-4 on the embedded
photographs; held-out triplet accuracy on 1000 triplets of never-seen images):

====  ================  ==================  =================  ===============
p     L_c form          L_c init → end      L_m init → end     accuracy
====  ================  ==================  =================  ===============
17    mean (default)    0.243 → 0.148       0.826 → 0.115      0.875 → 0.977
17    raw Σ C²          3943 → 773          0.826 → 0.650      0.875 → 0.895
17    raw Σ C           27.4 → −127.6       0.826 → 0.567      0.875 → 0.925
17    none (λ_c = 0)    –                   0.826 → 0.126      0.875 → 0.972
33    mean (default)    0.203 → 0.090       0.827 → 0.076      0.641 → 0.978
33    raw Σ C²          3293 → 535          0.827 → 0.997      0.641 → 0.736
====  ================  ==================  =================  ===============

(end = mean of the last 50 steps). With the raw sum the triplet term barely moves (p = 33: it gets
worse) while L_c is still 4-6× above its rank floor; the normalised form learns as fast as L_m alone.
With λ_k > 0 the balance differs: L_k is a sum of 512 squared ResNet-feature differences, and the
mean L_c (at most 1) would be a negligible fraction of it. The teacher therefore uses the raw sum
whenever λ_k > 0 and the mean otherwise (``decorrelation_normalized: auto``,
:meth:`ust.method.teacher.TeacherConfig.normalizes_decorrelation`); both forms stay selectable.
"""

from __future__ import annotations

import torch


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names} must be two (B, D) tensors of the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def distillation_loss(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_k (paper Eq. 1): batch mean of ‖D(T̂(P_i)) − F(P_i)‖²₂.

    ``decoded`` (B, 512) is the teacher's decoded descriptor, ``target`` (B, 512) the ResNet-18
    feature of the same patch. Returns a scalar (squared feature units, summed over the 512 dims).
    """
    _check_pair(decoded, target, "decoded and target")
    return (decoded - target).pow(2).sum(dim=1).mean()


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 1.0,
) -> torch.Tensor:
    """L_m (paper Eq. 2-4) with in-triplet hard negative mining by anchor swap (Balntas et al. 2016).

    Inputs are (B, d) descriptors. Distances are *squared* Euclidean:
    δ⁺ = ‖a − p‖², δ⁻ = min(‖a − n‖², ‖p − n‖²); returns mean(max(0, margin + δ⁺ − δ⁻)) (scalar).
    """
    _check_pair(anchor, positive, "anchor and positive")
    _check_pair(anchor, negative, "anchor and negative")
    d_pos = (anchor - positive).pow(2).sum(dim=1)
    # The swap: the positive is as valid an anchor as the anchor itself, so use the harder one.
    d_neg = torch.minimum(
        (anchor - negative).pow(2).sum(dim=1), (positive - negative).pow(2).sum(dim=1)
    )
    return torch.clamp(margin + d_pos - d_neg, min=0).mean()


def correlation_matrix(descriptors: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation (d, d) of the columns of ``descriptors`` (B, d) over the batch.

    Each dimension is centred and divided by its (population) standard deviation plus ``eps``;
    C = ZᵀZ / B, so C_kk = 1 up to ``eps`` for non-constant dimensions.
    """
    if descriptors.dim() != 2 or descriptors.shape[0] < 2:
        raise ValueError(
            f"expected descriptors of shape (B, d) with B >= 2, got {tuple(descriptors.shape)}"
        )
    x = descriptors.float()
    z = x - x.mean(dim=0, keepdim=True)
    z = z / (z.pow(2).mean(dim=0, keepdim=True).sqrt() + eps)
    return z.T @ z / x.shape[0]


def decorrelation_loss(
    descriptors: torch.Tensor,
    squared: bool = True,
    eps: float = 1e-8,
    normalized: bool = False,
) -> torch.Tensor:
    """L_c: sum over k ≠ l of the batch correlation C_kl² (thesis Eq. 5.5;
    docs/decisions.md#decorrelation-loss).

    ``descriptors`` (B, d). ``squared=False`` gives the paper's unsquared Σ C_kl (minimised by
    negative correlations, kept only for reproduction). ``normalized=True`` divides by d(d − 1), the
    number of off-diagonal entries (mean squared correlation; see the module docstring for why).
    Returns a scalar.
    """
    c = correlation_matrix(descriptors, eps)
    d = c.shape[0]
    off = c - torch.diag_embed(torch.diagonal(c))
    loss = off.pow(2).sum() if squared else off.sum()
    if normalized:
        loss = loss / max(d * (d - 1), 1)
    return loss


def rank_bound(d: int, batch_size: int) -> float:
    """Lower bound d²/(B−1) − d of the squared off-diagonal correlation sum when B − 1 < d.

    rank(C) ≤ B − 1 and tr C = d give ‖C‖²_F ≥ d²/(B − 1); the diagonal contributes d. Returns 0
    when B − 1 ≥ d (the bound is then not binding). Divide by d(d − 1) for ``normalized=True``.
    """
    if batch_size < 2 or d < 1:
        raise ValueError(f"need batch_size >= 2 and d >= 1, got batch_size={batch_size}, d={d}")
    return max(d * d / (batch_size - 1) - d, 0.0)
