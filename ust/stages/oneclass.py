"""Stage `oneclass@<dataset>-<class>` (notebook 20): one normal class of a one-class benchmark.

Besides one result JSON per method (:func:`ust.experiments.oneclass.write_class_result`, the DVC
metrics, without per-image arrays), the stage writes ``scores.npz`` (:data:`SCORES_FILE`): the test
labels and classes and every method's per-image scores, from which notebook 20 draws the ROC curves
(:mod:`ust.report.views.oneclass`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ust.experiments.config import OneClassTrainConfig, PipelineConfig, load_config
from ust.io import atomic_write, read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve
from ust.stages import output_dir
from ust.stages.shared import stage_teacher, student_training
from ust.train.device import resolve_device

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ust.data.oneclass import OneClassData

#: per-image test scores of every method of one stage run (see :func:`write_scores`)
SCORES_FILE = "scores.npz"


def student_settings(train: OneClassTrainConfig, *, students: int | None = None):
    """``oneclass_train`` → :class:`ust.experiments.oneclass.OneClassStudentSettings`
    (``students`` overrides the ensemble size, as the MDS stage does)."""
    from ust.experiments.oneclass import OneClassStudentSettings

    return OneClassStudentSettings(
        p=train.p,
        students=train.students if students is None else students,
        training=student_training(train),
        seed=train.seed,
    )


def baseline_settings(train: OneClassTrainConfig):
    """``oneclass_train`` → :class:`ust.experiments.oneclass.OneClassBaselineSettings` (the
    feature baselines, without the pixel reference row)."""
    from ust.experiments.oneclass import PIXEL_BASELINE, OneClassBaselineSettings

    return OneClassBaselineSettings(
        methods=tuple(m for m in train.baselines if m != PIXEL_BASELINE),
        p=train.p,
        ae_epochs=train.ae_epochs,
        ae_lr=train.ae_lr,
        ae_batch=train.ae_batch,
        ae_weight_decay=train.ae_weight_decay,
        seed=train.seed,
    )


def load_oneclass_task(
    dataset: str,
    normal_class: int,
    *,
    config: PipelineConfig | None = None,
    train: OneClassTrainConfig | None = None,
    root: str | os.PathLike | None = None,
):
    """The one-class task of ``dataset`` with data settings from ``oneclass_data.<dataset>`` and the
    split/subset settings of ``oneclass_train`` (with ``oneclass_dataset.<dataset>`` merged over it;
    ``train`` replaces them, ``root`` the data root, e.g. for a seed study)."""
    from ust.data.oneclass import load_oneclass, prepare_fashion_mnist_from_system

    config = config or load_config()
    data_cfg = config.oneclass_data[dataset]
    train = train or config.oneclass_train_for(dataset)
    root = resolve(root if root is not None else data_cfg.root)
    if data_cfg.source == "system" and dataset == "fashion_mnist":
        prepare_fashion_mnist_from_system(root)
        source = "torchvision"
    else:
        source = data_cfg.source
    return load_oneclass(
        dataset,
        root,
        int(normal_class),
        split_seed=train.seed,
        val_fraction=train.val_fraction,
        download=data_cfg.download,
        source=source,
        max_train=train.max_train,
        max_test=train.max_test,
    )


def _students(
    data: OneClassData,
    train: OneClassTrainConfig,
    out: Path,
    device: torch.device,
    progress: bool,
    scores: dict[str, np.ndarray],
) -> dict[str, float]:
    """Students on each configured teacher; writes ``students-<losses>.json`` and puts the test
    scores ẽ + ṽ into ``scores`` under ``students:<losses>``."""
    from ust.experiments.oneclass import run_students, write_class_result

    summary: dict[str, float] = {}
    for losses in train.teacher_configs:
        teacher = stage_teacher(train.p, losses, device, out_dir=out)
        res = run_students(
            data,
            teacher,
            student_settings(train),
            device=device,
            live_dir=out / "dvclive" / f"students-{losses}",
            progress=progress,
            teacher_config=losses,
        )
        write_class_result(res, out / f"students-{losses}.json")
        summary[f"students:{losses}"] = res["auc"]
        scores[f"students:{losses}"] = res["scores"]
    return summary


def _baselines(
    data: OneClassData,
    train: OneClassTrainConfig,
    out: Path,
    device: torch.device,
    scores: dict[str, np.ndarray],
) -> dict[str, float]:
    """The raw-pixel reference (when listed) and the feature baselines on the first teacher; their
    test scores go into ``scores`` under the method names."""
    from ust.eval.metrics import roc_auc
    from ust.experiments.oneclass import (
        PIXEL_BASELINE,
        pixel_nn_scores,
        result_record,
        run_feature_baselines,
        write_class_result,
    )

    summary: dict[str, float] = {}
    first = train.teacher_configs[0]
    baseline_teacher = stage_teacher(train.p, first, device, out_dir=out)
    if PIXEL_BASELINE in train.baselines:
        scores[PIXEL_BASELINE] = pixel_nn_scores(data)
        auc = roc_auc(scores[PIXEL_BASELINE], data.test_labels.numpy())
        write_class_result(result_record(data, PIXEL_BASELINE, auc), out / f"{PIXEL_BASELINE}.json")
        summary[PIXEL_BASELINE] = auc
    details: dict = {}
    aucs = run_feature_baselines(
        data, baseline_teacher, baseline_settings(train), device=device, details=details
    )
    for method, auc in aucs.items():
        scores[method] = details[method]["scores"]
        steps = {k: v for k, v in details[method].items() if k == "optimizer_steps"}
        rec = result_record(data, method, auc, teacher_config=first, **steps)
        write_class_result(rec, out / f"{method}.json")
        summary[method] = auc
    return summary


def _igd(
    data: OneClassData,
    train: OneClassTrainConfig,
    out: Path,
    device: torch.device,
    progress: bool,
    scores: dict[str, np.ndarray],
) -> dict[str, float]:
    """IGD on the images (``igd_epochs > 0``); writes ``igd.json``, its test scores go into
    ``scores`` under ``igd``."""
    from ust.baselines.igd import IGDConfig, IGDLocalSettings
    from ust.experiments.oneclass import run_igd, write_class_result

    igd_cfg = IGDConfig(
        epochs=train.igd_epochs, batch_size=train.igd_batch, seed=train.seed, progress=progress
    )
    res = run_igd(
        data,
        igd_cfg,
        device,
        out / "igd_checkpoints",
        live_dir=out / "dvclive" / "igd",
        max_train=train.igd_max_train,
        local=IGDLocalSettings(train.igd_local_patch, train.igd_local_stride)
        if train.igd_local_patch > 0
        else None,
        seed=train.seed,
    )
    write_class_result(res, out / "igd.json")
    scores["igd"] = res["scores"]
    return {"igd": res["auc"]}


def run_oneclass(data: OneClassData, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Students for each configured p = ``oneclass_train.p`` teacher, the feature baselines on the
    first teacher's descriptors, and IGD; one result JSON per method and ``scores.npz``
    (:func:`write_scores`) in ``out_dir``; returns {label: auc}.

    A teacher missing from ``results/teachers`` is replaced by a smoke-size substitute when
    ``out_dir`` is outside the pipeline's outputs (:func:`ust.stages.stage_teacher`)."""
    train = load_config().oneclass_train_for(data.name)
    out = output_dir(out_dir)
    device = resolve_device(train.device)
    scores: dict[str, np.ndarray] = {}
    summary = _students(data, train, out, device, progress, scores)
    summary.update(_baselines(data, train, out, device, scores))
    if train.igd_epochs > 0:
        summary.update(_igd(data, train, out, device, progress, scores))
    write_scores(out / SCORES_FILE, data, scores)
    return summary


def write_scores(path: str | os.PathLike, data: OneClassData, scores: dict) -> Path:
    """Write ``labels`` (N_test,) int8 (1 = anomalous), ``classes`` (N_test,) int16 and one (N_test,)
    float32 array of anomaly scores per method label (e.g. ``students:mc``, ``1nn``, ``igd``; higher =
    more anomalous) to ``path`` as an ``.npz`` archive, atomically."""
    import numpy as np

    arrays = {
        "labels": data.test_labels.numpy().astype(np.int8),
        "classes": data.test_classes.numpy().astype(np.int16),
        **{label: np.asarray(v, dtype=np.float32).reshape(-1) for label, v in scores.items()},
    }
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))
