"""Glue between ``params.yaml`` and the library, called by the notebooks so that they stay thin.

Identity (patch size, loss configuration, category, output folder) comes in as papermill
parameters; hyperparameters come from the active ``params.yaml`` sections listed by the DVC stage.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ust.experiments.params import section
from ust.io import atomic_write_text
from ust.paths import resolve

LOSS_LETTERS = {"k": "lambda_k", "m": "lambda_m", "c": "lambda_c"}


def loss_weights(losses: str) -> dict[str, float]:
    """Table 1 notation → loss weights: ``"kc"`` → λ_k = λ_c = 1, λ_m = 0 (a ✓ is a weight of 1)."""
    letters = set(losses)
    if not losses or not letters <= set(LOSS_LETTERS):
        raise ValueError(
            f"loss configuration {losses!r}: use letters from 'kmc' (k = distillation, "
            "m = metric learning, c = compactness), e.g. 'kc' or 'mc'"
        )
    return {name: float(letter in letters) for letter, name in LOSS_LETTERS.items()}


def teacher_config(patch_size: int, losses: str, **overrides: Any):
    """The :class:`ust.method.teacher.TeacherConfig` of one teacher stage, from the ``teacher`` section."""
    from ust.method.teacher import TeacherConfig

    values = section("teacher")
    values.update(patch_size=int(patch_size), **loss_weights(losses), **overrides)
    return TeacherConfig.from_dict(values)


def output_dir(path: str | os.PathLike) -> Path:
    """Resolve a stage output folder against the repository root and create it."""
    out = resolve(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write ``data`` as pretty JSON atomically (numpy scalars converted, NaN → null)."""
    return atomic_write_text(
        resolve(path), json.dumps(_clean(data), indent=2, sort_keys=True) + "\n"
    )


def read_json(path: str | os.PathLike) -> dict:
    with open(resolve(path)) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------------
# Teachers produced by the teacher stages


def teacher_path(patch_size: int, losses: str) -> Path:
    """``results/teachers/p<p>/<losses>/teacher.pt``, with an actionable error when missing."""
    path = resolve(f"results/teachers/p{int(patch_size)}/{losses}/teacher.pt")
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: add `p{patch_size}-{losses}` (p: {patch_size}, losses: {losses}) "
            "to `teachers` in params.yaml and run `dvc repro teacher`"
        )
    return path


def load_teacher(patch_size: int, losses: str, device: str = "cpu"):
    from ust.method.teacher import load_teacher as _load

    return _load(teacher_path(patch_size, losses), device=device)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def student_training(values: dict):
    """A :class:`ust.method.students.StudentTrainingConfig` from a params section's training keys."""
    from ust.method.students import StudentTrainingConfig

    return StudentTrainingConfig(
        epochs=int(values["epochs"]),
        batch_size=int(values["batch_size"]),
        lr=float(values["lr"]),
        weight_decay=float(values["weight_decay"]),
        seed=int(values["seed"]),
    )


# --------------------------------------------------------------------------------------------------
# One-class classification (§4.1)


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
        teacher = load_teacher(cfg["p"], losses, device)
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
    baseline_teacher = load_teacher(cfg["p"], cfg["teacher_configs"][0], device)
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


# --------------------------------------------------------------------------------------------------
# MVTec AD (§4.2)


def mvtec_root() -> Path:
    """The MVTec-layout data root of ``mvtec_data``; the synthetic set is generated there first
    when ``synthetic`` is true (deterministic: an identical existing tree is kept)."""
    cfg = section("mvtec_data")
    root = resolve(cfg["root"])
    if cfg["synthetic"]:
        from ust.data.synthetic import make_synthetic_mvtec

        make_synthetic_mvtec(
            root,
            categories=tuple(section("mvtec")["categories"]),
            image_size=int(cfg["image_size"]),
            n_train=int(cfg["n_train"]),
            n_test_good=int(cfg["n_test_good"]),
            n_test_defect_per_type=int(cfg["n_test_defect_per_type"]),
            seed=int(cfg["seed"]),
        )
    elif not root.is_dir():
        raise FileNotFoundError(
            f"MVTec AD not found at {root}: download it from MVTec (CC BY-NC-SA 4.0), unpack it so "
            f"that {root}/<category>/train/good exists, or set mvtec_data.root in params.yaml"
        )
    return root


