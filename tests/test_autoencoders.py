"""ℓ2-AE and VAE baselines on small descriptor sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ust.baselines.autoencoders import L2AE, VAE, make_autoencoder, train_autoencoder


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny MLPs run fastest on one thread; the CI cores are shared (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def descriptors(n: int = 256, d: int = 128, seed: int = 0) -> torch.Tensor:
    """Normalised-looking descriptors on a 5-d linear subspace plus small noise."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(5, d, generator=g) / math.sqrt(5)
    return torch.randn(n, 5, generator=g) @ basis + 0.05 * torch.randn(n, d, generator=g)


def test_architecture_shapes():
    ae = L2AE()
    linears = [m for m in ae.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (128, 64),
        (64, 32),
        (32, 10),
        (10, 32),
        (32, 64),
        (64, 128),
    ]
    acts = [m for m in ae.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.005 for a in acts)
    assert not isinstance(ae.decoder[-1], nn.LeakyReLU)  # no output activation
    x = descriptors(8)
    assert ae(x).shape == (8, 128)
    assert ae.score(x).shape == (8,)

    vae = VAE(in_dim=64)
    mu, logvar = vae.encode(torch.randn(3, 64))
    assert mu.shape == (3, 10) and logvar.shape == (3, 10)
    assert vae.mu_head.in_features == 32 and vae.logvar_head.in_features == 32
    assert vae.dec_logvar.shape == (64,)
    assert vae(torch.randn(3, 64)).shape == (3, 64)
    assert vae.score(np.zeros((5, 64), np.float32)).shape == (5,)


def test_l2ae_score_is_squared_error():
    ae = L2AE(in_dim=16, seed=1)
    x = torch.randn(6, 16)
    with torch.no_grad():
        expected = ((ae(x) - x) ** 2).sum(1).double().numpy()
    assert np.allclose(ae.score(x, batch_size=4), expected)


def test_vae_score_is_gaussian_nll():
    """With the encoder variance driven to ~0, the score equals −log N(x; μ_dec(μ_z), σ²_dec)."""
    vae = VAE(in_dim=8, seed=0)
    with torch.no_grad():
        vae.logvar_head.weight.zero_()
        vae.logvar_head.bias.fill_(-60.0)
        vae.dec_logvar.copy_(torch.linspace(-1, 1, 8))
        x = torch.randn(4, 8)
        mu_dec = vae(x)
        var = vae.dec_logvar.exp()
        nll = 0.5 * (((x - mu_dec) ** 2) / var + var.log() + math.log(2 * math.pi)).sum(1)
    assert np.allclose(vae.score(x), nll.double().numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", ["l2ae", "vae"])
def test_training_lowers_loss(kind):
    X = descriptors()
    model = make_autoencoder(kind, seed=0)
    losses = train_autoencoder(model, X, epochs=8, lr=1e-2, batch_size=64, progress=False)
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.1 * abs(losses[0])  # the VAE loss (NLL) may turn negative


def test_vae_scores_far_points_higher():
    X = descriptors(512)
    vae = VAE(seed=0)
    train_autoencoder(vae, X, epochs=15, lr=1e-2, batch_size=64, progress=False)
    near = descriptors(100, seed=1)
    far = near + 3.0 * torch.randn(100, 128, generator=torch.Generator().manual_seed(2))
    s_near, s_far = vae.score(near), vae.score(far)
    assert s_far.mean() > s_near.mean()
    assert np.mean(s_far[:, None] > s_near[None, :]) > 0.95  # AUC of far-vs-near
    assert np.array_equal(vae.score(near, seed=5), vae.score(near, seed=5))


@pytest.mark.parametrize("kind", ["l2ae", "vae"])
def test_determinism_for_a_seed(kind):
    X = descriptors(128)
    runs = []
    for _ in range(2):
        m = make_autoencoder(kind, seed=3)
        losses = train_autoencoder(m, X, epochs=3, batch_size=32, seed=7, progress=False)
        runs.append((losses, m.score(X), [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2], strict=True))
    other = make_autoencoder(kind, seed=4)
    assert not torch.equal(next(other.parameters()), runs[0][2][0])


def test_bad_inputs():
    with pytest.raises(ValueError):
        train_autoencoder(L2AE(in_dim=128), torch.randn(10, 64), epochs=1, progress=False)
    with pytest.raises(ValueError):
        make_autoencoder("gan")
