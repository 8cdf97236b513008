"""One-class experiments on MNIST, Fashion-MNIST and CIFAR-10 (paper §4.1;
docs/decisions.md#oneclass-protocol).

Protocol (one run = one dataset, one normal class): train on the normal class only; every test image
of the other nine classes is anomalous (label 1); report the ROC-AUC of the per-image anomaly scores
over the whole test set. The mean over the ten classes is taken by :mod:`ust.report.tables_oneclass`.

* :func:`run_students` — the Student–Teacher method in its one-vector-per-image mode: every image is
  zoomed to the networks' input size p (bilinear, grayscale replicated to 3 channels,
  :func:`ust.data.oneclass.zoom_to_patch`), the teacher's descriptor statistics μ, σ come from the
  normal training images, M students regress the normalised teacher descriptor, e and v are normalised
  on the held-out 10 % validation split and the score is ẽ + ṽ
  (docs/decisions.md#oneclass-protocol).
* :func:`run_feature_baselines` — 1-NN, K-Means, OC-SVM (PCA keeping 95 % of the variance) and the
  fully connected ℓ2-AE / VAE (raw descriptors normalised by the training mean/std) on the teacher's
  descriptors of the same zoomed images (docs/decisions.md#feature-baselines).
* :func:`run_igd` — IGD (docs/decisions.md#igd) on the images themselves.

The baselines and IGD need no validation data, so they use *all* normal training images (the
students' training split plus the validation split; the paper's "all available in-distribution
samples", docs/decisions.md#oneclass-protocol); the students use the 90 % split for μ/σ and training
and the 10 % split for e/v normalisation.

Results: :func:`write_class_result` writes one small JSON file per (dataset, method, teacher
configuration, class) — the DVC stage metric — and :func:`collect_results` reads a folder of them back
into a :class:`pandas.DataFrame` for :mod:`ust.report.tables_oneclass`.

Optimiser steps: every trained model's result records ``optimizer_steps`` (:data:`STEPS_KEY`), the
number of optimiser updates it took, so that the report can label under-trained rows
(:data:`ust.report.claims.MIN_OPTIMIZER_STEPS`):

* students (:func:`run_students`): per student (each has its own Adam optimiser and the same
  schedule), epochs × ⌈N_train / batch⌉ (:func:`ust.train.students.optimizer_steps`);
* ℓ2-AE / VAE (:func:`run_feature_baselines`, in ``details[method]["optimizer_steps"]``): epochs ×
  ⌈N_fit / batch⌉ (:func:`autoencoder_optimizer_steps`); the stage passes it on to the result;
* IGD (:func:`run_igd`): the global model's M-step updates, epochs × its mini-batches per epoch (a
  trailing one-image batch is skipped, :func:`igd_optimizer_steps`; each update is one step of the
  auto-encoder's and one of the critic's optimiser), and ``optimizer_steps_local`` for the local
  model. The 1-NN, K-Means, OC-SVM and raw-pixel rows train nothing and have no count.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ust.baselines.autoencoders import make_autoencoder, train_autoencoder
from ust.baselines.igd import (
    IGDConfig,
    IGDLocalSettings,
    extract_patches,
    fused_scores,
    train_igd,
    train_igd_local,
)
from ust.baselines.shallow import make_shallow
from ust.data.oneclass import OneClassData, zoom_to_patch
from ust.data.transforms import imagenet_normalize, resize, to_three_channels
from ust.eval.metrics import roc_auc
from ust.experiments.outputs import STEPS_KEY, epoch_steps
from ust.io import atomic_write_text
from ust.method.networks import PatchNet
from ust.method.scoring import ScoreStats, normalized_score
from ust.method.students import (
    StudentTeacher,
    fit_target_statistics,
    fit_validation_stats,
    make_students,
)
from ust.paths import resolve
from ust.train.students import StudentTrainingConfig, optimizer_steps, train_students

__all__ = [
    "FEATURE_BASELINES",
    "ONECLASS_STUDENT_TRAINING",
    "RESULT_KIND",
    "SHALLOW_BASELINES",
    "STEPS_KEY",
    "AUTOENCODER_BASELINES",
    "OneClassBaselineSettings",
    "OneClassStudentSettings",
    "OneClassStudents",
    "collect_results",
    "autoencoder_optimizer_steps",
    "feature_baseline_scores",
    "fit_oneclass_students",
    "igd_images",
    "igd_optimizer_steps",
    "pixel_nn_scores",
    "result_record",
    "run_feature_baselines",
    "run_igd",
    "run_students",
    "student_scores",
    "teacher_descriptors",
    "write_class_result",
]

#: The MVTec optimiser (Adam 1e-4, weight decay 1e-5) with batch 64 and 100 epochs
#: (docs/decisions.md#oneclass-protocol).
ONECLASS_STUDENT_TRAINING = StudentTrainingConfig(
    epochs=100, batch_size=64, lr=1e-4, weight_decay=1e-5
)
SHALLOW_BASELINES = ("1nn", "kmeans", "ocsvm")
AUTOENCODER_BASELINES = ("l2ae", "vae")
FEATURE_BASELINES = SHALLOW_BASELINES + AUTOENCODER_BASELINES
#: reference row: 1-NN on raw pixels (no teacher); the floor a descriptor-based method should beat
PIXEL_BASELINE = "1nn_pixels"
#: marker written into every result file; :func:`collect_results` ignores JSON files without it
RESULT_KIND = "ust.oneclass_result"
_RESULT_COLUMNS = ("dataset", "method", "teacher_config", "class", "auc")


def autoencoder_optimizer_steps(n_vectors: int, epochs: int, batch_size: int) -> int:
    """Optimiser steps of :func:`ust.baselines.autoencoders.train_autoencoder`:
    ``epochs × ⌈n_vectors / batch_size⌉`` (the last batch may be smaller)."""
    return epoch_steps(n_vectors, epochs, batch_size)


def igd_optimizer_steps(n_images: int, batch_size: int, epochs: int) -> int:
    """M-step updates of :func:`ust.baselines.igd.train_igd` on ``n_images`` samples: per epoch one
    per mini-batch of ``batch_size``, a trailing batch of a single image skipped (it cannot form
    the pairs of the interpolation); times ``epochs``."""
    starts = range(0, int(n_images), int(batch_size))
    per_epoch = len(starts) - (1 if len(starts) and n_images - starts[-1] < 2 else 0)
    return int(epochs) * per_epoch


def _base_record(data: OneClassData) -> dict:
    return {
        "dataset": data.name,
        "source": data.source,
        "description": data.description,
        "class": int(data.normal_class),
        "class_name": data.normal_class_name,
        "n_train": int(len(data.train)),
        "n_val": int(len(data.val)),
        "n_test": int(len(data.test)),
        "n_test_anomalous": int(data.test_labels.sum()),
    }


def result_record(
    data: OneClassData, method: str, auc: float, *, teacher_config: str = "", **extra
) -> dict:
    """A result dict for :func:`write_class_result`: dataset/class provenance of ``data`` plus
    ``method``, ``teacher_config`` (label of the teacher whose descriptors were used, "" for none) and
    ``auc`` (ROC-AUC in [0, 1]); ``extra`` entries (timings, settings) are stored as well."""
    return {
        **_base_record(data),
        "method": method,
        "teacher_config": teacher_config or "",
        "auc": float(auc),
        **extra,
    }


def _check_teacher(teacher: PatchNet, p: int) -> None:
    if teacher.config.p != p:
        raise ValueError(
            f"the teacher has receptive field p={teacher.config.p} but p={p} was requested; "
            "the one-class protocol zooms images to the teacher's input size"
        )


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


# --------------------------------------------------------------------------------------------------
# Student–Teacher


@dataclass
class OneClassStudents:
    """A trained vector-mode ensemble and what scoring needs.

    Attributes:
        model: :class:`ust.method.students.StudentTeacher` with ``dense=False`` (input (B, 3, p, p)).
        stats: e/v statistics on the validation split (:class:`ust.method.scoring.ScoreStats`).
        history: per-student mean training loss per epoch (M lists).
        seconds: wall-clock seconds of each phase ("stats", "train", "val").
        optimizer_steps: optimiser steps of each student (:func:`ust.train.students.optimizer_steps`).
    """

    model: StudentTeacher
    stats: ScoreStats
    history: list[list[float]]
    seconds: dict[str, float]
    optimizer_steps: int = 0


@dataclass(frozen=True)
class OneClassStudentSettings:
    """Settings of :func:`run_students` (defaults: ``docs/decisions.md``, one-class protocol).

    Attributes:
        p: input size the images are zoomed to (33 in the paper); must be the teacher's.
        students: ensemble size M (5 in the paper).
        training: optimisation of the students (default: 100 epochs, batch 64, Adam 1e-4, weight
            decay 1e-5); its seed orders the data.
        seed: seed of the students' initialisation.
        inference_batch_size: images per forward pass when computing statistics and scores.
    """

    p: int = 33
    students: int = 5
    training: StudentTrainingConfig = ONECLASS_STUDENT_TRAINING
    seed: int = 0
    inference_batch_size: int = 256


def fit_oneclass_students(
    data: OneClassData,
    teacher: PatchNet,
    settings: OneClassStudentSettings = OneClassStudentSettings(),
    *,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    live_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> OneClassStudents:
    """Train the vector-mode ensemble of :func:`run_students` without scoring the test set.

    ``settings.seed`` seeds the students' initialisation (:func:`ust.method.students.make_students`);
    their data order comes from ``settings.training.seed``. The teacher is copied, never modified.
    """
    p, batch_size = settings.p, settings.inference_batch_size
    _check_teacher(teacher, p)
    device = torch.device(device)
    teacher = copy.deepcopy(teacher).to(device)
    students = make_students(teacher, settings.students, seed=settings.seed)
    model = StudentTeacher(teacher, students, dense=False)
    model.to(device)
    train_x, val_x = zoom_to_patch(data.train, p), zoom_to_patch(data.val, p)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fit_target_statistics(model, train_x, batch_size=batch_size, progress=False)
    seconds["stats"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = train_students(
        model,
        train_x,
        settings.training,
        checkpoint=checkpoint,
        progress=progress,
        live_dir=live_dir,
    )
    seconds["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = fit_validation_stats(model, val_x, batch_size=batch_size)
    seconds["val"] = time.perf_counter() - t0
    return OneClassStudents(
        model=model,
        stats=stats,
        history=history,
        seconds=seconds,
        optimizer_steps=optimizer_steps(len(train_x), settings.training),
    )


def student_scores(
    model: StudentTeacher, images: torch.Tensor, stats: ScoreStats, *, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Per-image scores of a vector-mode ensemble.

    Args:
        model: trained :class:`StudentTeacher` (``dense=False``) of receptive field p.
        images: (N, 1|3, H, W) in [0, 1] at any size; zoomed to p × p here.
        stats: validation e/v statistics.

    Returns:
        dict of (N,) float64 arrays: ``e`` (regression error, squared units of the normalised
        descriptor), ``v`` (predictive variance, same units) and ``score`` = ẽ + ṽ (unitless).
    """
    if model.dense:
        raise ValueError("student_scores expects a vector-mode StudentTeacher (dense=False)")
    device = model.target_mean.device
    model.eval()
    es, vs = [], []
    for start in range(0, len(images), batch_size):
        x = zoom_to_patch(images[start : start + batch_size], model.p).to(device)
        e, v = model.raw_scores(x)
        es.append(e.reshape(-1).double().cpu())
        vs.append(v.reshape(-1).double().cpu())
    e = torch.cat(es) if es else torch.zeros(0, dtype=torch.float64)
    v = torch.cat(vs) if vs else torch.zeros(0, dtype=torch.float64)
    return {"e": e.numpy(), "v": v.numpy(), "score": normalized_score(e, v, stats).numpy()}