def mvtec_settings(category: str) -> dict:
    """``mvtec_train`` with the per-category overrides ``mvtec_category.<category>`` merged in."""
    return section("mvtec_train", overrides=f"mvtec_category.{category}")


def run_mvtec_single_scale(
    category: str, patch_size: int, out_dir: str | os.PathLike, *, progress: bool = True
) -> dict:
    from ust.experiments.mvtec import run_single_scale

    cfg = mvtec_settings(category)
    device = resolve_device(cfg["device"])
    return run_single_scale(
        mvtec_root(),
        category,
        int(patch_size),
        load_teacher(patch_size, cfg["teacher_losses"], device),
        output_dir(out_dir),
        image_size=int(cfg["image_size"]),
        students=int(cfg["students"]),
        training=student_training(cfg),
        val_fraction=float(cfg["val_fraction"]),
        seed=int(cfg["seed"]),
        device=device,
        progress=progress,
    )


def run_mvtec_category(
    category: str,
    single_scale_dirs: dict[int, str],
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> dict:
    """Multiscale fusion plus the Table 2 baselines on the p = 65 teacher's descriptors and the
    SSIM-AE; writes metrics.json (multiscale), baselines.json, ssim_ae.json, table.json."""
    from ust.baselines.ssim_ae import SSIMAEConfig
    from ust.experiments.mvtec import run_feature_baselines, run_multiscale, run_ssim_ae_baseline

    cfg = mvtec_settings(category)
    base = section("mvtec_baselines")
    device = resolve_device(cfg["device"])
    root = mvtec_root()
    out = output_dir(out_dir)
    dirs = {int(p): resolve(d) for p, d in single_scale_dirs.items()}
    result = {"multiscale": run_multiscale(dirs, root, category, out, progress=progress)}
    if 65 in dirs and base["methods"]:
        result["baselines"] = run_feature_baselines(
            root,
            category,
            load_teacher(65, cfg["teacher_losses"], device),
            out,
            image_size=int(cfg["image_size"]),
            methods=tuple(base["methods"]),
            n_1nn=int(base["n_1nn"]),
            n_fit=int(base["n_fit"]),
            ae_epochs=int(base["ae_epochs"]),
            ae_lr=float(base["ae_lr"]),
            ae_batch=int(base["ae_batch"]),
            ae_weight_decay=float(base["ae_weight_decay"]),
            val_fraction=float(cfg["val_fraction"]),
            seed=int(cfg["seed"]),
            device=device,
            progress=progress,
        )
    if base["ssim_ae_epochs"] > 0:
        result["ssim_ae"] = run_ssim_ae_baseline(
            root,
            category,
            out,
            image_size=int(base["ssim_ae_image_size"]),
            stride=int(base["ssim_ae_stride"]),
            config=SSIMAEConfig(
                epochs=int(base["ssim_ae_epochs"]),
                num_patches=int(base["ssim_ae_patches"]),
                batch_size=int(base["ssim_ae_batch"]),
                seed=int(cfg["seed"]),
                progress=progress,
            ),
            val_fraction=float(cfg["val_fraction"]),
            seed=int(cfg["seed"]),
            device=device,
            progress=progress,
        )
    return result


# --------------------------------------------------------------------------------------------------
# Figure 4 (MDS)


def train_mds_students(*, progress: bool = True):
    """Students of Figure 4 (``mds``: dataset, normal class, M) with ``oneclass_train`` settings;
    returns (trained vector-mode model, the one-class task, :func:`run_students` result)."""
    from ust.experiments.oneclass import run_students

    mds = section("mds")
    cfg = section("oneclass_train")
    data = load_oneclass_task(mds["dataset"], int(mds["normal_class"]))
    device = resolve_device(cfg["device"])
    teacher = load_teacher(cfg["p"], mds["teacher_losses"], device)
    result = run_students(
        data,
        teacher,
        p=int(cfg["p"]),
        students=int(mds["students"]),
        training=student_training(cfg),
        seed=int(cfg["seed"]),
        device=device,
        progress=progress,
        teacher_config=mds["teacher_losses"],
    )
    return result["model"], data, result


def mds_figure(model, data, result: dict, path: str | os.PathLike):
    """Draw Figure 4 from :func:`train_mds_students` output; returns (figure, embedding data)."""
    from ust.report.figures_oneclass import mds_figure as draw

    return draw(
        None,
        model,
        data,
        path=path,
        seed=int(section("mds")["seed"]),
        stats=result["score_stats"],
        scores=result["scores"],
    )
