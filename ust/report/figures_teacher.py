"""Figures of the teacher: loss curves and nearest neighbours of query patches in descriptor space."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ust.data.transforms import imagenet_normalize  # noqa: E402
from ust.method.networks import PatchNet  # noqa: E402


def plot_loss_curves(csv_path: str | os.PathLike, path: str | os.PathLike | None = None):
    """Total and per-term pretraining losses against the iteration (the teacher's losses.csv)."""
    log = pd.read_csv(csv_path)
    terms = [c for c in ("loss", "loss_k", "loss_m", "loss_c") if c in log and log[c].notna().any()]
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8), squeeze=False)
    for ax, term in zip(axes[0], terms, strict=True):
        ax.plot(log["step"], log[term])
        ax.set_title(term)
        ax.set_xlabel("iteration")
        ax.set_yscale("log" if (log[term].dropna() > 0).all() else "linear")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


@torch.no_grad()
def nearest_neighbours(
    net: PatchNet, patches: torch.Tensor, queries: int = 6, k: int = 5, seed: int = 0
):
    """Indices (queries, k) of each query patch's nearest other patches in descriptor space.

    ``patches`` (N, 3, p, p) in [0, 1]; query indices are drawn with ``seed``. Returns
    (query_indices (Q,), neighbour_indices (Q, k), distances (Q, k)).
    """
    net.eval()
    desc = torch.cat([net(imagenet_normalize(b)) for b in patches.split(256)])
    g = torch.Generator().manual_seed(seed)
    q = torch.randperm(len(patches), generator=g)[:queries]
    dist = torch.cdist(desc[q], desc)
    dist[torch.arange(len(q)), q] = float("inf")  # a patch is not its own neighbour
    d, idx = dist.topk(k, largest=False)
    return q, idx, d


def plot_nearest_neighbours(
    net: PatchNet,
    patches: torch.Tensor,
    path: str | os.PathLike | None = None,
    queries: int = 6,
    k: int = 5,
    seed: int = 0,
):
    """Grid: each row a query patch (left) and its k nearest neighbours by descriptor distance."""
    q, idx, d = nearest_neighbours(net, patches, queries, k, seed)
    fig, axes = plt.subplots(len(q), k + 1, figsize=(1.3 * (k + 1), 1.3 * len(q)), squeeze=False)
    for r in range(len(q)):
        row = [patches[q[r]]] + [patches[i] for i in idx[r]]
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c:
                ax.set_title(f"{float(d[r, c - 1]):.2g}", fontsize=7)
    axes[0][0].set_title("query", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
