"""Fully connected ℓ2-autoencoder and VAE baselines on teacher descriptors
(docs/decisions.md#feature-baselines).

Both act on raw (not PCA-reduced) descriptors, normalised by the caller with the teacher's per-dimension
training mean/std (docs/decisions.md#student-target-normalisation), of dimension ``in_dim`` (128).

* Encoder ``in_dim–64–32–10`` with LeakyReLU(0.005) after each hidden layer (linear 10-d code); the
  decoder mirrors it (``10–32–64–in_dim``), no activation on the output.
* :class:`L2AE`: trained on, and scored by, the squared ℓ2 reconstruction error Σ_d (x_d − x̂_d)².
* :class:`VAE`: the encoder trunk ``in_dim–64–32`` feeds two linear 32→10 heads (μ and log σ² of
  q(z|x)); the decoder mean is the mirrored MLP and the decoder variance a learned per-dimension
  log-variance (Gaussian decoder, docs/decisions.md#feature-baselines). Trained on the negative
  ELBO; scored by the reconstruction probability of An & Cho (2015),
  ``score(x) = −(1/L) Σ_l log N(x; μ_dec(z_l), diag σ²_dec)``, z_l ~ q(z|x), L = 5 (nats, higher = more
  anomalous).

Training (:func:`train_autoencoder`): Adam with L2 weight decay; MNIST/CIFAR setting lr 1e-2, batch 64,
wd 1e-5, 100 epochs; MVTec setting lr 1e-4, batch 512 (pass as arguments). Deterministic on the CPU for a
given model seed and training seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import trange

__all__ = ["L2AE", "VAE", "make_autoencoder", "train_autoencoder"]

_LOG_2PI = math.log(2.0 * math.pi)


def _mlp(dims: Sequence[int], slope: float) -> nn.Sequential:
    """Linear layers between consecutive ``dims`` with LeakyReLU(slope) between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


def _to_tensor(X) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if x.dim() != 2:
        raise ValueError(f"expected descriptors (N, d), got shape {tuple(x.shape)}")
    return x.float()


class _Seeded(nn.Module):
    """Builds its layers under a fixed torch seed (when given) without touching the global RNG state."""

    def _build(self, seed: int | None, build) -> None:
        if seed is None:
            build()
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            build()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _batched_scores(self, X, batch_size: int, fn) -> np.ndarray:
        x = _to_tensor(X)
        was_training = self.training
        self.eval()
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size].to(self.device)
                out.append(fn(xb).double().cpu())
        self.train(was_training)
        if not out:
            return np.empty(0, dtype=np.float64)
        return torch.cat(out).numpy()