def run_students(
    data: OneClassData,
    teacher: PatchNet,
    settings: OneClassStudentSettings = OneClassStudentSettings(),
    *,
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    live_dir: str | os.PathLike | None = None,
    progress: bool = True,
    teacher_config: str = "",
) -> dict:
    """The paper's one-class protocol for one normal class (``docs/decisions.md``).

    Args:
        data: one task from :func:`ust.data.oneclass.load_oneclass` (images in [0, 1]).
        teacher: pretrained patch network with receptive field ``settings.p`` (not modified).
        settings: see :class:`OneClassStudentSettings`.
        device: torch device.
        checkpoint: per-epoch resumable student checkpoint (see :func:`ust.train.students.train_students`).
        live_dir: folder for the dvclive log of the training loss (None: no log).
        progress: show progress bars.
        teacher_config: label of the teacher (e.g. "kc" for λ_k = λ_c = 1), stored in the result.

    Returns:
        :func:`result_record` fields plus ``auc`` (ROC-AUC, anomalous = other classes), ``scores``
        (N_test,) ẽ + ṽ, ``e`` and ``v`` (N_test,) raw scores, ``labels`` (N_test,) 1 = anomalous,
        ``classes`` (N_test,) original classes, ``stats`` (e/v statistics dict), ``history``,
        ``optimizer_steps`` (per student), ``seconds_*`` timings (wall clock), the settings, and
        ``model`` (the trained
        :class:`StudentTeacher`, for :func:`ust.report.figures_oneclass.mds_figure`) with ``score_stats``
        (:class:`ScoreStats`). :func:`write_class_result` keeps only the JSON-able scalars and lists.
    """
    t_start = time.perf_counter()
    fitted = fit_oneclass_students(
        data,
        teacher,
        settings,
        device=device,
        checkpoint=checkpoint,
        live_dir=live_dir,
        progress=progress,
    )
    t0 = time.perf_counter()
    scored = student_scores(
        fitted.model, data.test, fitted.stats, batch_size=settings.inference_batch_size
    )
    seconds_score = time.perf_counter() - t0
    return _students_record(
        data,
        settings,
        fitted,
        scored,
        teacher_config=teacher_config,
        seconds_score=seconds_score,
        t_start=t_start,
        device=device,
    )


