"""How the one-class students' ROC-AUC grows with their optimiser steps, measured on training data only.

The one-class tables score the *test* split of every class. This benchmark never reads it: for each
normal class of ``--classes`` it builds a *tuning task* from the official *training* split of
``--dataset`` (Fashion-MNIST by default, from the Debian package as ``profiles/offline_full.yaml``
loads it):

* normal class c: ``--holdout`` of its training images (seeded) are the tuning normals; of the rest,
  ``--max-train`` (default: the profile's ``oneclass_dataset.<data set>.max_train``, 2,000 for
  Fashion-MNIST in ``offline_full``) are split 90 / 10 into the students' training and validation
  images, as the pipeline splits them;
* anomalies: ``--per-class`` training images of each of the nine other classes (seeded).

Five students (p = 33, batch 64, Adam 1e-4, weight decay 1e-5: ``oneclass_train`` of the profile)
train on a teacher of the profile's recipe (``--teacher``: a ``teacher.pt``; ``benchmarks/
student_budget.py`` leaves one in its ``--work`` folder, ``teacher_p33_it200.pt``, the offline
recipe at the profile's 200 iterations). The constant learning rate makes every budget of
``--epochs`` a point of one run of the largest: after each of those epochs the e/v statistics are refitted on the validation images and
the tuning task is scored (ẽ + ṽ, ROC-AUC). One JSON line per (class, budget) in ``--out``:
``{"benchmark": "oneclass_budget", "dataset", "class", "epochs", "steps", "auc", "val_error",
"train_loss", "cpu_s", ...}``.

The committed ``benchmarks/results/oneclass_budget.jsonl`` (docs/decisions.md#student-budget):

    python benchmarks/oneclass_budget.py --teacher /tmp/sb/work/teacher_p33_it200.pt \\
        --classes 0 4 --epochs 1 3 10 30
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from student_ensemble import emit, start  # benchmarks/ is on sys.path when run as a script

from ust.data.oneclass import (
    load_torchvision_split,
    prepare_fashion_mnist_from_system,
    zoom_to_patch,
)
from ust.eval.metrics import roc_auc
from ust.experiments.oneclass import ONECLASS_STUDENT_TRAINING, student_scores
from ust.method.students import (
    StudentTeacher,
    fit_target_statistics,
    fit_validation_stats,
    make_students,
)
from ust.method.teacher import load_teacher
from ust.train.students import optimizer_steps, train_students

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "oneclass_budget.jsonl"


def unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) → float32 (N, C, H, W) in [0, 1]."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.unsqueeze(1) if x.ndim == 3 else x


def tuning_task(
    images, labels, normal: int, holdout: int, per_class: int, seed: int, max_train: int | None
) -> dict:
    """Training, validation and tuning images of normal class ``normal``, all from the training split."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pool = rng.permutation(np.flatnonzero(labels == normal))
    tune_normal, rest = pool[:holdout], pool[holdout:]
    rest = rest if max_train is None else rest[:max_train]
    n_val = int(round(0.1 * len(rest)))
    val, train = rest[:n_val], rest[n_val:]
    anomalies = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
            for c in range(10)
            if c != normal
        ]
    )
    tune = np.concatenate([tune_normal, anomalies])
    return {
        "train": unit(images[np.sort(train)]),
        "val": unit(images[np.sort(val)]),
        "tune": unit(images[tune]),
        "tune_labels": np.r_[np.zeros(len(tune_normal)), np.ones(len(anomalies))],
    }


def main() -> None:
    args = parse_args()
    start(args.threads)
    profile = yaml.safe_load(args.profile.read_text())
    section = profile["oneclass_train"]
    if args.max_train is None:
        args.max_train = profile["oneclass_dataset"][args.dataset].get("max_train")
    if args.dataset != "fashion_mnist":
        raise SystemExit("only fashion_mnist (the Debian package's official training split)")
    prepare_fashion_mnist_from_system(args.root)
    images, labels = load_torchvision_split("fashion_mnist", args.root, True)
    teacher = load_teacher(args.teacher, "cpu").eval()
    training = replace(
        ONECLASS_STUDENT_TRAINING,
        batch_size=section["batch_size"],
        lr=section["lr"],
        weight_decay=section["weight_decay"],
        seed=section["seed"],
    )
    for normal in args.classes:
        run_class(
            args,
            section,
            training,
            teacher,
            tuning_task(
                images, labels, normal, args.holdout, args.per_class, args.seed, args.max_train
            ),
            normal,
        )


def run_class(args, section: dict, training, teacher, task: dict, normal: int) -> None:
    """Train the students of one tuning task to the largest budget, scoring at every budget."""
    p = teacher.config.p
    train_x, val_x = zoom_to_patch(task["train"], p), zoom_to_patch(task["val"], p)
    model = StudentTeacher(
        teacher, make_students(teacher, section["students"], seed=section["seed"]), dense=False
    )
    fit_target_statistics(model, train_x, batch_size=256)
    budgets, t0 = set(args.epochs), time.process_time()

    def evaluate(index: int, losses: list[float]) -> None:
        epoch = index + 1  # train_students counts epochs from 0
        if epoch not in budgets:
            return
        seconds = time.process_time() - t0
        stats = fit_validation_stats(model, val_x, batch_size=256)
        scores = student_scores(model, task["tune"], stats)["score"]
        row = {
            "benchmark": "oneclass_budget",
            "dataset": args.dataset,
            "class": normal,
            "p": p,
            "teacher": Path(args.teacher).name,
            "students": section["students"],
            "n_train": len(train_x),
            "n_val": len(val_x),
            "n_tune_normal": int((task["tune_labels"] == 0).sum()),
            "n_tune_anomalous": int((task["tune_labels"] == 1).sum()),
            "epochs": epoch,
            "steps": optimizer_steps(len(train_x), replace(training, epochs=epoch)),
            "auc": round(float(roc_auc(scores, task["tune_labels"])), 4),
            "val_error": round(stats.e_mean, 4),
            "train_loss": round(float(np.mean(losses)), 4),
            "cpu_s": round(seconds, 1),
            "seed": args.seed,
        }
        emit(**row)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        model.train()

    train_students(
        model,
        train_x,
        replace(training, epochs=max(budgets)),
        progress=False,
        on_epoch=evaluate,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", type=Path, default=Path("/tmp/ust_oneclass_budget/torchvision"))
    parser.add_argument("--profile", type=Path, default=ROOT / "profiles" / "offline_full.yaml")
    parser.add_argument("--teacher", type=Path, required=True, help="a p = 33 teacher.pt")
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10, 30])
    parser.add_argument(
        "--max-train",
        type=int,
        help="cap on the training + validation images (default: the profile's oneclass_dataset "
        "max_train for the data set)",
    )
    parser.add_argument("--holdout", type=int, default=500, help="tuning normals per class")
    parser.add_argument("--per-class", type=int, default=100, help="tuning anomalies per class")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
