"""Stages `mvtec@<category>-<p>` (notebook 30) and `mvtec_multiscale@<category>` (notebook 31)."""

from __future__ import annotations

import os
from pathlib import Path

from ust.experiments.outputs import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.experiments.params import section
from ust.paths import resolve
from ust.stages import load_stage_teacher, output_dir, student_training
from ust.train.device import resolve_device


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
    from ust.experiments.mvtec_single import run_single_scale

    cfg = mvtec_settings(category)
    device = resolve_device(cfg["device"])
    return run_single_scale(
        mvtec_root(),
        category,
        int(patch_size),
        load_stage_teacher(patch_size, cfg["teacher_losses"], device),
        output_dir(out_dir),
        image_size=int(cfg["image_size"]),
        students=int(cfg["students"]),
        training=student_training(cfg),
        val_fraction=float(cfg["val_fraction"]),
        seed=int(cfg["seed"]),
        device=device,
        progress=progress,
    )


def run_mvtec_multiscale(
    category: str,
    single_scale_dirs: dict[int, str],
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> dict:
    """Multiscale fusion plus the Table 2 baselines on the p = 65 teacher's descriptors and the
    SSIM-AE; writes metrics.json (multiscale), baselines.json, ssim_ae.json, table.json."""
    from ust.baselines.ssim_ae import SSIMAEConfig
    from ust.experiments.mvtec_baselines import run_feature_baselines, run_ssim_ae_baseline
    from ust.experiments.mvtec_multiscale import run_multiscale

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
            load_stage_teacher(65, cfg["teacher_losses"], device),
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