def _students_record(
    data: OneClassData,
    settings: OneClassStudentSettings,
    fitted: OneClassStudents,
    scored: dict[str, np.ndarray],
    *,
    teacher_config: str,
    seconds_score: float,
    t_start: float,
    device: str | torch.device,
) -> dict:
    """The :func:`run_students` result: ROC-AUC, settings, timings, per-image arrays, model."""
    labels = data.test_labels.numpy()
    training = settings.training
    return result_record(
        data,
        "students",
        roc_auc(scored["score"], labels),
        teacher_config=teacher_config,
        p=settings.p,
        m=settings.students,
        seed=settings.seed,
        training=asdict(training),
        stats=fitted.stats.to_dict(),
        history=fitted.history,
        optimizer_steps=fitted.optimizer_steps,
        final_loss=float(np.mean([h[-1] for h in fitted.history])) if training.epochs else None,
        seconds_stats=fitted.seconds["stats"],
        seconds_train=fitted.seconds["train"],
        seconds_val=fitted.seconds["val"],
        seconds_score=seconds_score,
        seconds_total=time.perf_counter() - t_start,
        device=str(device),
        scores=scored["score"],
        e=scored["e"],
        v=scored["v"],
        labels=labels,
        classes=data.test_classes.numpy(),
        model=fitted.model,
        score_stats=fitted.stats,
    )


