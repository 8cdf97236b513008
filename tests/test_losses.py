"""Teacher losses against values computed by hand (paper §3.1; docs/decisions.md#triplet-loss,
docs/decisions.md#decorrelation-loss)."""

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard

from ust.method.losses import (
    correlation_matrix,
    decorrelation_loss,
    distillation_loss,
    rank_bound,
    triplet_loss,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_distillation_loss_is_batch_mean_of_squared_l2():
    # ‖(1,2) − (0,0)‖² = 5, ‖(0,0) − (3,4)‖² = 25 → mean 15.
    loss = distillation_loss(t([[1, 2], [0, 0]]), t([[0, 0], [3, 4]]))
    assert loss.item() == pytest.approx(15.0)


def test_distillation_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(2, 512), torch.zeros(2, 128))


# Triplet 1: a=(0,0), p=(1,0), n=(3,0): δ⁺ = 1, ‖a−n‖² = 9, ‖p−n‖² = 4 → δ⁻ = 4 (swap used).
# Triplet 2: a=(0,0), p=(0,2), n=(0,−1): δ⁺ = 4, ‖a−n‖² = 1, ‖p−n‖² = 9 → δ⁻ = 1 (anchor kept).
A, P, N = t([[0, 0], [0, 0]]), t([[1, 0], [0, 2]]), t([[3, 0], [0, -1]])


def test_triplet_loss_hand_values_margin_1():
    # margin 1: max(0, 1 + 1 − 4) = 0 and max(0, 1 + 4 − 1) = 4 → mean 2.
    assert triplet_loss(A, P, N, margin=1.0).item() == pytest.approx(2.0)


def test_triplet_loss_anchor_swap_picks_smaller_negative_distance():
    # margin 4: triplet 1 gives 4 + 1 − min(9, 4) = 1 (without the swap it would be 4 + 1 − 9 → 0);
    # triplet 2 gives 4 + 4 − min(1, 9) = 7 → mean 4.
    assert triplet_loss(A, P, N, margin=4.0).item() == pytest.approx(4.0)
    assert triplet_loss(A[:1], P[:1], N[:1], margin=4.0).item() == pytest.approx(1.0)
    # Swapping the roles of anchor and positive must not change the loss (symmetric hard negative).
    assert triplet_loss(P, A, N, margin=4.0).item() == pytest.approx(4.0)


def test_triplet_loss_uses_squared_distances():
    # a=(0,0), p=(2,0), n=(0,3): δ⁺ = 4, δ⁻ = min(9, 13) = 9 → max(0, 1 + 4 − 9) = 0 ; margin 6 → 1.
    a, p, n = t([[0, 0]]), t([[2, 0]]), t([[0, 3]])
    assert triplet_loss(a, p, n, margin=6.0).item() == pytest.approx(1.0)
    assert triplet_loss(a, p, n, margin=1.0).item() == 0.0


def test_decorrelation_zero_for_uncorrelated_features():
    # Two centred, orthogonal columns → C = I → no off-diagonal mass.
    x = t([[1, 1], [-1, 1], [1, -1], [-1, -1]])
    assert torch.allclose(correlation_matrix(x), torch.eye(2), atol=1e-6)
    assert decorrelation_loss(x).item() == pytest.approx(0.0, abs=1e-10)


def test_decorrelation_perfectly_correlated_known_value():
    u = torch.tensor([1.0, -1.0, 1.0, -1.0])
    v = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # col2 = 2·col1 + 3 → C_12 = C_21 = 1: squared sum 2; normalised by d(d−1) = 2 → 1.
    x = torch.stack([u, 2 * u + 3], dim=1)
    assert decorrelation_loss(x).item() == pytest.approx(2.0, abs=1e-6)
    assert decorrelation_loss(x, normalized=True).item() == pytest.approx(1.0, abs=1e-6)
    # Anti-correlated: the paper's unsquared sum is −2 (why the squared form is the default).
    x = torch.stack([u, -u], dim=1)
    assert decorrelation_loss(x, squared=False).item() == pytest.approx(-2.0, abs=1e-6)
    assert decorrelation_loss(x).item() == pytest.approx(2.0, abs=1e-6)
    # Columns (u, u, v): C = [[1,1,0],[1,1,0],[0,0,1]] → squared off-diagonal 2; /(3·2) → 1/3.
    x = torch.stack([u, u, v], dim=1)
    assert decorrelation_loss(x).item() == pytest.approx(2.0, abs=1e-6)
    assert decorrelation_loss(x, normalized=True).item() == pytest.approx(1 / 3, abs=1e-6)


def test_rank_bound_value_and_numerical_demonstration():
    # B = 64 < d = 128: 128²/63 − 128 = 260.063 − 128 = 132.063.
    assert rank_bound(128, 64) == pytest.approx(132.0635, abs=1e-3)
    assert rank_bound(128, 256) == 0.0
    gen = torch.Generator().manual_seed(0)
    for b, d in ((64, 128), (16, 32)):
        x = torch.randn(b, d, generator=gen)
        assert decorrelation_loss(x).item() >= rank_bound(d, b) - 1e-3
    # The bound is attained by a tight frame: d columns spanning the (B−1)-dim centred subspace with
    # equal norms (rows of a Hadamard matrix restricted to B−1 columns), so it is the true minimum.
    b, d = 64, 128
    centred = np.eye(b) - 1.0 / b
    basis, _ = np.linalg.qr(centred[:, : b - 1])  # orthonormal basis of the centred subspace
    frame = hadamard(d)[:, : b - 1] / np.sqrt(d)  # orthonormal columns, rows of equal norm
    x = torch.from_numpy(basis @ frame.T).float()
    assert decorrelation_loss(x).item() == pytest.approx(rank_bound(d, b), rel=1e-4)
    normalized = decorrelation_loss(x, normalized=True).item()
    assert normalized == pytest.approx(rank_bound(d, b) / (d * (d - 1)), rel=1e-4)  # ≈ 0.0081


def test_decorrelation_rejects_single_sample():
    with pytest.raises(ValueError, match="B >= 2"):
        decorrelation_loss(torch.zeros(1, 8))
