"""Figure 4 of the paper, the computing part (docs/decisions.md#mds-figure): for ten test images,
one per class, the normalised teacher descriptors and the students' mean predictions embedded
jointly in 2-D with metric MDS, their regression error e and predictive variance v, and the scores
of the whole test set. The ``mds`` stage writes them with :func:`save_embedding`; the report draws
the figure from that file (:mod:`ust.report.figures_oneclass`).

MDS: ``sklearn.manifold.MDS(n_components=2, metric_mds=True, metric="euclidean",
init="classical_mds", random_state=seed)``; the classical-MDS initialisation is deterministic.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.manifold import MDS

from ust.data.oneclass import OneClassData, zoom_to_patch
from ust.io import atomic_write
from ust.method.networks import PatchNet
from ust.method.scoring import ScoreStats
from ust.method.students import StudentTeacher, anomaly_scores, fit_validation_stats
from ust.paths import resolve


def ensemble_vectors(model: StudentTeacher, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Descriptor-level quantities of a trained vector-mode ensemble for a few images.

    Args:
        model: :class:`StudentTeacher` with ``dense=False`` and fitted μ, σ.
        images: (n, 1|3, H, W) in [0, 1], zoomed to p × p here.

    Returns:
        ``targets`` (n, d) normalised teacher descriptors (y^T − μ)/σ, ``predictions`` (M, n, d),
        ``mean`` (n, d) ensemble mean, ``e`` (n,) ‖mean − target‖², ``v`` (n,) predictive variance
        (all float64; e and v equal :meth:`StudentTeacher.raw_scores` up to float32 rounding).
    """
    if model.dense:
        raise ValueError("ensemble_vectors expects a vector-mode StudentTeacher (dense=False)")
    device = model.target_mean.device
    model.eval()
    x = zoom_to_patch(images, model.p).to(device)
    with torch.no_grad():
        targets = model.targets(x)[..., 0, 0].double().cpu().numpy()
        preds = model.predictions(x)[..., 0, 0].double().cpu().numpy()
    mean = preds.mean(0)
    e = ((mean - targets) ** 2).sum(1)
    v = ((preds - mean) ** 2).sum(2).mean(0)
    return {"targets": targets, "predictions": preds, "mean": mean, "e": e, "v": v}


def embed_jointly(
    targets: np.ndarray, means: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Metric MDS of the stacked (n, d) targets and (n, d) means → ((2n, 2) coordinates, stress)."""
    points = np.concatenate([targets, means]).astype(np.float64)
    mds = MDS(
        n_components=2,
        metric_mds=True,
        metric="euclidean",
        init="classical_mds",
        random_state=seed,
    )
    coords = mds.fit_transform(points)
    return coords, float(mds.stress_)


def pick_one_per_class(classes: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """One seeded random index per class present in ``classes`` (N,), in class order → (n_classes,)."""
    classes = np.asarray(classes)
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(np.flatnonzero(classes == c)) for c in np.unique(classes)])


def mds_embedding(
    teacher: PatchNet | None,
    students_model: StudentTeacher,
    data: OneClassData,
    normal_class: int | None = None,
    seed: int = 0,
    *,
    stats: ScoreStats | None = None,
    scores: np.ndarray | None = None,
    radius_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """What Figure 4 shows for a trained vector-mode ensemble, one array per field of
    :class:`ust.report.figures_oneclass.MDSFigureData` (written by :func:`save_embedding`).

    Args:
        teacher: the teacher the ensemble was trained against, or ``None`` to use
            ``students_model.teacher``; if given, its weights must equal the model's teacher's.
        students_model: trained :class:`StudentTeacher` (``dense=False``) with μ, σ fitted.
        data: the one-class task (the paper: MNIST, normal class 0).
        normal_class: must equal ``data.normal_class`` if given (colours follow the data).
        seed: picks the ten test images (one per class) and seeds MDS.
        stats: validation e/v statistics; fitted on ``data.val`` when ``None``.
        scores: (N_test,) ẽ + ṽ of ``data.test`` if already computed (e.g. ``run_students()["scores"]``).
        radius_scale: circle radius = radius_scale · √v.
    """
    _check_inputs(teacher, students_model, data, normal_class)
    if stats is None:
        stats = fit_validation_stats(students_model, zoom_to_patch(data.val, students_model.p))
    labels = data.test_labels.numpy()
    if scores is None:
        test = zoom_to_patch(data.test, students_model.p)
        scores = anomaly_scores(students_model, test, stats, batch_size=256).reshape(-1).numpy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} test images")
    idx = pick_one_per_class(data.test_classes.numpy(), seed)
    vec = ensemble_vectors(students_model, data.test[torch.from_numpy(idx)])
    coords, stress = embed_jointly(vec["targets"], vec["mean"], seed)
    classes = data.test_classes.numpy()[idx]
    return {
        "indices": idx,
        "classes": classes,
        "is_normal": classes == data.normal_class,
        "embedding": coords,
        "e": vec["e"],
        "v": vec["v"],
        "radii": radius_scale * np.sqrt(np.maximum(vec["v"], 0.0)),
        "stress": np.float64(stress),
        "scores": scores,
        "labels": labels,
        "class_names": np.array([str(data.class_names[c]) for c in classes]),
        "dataset": np.array(data.name),
        "normal_class_name": np.array(str(data.normal_class_name)),
    }


def _check_inputs(teacher, students_model, data, normal_class) -> None:
    if normal_class is not None and int(normal_class) != data.normal_class:
        raise ValueError(
            f"normal_class={normal_class} but the data were loaded for class {data.normal_class}"
        )
    if teacher is not None:
        mine = students_model.teacher.state_dict()
        theirs = {k: v for k, v in teacher.state_dict().items() if not k.startswith("decoder.")}
        same = mine.keys() == theirs.keys() and all(
            torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine
        )
        if not same:
            raise ValueError("`teacher` differs from the teacher inside `students_model`")


def save_embedding(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write :func:`mds_embedding`'s arrays to ``path`` (``.npz``, atomically): what the report
    draws Figure 4 from."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(resolve(path), lambda fh: fh.write(buf.getvalue()))