# --------------------------------------------------------------------------------------------------
# Feature-distribution baselines on the teacher's descriptors


@torch.no_grad()
def teacher_descriptors(
    teacher: PatchNet, images: torch.Tensor, p: int = 33, batch_size: int = 256
) -> np.ndarray:
    """Raw teacher descriptors y^T of whole images zoomed to p × p (one vector per image).

    Args:
        teacher: patch network of receptive field ``p`` (evaluated in eval mode, mode restored).
        images: (N, 1|3, H, W) in [0, 1]; zoomed bilinearly and replicated to 3 channels, then
            ImageNet-normalised exactly as :class:`ust.method.students.StudentTeacher` does.

    Returns:
        (N, d) float32 descriptors (the teacher's output units, not normalised).
    """
    _check_teacher(teacher, p)
    device = _device_of(teacher)
    was_training = teacher.training
    teacher.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = zoom_to_patch(images[start : start + batch_size], p)
        out.append(teacher(imagenet_normalize(x).to(device)).float().cpu())
    teacher.train(was_training)
    if not out:
        return np.zeros((0, teacher.config.d), np.float32)
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class OneClassBaselineSettings:
    """Settings of :func:`run_feature_baselines` (AE/VAE: the paper's MNIST/CIFAR ones, 100 epochs,
    Adam lr 1e-2, batch 64, weight decay 1e-5; ``docs/decisions.md``).

    Attributes:
        methods: subset of :data:`FEATURE_BASELINES`.
        p: input size of the teacher whose descriptors are used.
        ae_epochs, ae_lr, ae_batch, ae_weight_decay: autoencoder training.
        seed: seed of the shallow models and the autoencoders.
    """

    methods: tuple[str, ...] = FEATURE_BASELINES
    p: int = 33
    ae_epochs: int = 100
    ae_lr: float = 1e-2
    ae_batch: int = 64
    ae_weight_decay: float = 1e-5
    seed: int = 0


