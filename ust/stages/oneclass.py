"""Stage `oneclass@<dataset>-<class>` (notebook 20): one normal class of a one-class benchmark."""

from __future__ import annotations

import os

from ust.experiments.outputs import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.experiments.params import section
from ust.paths import resolve
from ust.stages import load_stage_teacher, output_dir, student_training
from ust.train.device import resolve_device


def load_oneclass_task(dataset: str, normal_class: int):
    """The one-class task of ``dataset`` with data settings from ``oneclass_data.<dataset>`` and the
    split/subset settings of ``oneclass_train``."""
    from ust.data.oneclass import load_oneclass, prepare_fashion_mnist_from_system

    data_cfg = section("oneclass_data")[dataset]
    train = section("oneclass_train")
    root = resolve(data_cfg["root"])
    if data_cfg["source"] == "system" and dataset == "fashion_mnist":
        prepare_fashion_mnist_from_system(root)
        source = "torchvision"
    else:
        source = data_cfg["source"]
    return load_oneclass(
        dataset,
        root,
        int(normal_class),
        split_seed=int(train["seed"]),
        val_fraction=float(train["val_fraction"]),
        download=bool(data_cfg.get("download", False)),
        source=source,
        max_train=train["max_train"],
        max_test=train["max_test"],
    )


def run_oneclass(data, out_dir: str | os.PathLike, *, progress: bool = True) -> dict:
    """Students for each configured p = 33 teacher, the feature baselines on the first teacher's
    descriptors, and IGD; one result JSON per method in ``out_dir``; returns {label: auc}."""
    from ust.baselines.igd import IGDConfig
    from ust.eval.metrics import roc_auc
    from ust.experiments.oneclass import (
        PIXEL_BASELINE,
        pixel_nn_scores,
        result_record,
        run_feature_baselines,
        run_igd,
        run_students,
        write_class_result,
    )

    cfg = section("oneclass_train")
    out = output_dir(out_dir)
    device = resolve_device(cfg["device"])
    summary: dict[str, float] = {}
    for losses in cfg["teacher_configs"]:
        teacher = load_stage_teacher(cfg["p"], losses, device)
        res = run_students(
            data,
            teacher,
            p=int(cfg["p"]),
            students=int(cfg["students"]),
            training=student_training(cfg),
            seed=int(cfg["seed"]),
            device=device,
            progress=progress,
            teacher_config=losses,
        )
        write_class_result(res, out / f"students-{losses}.json")
        summary[f"students:{losses}"] = res["auc"]
    baseline_teacher = load_stage_teacher(cfg["p"], cfg["teacher_configs"][0], device)
    if PIXEL_BASELINE in cfg["baselines"]:
        auc = roc_auc(pixel_nn_scores(data), data.test_labels.numpy())
        write_class_result(result_record(data, PIXEL_BASELINE, auc), out / f"{PIXEL_BASELINE}.json")
        summary[PIXEL_BASELINE] = auc
    aucs = run_feature_baselines(
        data,
        baseline_teacher,
        methods=tuple(m for m in cfg["baselines"] if m != PIXEL_BASELINE),
        p=int(cfg["p"]),
        ae_epochs=int(cfg["ae_epochs"]),
        ae_lr=float(cfg["ae_lr"]),
        ae_batch=int(cfg["ae_batch"]),
        ae_weight_decay=float(cfg["ae_weight_decay"]),
        seed=int(cfg["seed"]),
        device=device,
    )
    for method, auc in aucs.items():
        rec = result_record(data, method, auc, teacher_config=cfg["teacher_configs"][0])
        write_class_result(rec, out / f"{method}.json")
        summary[method] = auc
    if int(cfg["igd_epochs"]) > 0:
        igd_cfg = IGDConfig(
            epochs=int(cfg["igd_epochs"]),
            batch_size=int(cfg["igd_batch"]),
            seed=int(cfg["seed"]),
            progress=progress,
        )
        res = run_igd(
            data,
            igd_cfg,
            device,
            out / "igd_checkpoints",
            max_train=cfg["igd_max_train"],
            seed=int(cfg["seed"]),
        )
        write_class_result(res, out / "igd.json")
        summary["igd"] = res["auc"]
    return summary
