"""Stage `oneclass@<dataset>-<class>` (notebook 20): one normal class of a one-class benchmark."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ust.experiments.config import OneClassTrainConfig, PipelineConfig, load_config
from ust.experiments.outputs import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve
from ust.stages import load_stage_teacher, output_dir, student_training
from ust.train.device import resolve_device

if TYPE_CHECKING:
    import torch

    from ust.data.oneclass import OneClassData


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


def load_oneclass_task(dataset: str, normal_class: int, *, config: PipelineConfig | None = None):
    """The one-class task of ``dataset`` with data settings from ``oneclass_data.<dataset>`` and the
    split/subset settings of ``oneclass_train``."""
    from ust.data.oneclass import load_oneclass, prepare_fashion_mnist_from_system

    config = config or load_config()
    data_cfg, train = config.oneclass_data[dataset], config.oneclass_train
    root = resolve(data_cfg.root)
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
    data: OneClassData, train: OneClassTrainConfig, out: Path, device: torch.device, progress: bool
) -> dict[str, float]:
    """Students on each configured teacher; writes ``students-<losses>.json``."""
    from ust.experiments.oneclass import run_students, write_class_result

    summary: dict[str, float] = {}
    for losses in train.teacher_configs:
        teacher = load_stage_teacher(train.p, losses, device)
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
    return summary


def _baselines(
    data: OneClassData, train: OneClassTrainConfig, out: Path, device: torch.device
) -> dict[str, float]:
    """The raw-pixel reference (when listed) and the feature baselines on the first teacher."""
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
    baseline_teacher = load_stage_teacher(train.p, first, device)
    if PIXEL_BASELINE in train.baselines:
        auc = roc_auc(pixel_nn_scores(data), data.test_labels.numpy())
        write_class_result(result_record(data, PIXEL_BASELINE, auc), out / f"{PIXEL_BASELINE}.json")
        summary[PIXEL_BASELINE] = auc
    aucs = run_feature_baselines(data, baseline_teacher, baseline_settings(train), device=device)
    for method, auc in aucs.items():
        rec = result_record(data, method, auc, teacher_config=first)
        write_class_result(rec, out / f"{method}.json")
        summary[method] = auc
    return summary


def _igd(
    data: OneClassData, train: OneClassTrainConfig, out: Path, device: torch.device, progress: bool
) -> dict[str, float]:
    """IGD on the images (``igd_epochs > 0``); writes ``igd.json``."""
    from ust.baselines.igd import IGDConfig
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
        seed=train.seed,
    )
    write_class_result(res, out / "igd.json")
    return {"igd": res["auc"]}


def run_oneclass(data: OneClassData, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Students for each configured p = ``oneclass_train.p`` teacher, the feature baselines on the
    first teacher's descriptors, and IGD; one result JSON per method in ``out_dir``; returns
    {label: auc}."""
    train = load_config().oneclass_train
    out = output_dir(out_dir)
    device = resolve_device(train.device)
    summary = _students(data, train, out, device, progress)
    summary.update(_baselines(data, train, out, device))
    if train.igd_epochs > 0:
        summary.update(_igd(data, train, out, device, progress))
    return summary
