"""Figures of the teacher: loss curves and nearest neighbours of query patches in descriptor space,
drawn from the files the teacher stage wrote."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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


def plot_nearest_neighbours(npz_path: str | os.PathLike, path: str | os.PathLike | None = None):
    """Grid: each row a query patch (left) and its k nearest neighbours by descriptor distance
    (titles: ℓ2 distance), drawn from the ``nearest_neighbours.npz`` the teacher stage wrote
    (:func:`ust.stages.teacher.write_nearest_neighbours`: ``query`` (Q, p, p, 3), ``neighbours``
    (Q, k, p, p, 3) in [0, 1] and ``distances`` (Q, k))."""
    data = np.load(npz_path)
    query, neighbours, dist = data["query"], data["neighbours"], data["distances"]
    q, k = dist.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.3 * (k + 1), 1.3 * q), squeeze=False)
    for r in range(q):
        for c, img in enumerate([query[r], *neighbours[r]]):
            ax = axes[r][c]
            ax.imshow(np.clip(img, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c:
                ax.set_title(f"{float(dist[r, c - 1]):.2g}", fontsize=7)
    axes[0][0].set_title("query", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