class L2AE(_Seeded):
    """ℓ2-autoencoder ``in_dim–64–32–latent`` / ``latent–32–64–in_dim`` with LeakyReLU(``slope``).

    Args:
        in_dim: descriptor dimension d (128).
        hidden: hidden widths of the encoder (the decoder uses them reversed).
        latent: code dimension (10).
        slope: LeakyReLU negative slope (0.005, docs/decisions.md#leaky-relu-slope).
        seed: torch seed for the weight initialisation (``None``: the global RNG).
    """

    def __init__(
        self,
        in_dim: int = 128,
        hidden: Sequence[int] = (64, 32),
        latent: int = 10,
        slope: float = 0.005,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.in_dim, self.latent = in_dim, latent

        def build() -> None:
            self.encoder = _mlp([in_dim, *hidden, latent], slope)
            self.decoder = _mlp([latent, *reversed(hidden), in_dim], slope)

        self._build(seed, build)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) → reconstruction (B, in_dim)."""
        return self.decoder(self.encoder(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) → (B,) squared ℓ2 reconstruction error Σ_d (x_d − x̂_d)²."""
        return (self(x) - x).pow(2).sum(dim=1)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss: batch mean of the squared ℓ2 reconstruction error (scalar)."""
        return self.reconstruction_error(x).mean()

    def score(self, X, *, batch_size: int = 8192) -> np.ndarray:
        """Anomaly scores of (N, in_dim) descriptors → (N,) float64 squared ℓ2 reconstruction errors."""
        return self._batched_scores(X, batch_size, self.reconstruction_error)


class VAE(_Seeded):
    """Variational autoencoder with a Gaussian decoder of learned per-dimension variance
    (docs/decisions.md#feature-baselines).

    Args:
        in_dim: descriptor dimension d (128).
        hidden: hidden widths of the encoder trunk (the decoder uses them reversed).
        latent: latent dimension (10).
        slope: LeakyReLU negative slope (0.005).
        logvar_bounds: clamp of the decoder log-variance, for numerical safety (nats).
        seed: torch seed for the weight initialisation (``None``: the global RNG).
    """

    def __init__(
        self,
        in_dim: int = 128,
        hidden: Sequence[int] = (64, 32),
        latent: int = 10,
        slope: float = 0.005,
        logvar_bounds: tuple[float, float] = (-10.0, 10.0),
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.in_dim, self.latent = in_dim, latent
        self.logvar_bounds = logvar_bounds

        def build() -> None:
            trunk = _mlp([in_dim, *hidden], slope)
            self.encoder = nn.Sequential(*trunk, nn.LeakyReLU(slope))
            self.mu_head = nn.Linear(hidden[-1], latent)
            self.logvar_head = nn.Linear(hidden[-1], latent)
            self.decoder = _mlp([latent, *reversed(hidden), in_dim], slope)
            self.dec_logvar = nn.Parameter(torch.zeros(in_dim))

        self._build(seed, build)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_dim) → μ, log σ² of q(z|x), each (B, latent)."""
        h = self.encoder(x)
        return self.mu_head(h), self.logvar_head(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) → decoder mean μ_dec (B, in_dim)."""
        return self.decoder(z)

    def decoder_logvar(self) -> torch.Tensor:
        """(in_dim,) decoder log-variance log σ²_dec (clamped to ``logvar_bounds``)."""
        return self.dec_logvar.clamp(*self.logvar_bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) → reconstruction from the posterior mean, (B, in_dim)."""
        return self.decode(self.encode(x)[0])

    def log_likelihood(self, x: torch.Tensor, mu_dec: torch.Tensor) -> torch.Tensor:
        """log N(x; μ_dec, diag σ²_dec) summed over dimensions: (B, in_dim) × 2 → (B,) nats."""
        logvar = self.decoder_logvar()
        return -0.5 * ((x - mu_dec).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI).sum(dim=1)

    def _sample_z(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Negative ELBO (one z sample), batch mean, in nats: −log p(x|z) + KL(q(z|x) ‖ N(0, I))."""
        mu, logvar = self.encode(x)
        z = self._sample_z(mu, logvar, generator)
        nll = -self.log_likelihood(x, self.decode(z))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
        return (nll + kl).mean()

    def reconstruction_score(
        self, x: torch.Tensor, n_samples: int = 5, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """An & Cho reconstruction probability as a score: (B, in_dim) → (B,) nats,
        −(1/L) Σ_l log N(x; μ_dec(z_l), σ²_dec) with L = ``n_samples`` draws z_l ~ q(z|x)."""
        mu, logvar = self.encode(x)
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for _ in range(n_samples):
            total -= self.log_likelihood(x, self.decode(self._sample_z(mu, logvar, generator)))
        return total / n_samples

    def score(self, X, *, n_samples: int = 5, seed: int = 0, batch_size: int = 8192) -> np.ndarray:
        """Anomaly scores of (N, in_dim) descriptors → (N,) float64 negative mean log-likelihood (nats),
        from ``n_samples`` posterior draws; deterministic for a ``seed``."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return self._batched_scores(
            X, batch_size, lambda xb: self.reconstruction_score(xb, n_samples, gen)
        )


def make_autoencoder(name: str, in_dim: int = 128, seed: int | None = 0, **kw) -> L2AE | VAE:
    """Build "l2ae" (aliases "ae", "l2-ae") or "vae" with input dimension ``in_dim``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("l2ae", "ae"):
        return L2AE(in_dim=in_dim, seed=seed, **kw)
    if key == "vae":
        return VAE(in_dim=in_dim, seed=seed, **kw)
    raise ValueError(f"unknown autoencoder {name!r}; expected 'l2ae' or 'vae'")


def train_autoencoder(
    model: L2AE | VAE,
    X,
    epochs: int = 100,
    lr: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 1e-5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place on (N, in_dim) descriptors with Adam (L2 weight decay).

    Each epoch visits every vector once in a seeded random order (last batch may be smaller). The VAE's
    sampling noise is drawn from a generator seeded with ``seed`` as well, so CPU runs are repeatable.

    Args:
        model: an :class:`L2AE` or :class:`VAE` (anything with ``loss(x, generator)``).
        X: (N, in_dim) float descriptors (numpy or torch; kept where they are, batches are moved).
        epochs, lr, batch_size, weight_decay: optimisation settings (MNIST/CIFAR defaults; MVTec:
            lr 1e-4, batch 512).
        seed: seed of the data order and of the VAE noise.
        device: training device; the model is moved there.
        progress: show a tqdm bar with the running loss.

    Returns:
        per-epoch mean training loss (length ``epochs``; squared ℓ2 error or negative ELBO, per vector).
    """
    x = _to_tensor(X)
    if x.shape[1] != model.in_dim:
        raise ValueError(f"descriptors have {x.shape[1]} dims, model expects {model.in_dim}")
    model.to(device).train()
    device = model.device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    n = x.shape[0]
    losses: list[float] = []
    bar = trange(epochs, disable=not progress, desc=f"train {type(model).__name__}", leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=order_gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb = x[idx.to(x.device)].to(device, non_blocking=True)
            loss = model.loss(xb, generator=noise_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.4g}")
    model.eval()
    return losses