def feature_baseline_scores(
    method: str,
    train: np.ndarray,
    test: np.ndarray,
    settings: OneClassBaselineSettings = OneClassBaselineSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Fit one baseline on (N_train, d) descriptors and score (N_test, d) ones → (N_test,) float64.

    Shallow methods ("1nn", "kmeans", "ocsvm") see a PCA keeping 95 % of the variance (inside
    :mod:`ust.baselines.shallow`); "l2ae" and "vae" see the raw descriptors standardised per dimension
    by the training mean and std (std floored at 1e-6). Higher = more anomalous. ``settings.methods``
    and ``settings.p`` are not used here.
    """
    key, seed = method.lower(), settings.seed
    if key in SHALLOW_BASELINES:
        return make_shallow(key, pca_variance=0.95, seed=seed).fit(train).score(test)
    if key in AUTOENCODER_BASELINES:
        mean = train.mean(0, keepdims=True)
        std = np.maximum(train.std(0, keepdims=True), 1e-6)
        tr, te = (train - mean) / std, (test - mean) / std
        model = make_autoencoder(key, in_dim=train.shape[1], seed=seed)
        train_autoencoder(
            model,
            tr.astype(np.float32),
            epochs=settings.ae_epochs,
            lr=settings.ae_lr,
            batch_size=settings.ae_batch,
            weight_decay=settings.ae_weight_decay,
            seed=seed,
            device=device,
            progress=progress,
        )
        if key == "vae":
            return model.score(te.astype(np.float32), seed=seed)
        return model.score(te.astype(np.float32))
    raise ValueError(f"unknown feature baseline {method!r}; expected one of {FEATURE_BASELINES}")


def run_feature_baselines(
    data: OneClassData,
    teacher: PatchNet,
    settings: OneClassBaselineSettings = OneClassBaselineSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    details: dict | None = None,
) -> dict[str, float]:
    """ROC-AUC of the feature-distribution baselines on the teacher's descriptors.

    All normal training images (train + validation split) are the training set; descriptors are
    those of :func:`teacher_descriptors` at input size ``settings.p``.

    Args:
        settings: see :class:`OneClassBaselineSettings`.
        details: if given, filled with ``{method: {"scores": (N_test,), "seconds": float}}`` (the
            autoencoders also with ``"optimizer_steps"``, :func:`autoencoder_optimizer_steps`) and
            ``"n_fit"`` (number of training descriptors).

    Returns:
        {method: ROC-AUC in [0, 1]} in the order of ``settings.methods``.
    """
    normal = torch.cat([data.train, data.val])
    train = teacher_descriptors(teacher, normal, settings.p)
    test = teacher_descriptors(teacher, data.test, settings.p)
    labels = data.test_labels.numpy()
    aucs: dict[str, float] = {}
    if details is not None:
        details["n_fit"] = len(train)
    for method in settings.methods:
        t0 = time.perf_counter()
        scores = feature_baseline_scores(
            method, train, test, settings, device=device, progress=progress
        )
        aucs[method] = roc_auc(scores, labels)
        if details is not None:
            details[method] = {"scores": scores, "seconds": time.perf_counter() - t0}
            if method.lower() in AUTOENCODER_BASELINES:
                details[method][STEPS_KEY] = autoencoder_optimizer_steps(
                    len(train), settings.ae_epochs, settings.ae_batch
                )
    return aucs


def pixel_nn_scores(data: OneClassData) -> np.ndarray:
    """Euclidean distance of each test image to its nearest normal training image (train +
    validation split) in raw pixel space, no PCA: (N_test,) float64, higher = more anomalous.

    Not a baseline of the paper: a reference for what the data alone gives under this protocol
    (about 0.92 mean ROC-AUC on Fashion-MNIST), below which a descriptor-based result points to a
    defect rather than to the method.
    """
    normal = torch.cat([data.train, data.val]).flatten(1).numpy().astype(np.float32)
    test = data.test.flatten(1).numpy().astype(np.float32)
    scorer = make_shallow("1nn", pca_variance=None)
    return np.asarray(scorer.fit(normal).score(test), dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# IGD


def igd_images(images: torch.Tensor, size: tuple[int, int], mode: str = "pad") -> torch.Tensor:
    """Bring one-class images to IGD's input: (N, 1|3, H, W) in [0, 1] → (N, 3, *size).

    Images already of ``size`` (CIFAR-10 at 32 × 32) are kept. Otherwise ``mode="pad"`` centres them
    on a black canvas (MNIST/Fashion-MNIST 28 × 28 → 32 × 32 with 2 px of zeros on each side: lossless,
    the datasets' background is 0) and ``mode="resize"`` zooms them bilinearly. Grayscale is replicated.
    """
    x = to_three_channels(images.float())
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x.contiguous()
    if mode == "pad":
        dh, dw = size[0] - h, size[1] - w
        if dh < 0 or dw < 0:
            raise ValueError(f"cannot pad {h}×{w} images to {size}; use mode='resize'")
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)).contiguous()
    if mode == "resize":
        return resize(x, size).clamp(0, 1).contiguous()
    raise ValueError(f"unknown mode {mode!r}; expected 'pad' or 'resize'")


def _igd_training_images(
    data: OneClassData, size: tuple[int, int], size_mode: str, max_train: int | None, seed: int
) -> torch.Tensor:
    """All normal training images (train + validation split), or a seeded random subset of
    ``max_train`` of them, brought to IGD's input by :func:`igd_images` → (N, 3, *size)."""
    normal = torch.cat([data.train, data.val])
    if max_train is not None and len(normal) > max_train:
        rng = np.random.default_rng(seed)
        normal = normal[torch.from_numpy(np.sort(rng.choice(len(normal), max_train, False)))]
    return igd_images(normal, size, size_mode)


def _local_dir(path: str | os.PathLike | None, suffix: str) -> Path | None:
    """Where the local model's checkpoints / dvclive log go: ``<path>_local`` next to ``path``."""
    return None if path is None else Path(resolve(path)).with_name(Path(path).name + suffix)


def _igd_test_scores(
    model, local_model, stride: int, test: torch.Tensor, size_mode: str, batch_size: int
) -> dict[str, np.ndarray]:
    """:func:`ust.baselines.igd.fused_scores` of the (N, C, H, W) test images, ``batch_size`` at a
    time → {"global", "total"[, "local"]: (N,) float64}."""
    parts = [
        fused_scores(
            model,
            local_model,
            igd_images(test[i : i + batch_size], model.image_size, size_mode),
            stride,
            batch_size,
        )
        for i in range(0, len(test), batch_size)
    ]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def run_igd(
    data: OneClassData,
    config: IGDConfig,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    live_dir: str | os.PathLike | None = None,
    size_mode: str = "pad",
    max_train: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    local: IGDLocalSettings | None = None,
) -> dict:
    """IGD (docs/decisions.md#igd) on one one-class task; the last epoch is used (no selection).

    Images are brought to ``config.image_size`` by :func:`igd_images` (CIFAR-10 native 32 × 32;
    MNIST/Fashion-MNIST zero-padded 28 → 32 by default, ``size_mode="resize"`` zooms instead).
    Training uses all normal training images (train + validation split), or a seeded random subset of
    ``max_train`` of them (offline profiles: one CPU epoch on 6 000 images takes minutes). The global
    model is always trained; with ``local`` a local model is trained on the patches of the same
    images (:func:`ust.baselines.igd.train_igd_local`; checkpoints in ``<checkpoint_dir>_local``,
    dvclive log in ``<live_dir>_local``) and the score is s = s_G + s_L (Eq. 13).

    Returns:
        :func:`result_record` fields (method "igd") plus ``auc`` (of ``scores``), ``scores`` (N_test,)
        s(x), ``auc_global`` and, with a local model, ``auc_local`` (ROC-AUC of s_G and s_L alone),
        ``labels``, ``classes``, ``history`` (per-epoch dicts of the global model; ``history_local``
        for the local one), ``n_fit`` (training images), ``optimizer_steps`` (the global model's,
        :func:`igd_optimizer_steps`) and, with a local model, ``optimizer_steps_local`` (on its
        N·P patches), ``config``, ``local`` (settings or None), ``size_mode`` and
        ``seconds_train``/``seconds_score``.
    """
    size = config.hw()
    train_x = _igd_training_images(data, size, size_mode, max_train, seed)
    t0 = time.perf_counter()
    model, history = train_igd(
        train_x, config, device=device, checkpoint_dir=checkpoint_dir, live_dir=live_dir
    )
    local_model, history_local = None, None
    if local is not None:
        local_model, history_local = train_igd_local(
            train_x,
            config,
            local,
            device,
            _local_dir(checkpoint_dir, "_local"),
            _local_dir(live_dir, "_local"),
        )
    seconds_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    stride = local.stride if local is not None else 1
    scores = _igd_test_scores(model, local_model, stride, data.test, size_mode, batch_size)
    seconds_score = time.perf_counter() - t0
    labels = data.test_labels.numpy()
    extra = {"auc_local": roc_auc(scores["local"], labels)} if "local" in scores else {}
    extra[STEPS_KEY] = igd_optimizer_steps(len(train_x), config.batch_size, config.epochs)
    if local is not None:
        n_patches = len(train_x) * extract_patches(train_x[:1], local.patch, local.stride).shape[1]
        extra[f"{STEPS_KEY}_local"] = igd_optimizer_steps(
            n_patches, config.batch_size, config.epochs
        )
    return result_record(
        data,
        "igd",
        roc_auc(scores["total"], labels),
        auc_global=roc_auc(scores["global"], labels),
        **extra,
        n_fit=len(train_x),
        config=asdict(config),
        local=asdict(local) if local is not None else None,
        size_mode=size_mode,
        history=history,
        history_local=history_local,
        seconds_train=seconds_train,
        seconds_score=seconds_score,
        device=str(device),
        scores=scores["total"],
        labels=labels,
        classes=data.test_classes.numpy(),
    )


# --------------------------------------------------------------------------------------------------
# Result files


def _jsonable(value):
    """JSON-able copy of ``value``; arrays, tensors, modules and other objects map to ``_DROP``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        out = {str(k): _jsonable(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(value, list | tuple):
        items = [_jsonable(v) for v in value]
        return _DROP if any(v is _DROP for v in items) else items
    return _DROP


_DROP = object()


def write_class_result(result: dict, path: str | os.PathLike) -> Path:
    """Write the JSON-able part of one result (dataset, method, teacher config, class, AUC, timings,
    settings) to ``path`` atomically; per-image arrays, tensors and models are left out.

    ``result`` needs ``dataset``, ``method``, ``class`` and a finite ``auc``; ``teacher_config``
    defaults to "". Relative paths are taken from the repository root. Returns the absolute path.
    """
    missing = [k for k in ("dataset", "method", "class", "auc") if k not in result]
    if missing:
        raise ValueError(f"result lacks {missing}; build it with result_record()/run_*()")
    if not math.isfinite(float(result["auc"])):
        raise ValueError(f"AUC must be finite, got {result['auc']}")
    # score_stats duplicates "stats" as an object; per-image arrays and the model are dropped below
    kept = {k: v for k, v in result.items() if k != "score_stats"}
    record = _jsonable({"kind": RESULT_KIND, "teacher_config": "", **kept})
    path = resolve(path)
    atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def collect_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Read every result file under ``results_dir`` (recursively; other JSON files are ignored).

    Returns:
        one row per file with columns ``dataset``, ``method``, ``teacher_config``, ``class`` (int),
        ``auc`` (float), then ``source``, ``description``, ``path`` and ``optimizer_steps``
        (nullable integer: the model's :data:`STEPS_KEY`, missing where none was recorded);
        sorted by the first four.

    Raises:
        ValueError: two files for the same (dataset, source, method, teacher_config, class).
    """
    root = resolve(results_dir)
    rows = []
    for path in sorted(root.rglob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict) or record.get("kind") != RESULT_KIND:
            continue
        rows.append(
            {
                "dataset": record["dataset"],
                "method": record["method"],
                "teacher_config": record.get("teacher_config") or "",
                "class": int(record["class"]),
                "auc": float(record["auc"]),
                "source": record.get("source", ""),
                "description": record.get("description", ""),
                "path": str(path),
                STEPS_KEY: record.get(STEPS_KEY),
            }
        )
    columns = [*_RESULT_COLUMNS, "source", "description", "path", STEPS_KEY]
    df = pd.DataFrame(rows, columns=columns)
    key = ["dataset", "source", "method", "teacher_config", "class"]
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):
        raise ValueError(
            "several result files for the same (dataset, source, method, teacher_config, class): "
            + ", ".join(dup["path"])
        )
    df["class"] = df["class"].astype("int64")
    df["auc"] = df["auc"].astype("float64")
    df[STEPS_KEY] = pd.array(
        [None if v is None or pd.isna(v) else int(v) for v in df[STEPS_KEY]], dtype="Int64"
    )
    return df.sort_values(list(_RESULT_COLUMNS[:4])).reset_index(drop=True)
