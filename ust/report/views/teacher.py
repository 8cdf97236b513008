"""Notebook 10 (teacher pretraining, paper §3.1 and §4): loss curves, held-out triplet accuracy,
nearest-neighbour patches, and this teacher beside what the paper says about its configuration.

The paper prints no teacher-level number: it gives its pretraining settings (``profiles/paper.yaml``:
iterations, batch size) and, in Table 1, the mean one-class ROC-AUC of students trained against each
loss configuration (:data:`ust.report.published.PAPER_TABLE1`), which notebook 20 measures.
Inputs are the files of one teacher run folder: ``metrics.json``, ``losses.csv`` and ``teacher.pt``.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from ust.io import read_json
from ust.paths import resolve
from ust.report import figures_teacher
from ust.report.published import PAPER_TABLE1
from ust.report.views import comparison_table, number

__all__ = [
    "loss_curves",
    "nearest_neighbours",
    "ours_vs_paper",
    "paper_comparison",
    "paper_row",
    "triplet_accuracy",
]

#: where the paper's pretraining settings are typed (the ``teacher`` section)
PAPER_PROFILE = "profiles/paper.yaml"
_DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def loss_curves(out_dir: str | os.PathLike) -> Figure:
    """Total and per-term losses against the iteration from ``<out_dir>/losses.csv``, saved as
    ``<out_dir>/loss_curves.png`` (what the stage writes); one axes per term that was on."""
    out = resolve(out_dir)
    fig = figures_teacher.plot_loss_curves(out / "losses.csv", out / "loss_curves.png")
    plt.close(fig)  # keep pyplot's registry empty; the Figure stays displayable
    return fig


def nearest_neighbours(out_dir: str | os.PathLike) -> Figure:
    """Six query patches of the held-out images and their five nearest neighbours in the teacher's
    descriptor space (titles: ℓ2 distance), from the ``<out_dir>/nearest_neighbours.npz`` the stage
    wrote (:func:`ust.stages.teacher.write_nearest_neighbours`), saved as
    ``<out_dir>/nearest_neighbours.png``."""
    out = resolve(out_dir)
    npz = out / "nearest_neighbours.npz"
    fig = figures_teacher.plot_nearest_neighbours(npz, out / "nearest_neighbours.png")
    plt.close(fig)
    return fig


def triplet_accuracy(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Held-out triplet accuracy (fraction in [0, 1] of triplets with d(a, p) < d(a, n)) of the
    randomly initialised and of the trained network, from ``<out_dir>/metrics.json``: rows
    ``random initialisation`` and ``trained``, columns ``iterations`` and ``triplet accuracy``."""
    m = read_json(resolve(out_dir) / "metrics.json")
    return pd.DataFrame(
        {
            "iterations": [0, int(m["iterations"])],
            "triplet accuracy": [m["triplet_accuracy_random_init"], m["triplet_accuracy_trained"]],
        },
        index=pd.Index(["random initialisation", "trained"], name="teacher"),
    )


def paper_row(losses: str) -> str:
    """The paper's Table 1 row of a loss configuration: ``"mc"`` → ``"Ours (m,c)"``."""
    return f"Ours ({','.join(losses)})"


def _paper_settings() -> dict:
    from ust.experiments.params import load_params

    return load_params(resolve(PAPER_PROFILE))["teacher"]


def paper_comparison(out_dir: str | os.PathLike, config) -> pd.DataFrame:
    """This teacher beside the paper (see :func:`ust.report.views.comparison_table`): iterations
    and batch size (paper: ``profiles/paper.yaml``), the triplet accuracy (not reported by the
    paper) and Table 1's mean ROC-AUC of students on this loss configuration (measured in
    notebook 20, not here). ``config``: the run's :class:`TeacherConfig` (its batch size)."""
    m = read_json(resolve(out_dir) / "metrics.json")
    paper = _paper_settings()
    losses = m["losses"]
    rows = [
        {"quantity": "iterations", "ours": m["iterations"], "paper": paper["iterations"]},
        {"quantity": "batch size", "ours": config.batch_size, "paper": paper["batch_size"]},
        {
            "quantity": "held-out triplet accuracy (trained)",
            "ours": m["triplet_accuracy_trained"],
            "note": "not reported by the paper",
        },
    ]
    for row in rows[:2]:
        row["source"] = f"{PAPER_PROFILE} (paper §4)"
    for dataset, name in _DATASETS.items():
        rows.append(
            {
                "quantity": f"students on ({','.join(losses)}): mean ROC-AUC, {name}",
                "paper": PAPER_TABLE1.get(paper_row(losses), {}).get(dataset),
                "source": "[P] Table 1",
                "note": "ours: notebook 20 (one-class stages)",
            }
        )
    return comparison_table(rows)


def ours_vs_paper(out_dir: str | os.PathLike) -> str:
    """One sentence: this teacher's triplet accuracy before → after training and its iterations,
    beside the paper's iterations and Table 1 numbers for the same loss configuration."""
    m = read_json(resolve(out_dir) / "metrics.json")
    paper = _paper_settings()
    losses = m["losses"]
    table1 = PAPER_TABLE1.get(paper_row(losses), {})
    text = (
        f"Teacher p = {m['patch_size']} ({','.join(losses)}): held-out triplet accuracy "
        f"{number(m['triplet_accuracy_random_init'])} at random initialisation → "
        f"{number(m['triplet_accuracy_trained'])} after {m['iterations']} iterations (the paper "
        f"trains {paper['iterations']} iterations at batch {paper['batch_size']} and reports no "
        "triplet accuracy)."
    )
    if table1:
        text += (
            " With this loss configuration the paper's students reach a mean ROC-AUC of "
            + " and ".join(f"{number(v, 4)} on {_DATASETS[d]}" for d, v in table1.items())
            + " (Table 1); notebook 20 measures ours."
        )
    else:
        text += " The paper's Table 1 has no row for this loss configuration."
    return text
