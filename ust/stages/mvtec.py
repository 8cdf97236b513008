"""Stages `mvtec@<category>-<p>` (notebook 30) and `mvtec_multiscale@<category>` (notebook 31).

Output layout: a single-scale run writes ``results/mvtec/<category>/p<p>/``, the multiscale run
(fusion and Table 2 baselines) ``results/mvtec_multiscale/<category>/``.

Run interactively (``out_dir`` outside ``results/``, see :func:`ust.stages.builds_substitutes`), a
missing teacher, a missing MVTec AD folder or a missing single-scale run is built at smoke size under
``<out_dir>/substitutes/`` first, with a message (:func:`mvtec_data_root`,
:func:`multiscale_inputs`); under DVC nothing is substituted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ust.experiments.config import (
    MVTecBaselinesConfig,
    MVTecTrainConfig,
    PipelineConfig,
    load_config,
)
from ust.experiments.outputs import single_scale_run_dir
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve
from ust.stages import (
    builds_substitutes,
    output_dir,
    shown,
    smoke_config,
    stage_teacher,
    student_training,
    substitutes_dir,
)
from ust.train.device import resolve_device

if TYPE_CHECKING:
    from ust.experiments.mvtec_baselines import FeatureBaselineSettings, SSIMAEBaselineSettings
    from ust.experiments.mvtec_single import MVTecRunSettings


def mvtec_root(config: PipelineConfig | None = None) -> Path:
    """The MVTec-layout data root of ``mvtec_data``; with ``synthetic: true`` the texture set is
    (re)built there first when it is missing or differs from the parameters (the ``mvtec_data``
    stage builds the same bytes; an identical existing tree is kept untouched)."""
    config = config or load_config()
    data = config.mvtec_data
    root = resolve(data.root)
    if data.synthetic:
        from ust.experiments.mvtec_data import build_texture_set

        build_texture_set(root, config)
    elif not root.is_dir():
        raise FileNotFoundError(
            f"MVTec AD not found at {root}: download it from MVTec (CC BY-NC-SA 4.0), unpack it so "
            f"that {root}/<category>/train/good exists, or set mvtec_data.root in params.yaml"
        )
    return root


def mvtec_data_root(
    category: str, out_dir: str | os.PathLike | None = None, config: PipelineConfig | None = None
) -> Path:
    """:func:`mvtec_root`, or, when the real MVTec AD folder (``mvtec_data.synthetic: false``) is
    missing and :func:`ust.stages.builds_substitutes` allows it for ``out_dir``, the smoke-size
    synthetic set of ``profiles/smoke.yaml`` under ``<out_dir>/substitutes/mvtec_data`` (only for
    the texture-set categories, :data:`ust.data.textures.CATEGORIES`)."""
    config = config or load_config()
    data = config.mvtec_data
    if data.synthetic or resolve(data.root).is_dir() or not builds_substitutes(out_dir):
        return mvtec_root(config)
    from ust.data.synthetic import make_synthetic_mvtec
    from ust.data.textures import CATEGORIES

    if category not in CATEGORIES:
        mvtec_root(config)  # raises the usual "MVTec AD not found" error
    smoke = smoke_config().mvtec_data
    root = substitutes_dir(out_dir) / "mvtec_data"
    if not (root / category).is_dir():
        print(
            f"MVTec AD not found at {shown(data.root)}: building the smoke-size synthetic "
            f"MVTec-layout set ({smoke.image_size} px, {smoke.n_train} training images) at "
            f"{shown(root)}; it is not the paper's data."
        )
    make_synthetic_mvtec(
        root,
        categories=[category],
        image_size=smoke.image_size,
        n_train=smoke.n_train,
        n_test_good=smoke.n_test_good,
        n_test_defect_per_type=smoke.n_test_defect_per_type,
        seed=smoke.seed,
        texture_dir=data.texture_dir,
    )
    return root


def mvtec_settings(category: str) -> MVTecTrainConfig:
    """``mvtec_train`` with the per-category overrides ``mvtec_category.<category>`` merged in."""
    return load_config().mvtec_train_for(category)


def run_settings(train: MVTecTrainConfig) -> MVTecRunSettings:
    """``mvtec_train`` (one category's) → :class:`ust.experiments.mvtec_single.MVTecRunSettings`."""
    from ust.experiments.mvtec_single import MVTecRunSettings
    from ust.train.fit import FitSettings

    return MVTecRunSettings(
        fit=FitSettings(
            image_size=train.image_size,
            students=train.students,
            training=student_training(train),
            val_fraction=train.val_fraction,
            seed=train.seed,
        )
    )


def feature_baseline_settings(
    base: MVTecBaselinesConfig, train: MVTecTrainConfig
) -> FeatureBaselineSettings:
    """``mvtec_baselines`` with the students' image size and split → the feature baselines'
    :class:`ust.experiments.mvtec_baselines.FeatureBaselineSettings`."""
    from ust.experiments.mvtec_baselines import FeatureBaselineSettings

    return FeatureBaselineSettings(
        image_size=train.image_size,
        val_fraction=train.val_fraction,
        seed=train.seed,
        methods=base.methods,
        n_1nn=base.n_1nn,
        n_fit=base.n_fit,
        ae_epochs=base.ae_epochs,
        ae_lr=base.ae_lr,
        ae_batch=base.ae_batch,
        ae_weight_decay=base.ae_weight_decay,
        ocsvm_solver=base.ocsvm_solver,
        ocsvm_components=base.ocsvm_components,
        raw_patch=base.raw_patch,
        raw_grid=base.raw_grid,
        raw_bank=base.raw_bank,
        raw_stride=base.raw_stride,
        raw_padding=base.raw_padding,
    )


def ssim_ae_settings(
    base: MVTecBaselinesConfig, train: MVTecTrainConfig, *, progress: bool
) -> SSIMAEBaselineSettings:
    """``mvtec_baselines.ssim_ae_*`` with the students' split → the SSIM-AE baseline's settings."""
    from ust.baselines.ssim_ae import SSIMAEConfig
    from ust.experiments.mvtec_baselines import SSIMAEBaselineSettings

    return SSIMAEBaselineSettings(
        image_size=base.ssim_ae_image_size,
        stride=base.ssim_ae_stride,
        autoencoder=SSIMAEConfig(
            epochs=base.ssim_ae_epochs,
            num_patches=base.ssim_ae_patches,
            batch_size=base.ssim_ae_batch,
            seed=train.seed,
            progress=progress,
            max_rotation=base.ssim_ae_max_rotation,
            max_translation=base.ssim_ae_max_translation,
        ),
        texture_categories=base.texture_categories,
        hflip_categories=base.ssim_ae_hflip_categories,
        vflip_categories=base.ssim_ae_vflip_categories,
        object_latent_dim=base.ssim_ae_object_latent_dim,
        val_fraction=train.val_fraction,
        seed=train.seed,
    )


def single_scale_dirs(
    category: str,
    single_scale_root: str | os.PathLike = "results/mvtec",
    config: PipelineConfig | None = None,
) -> dict[int, Path]:
    """``{p: <single_scale_root>/<category>/p<p>}`` for every p of ``mvtec.patch_sizes``."""
    config = config or load_config()
    root = resolve(single_scale_root)
    return {p: single_scale_run_dir(root, category, p) for p in config.mvtec.patch_sizes}


def run_mvtec_single_scale(
    category: str, patch_size: int, out_dir: str | os.PathLike, *, progress: bool = True
) -> dict:
    """One ensemble of receptive field ``patch_size`` on ``category``; see
    :func:`ust.experiments.mvtec_single.run_single_scale` for the files written to ``out_dir``."""
    from ust.experiments.mvtec_single import run_single_scale

    config = load_config()
    train = config.mvtec_train_for(category)
    device = resolve_device(train.device)
    return run_single_scale(
        mvtec_data_root(category, out_dir, config),
        category,
        int(patch_size),
        stage_teacher(patch_size, train.teacher_losses, device, out_dir=out_dir),
        output_dir(out_dir),
        run_settings(train),
        device=device,
        progress=progress,
    )


@dataclass(frozen=True)
class MultiscaleInputs:
    """What a multiscale run reads: the MVTec-layout ``data_root`` and the finished single-scale
    run folder of each receptive field, ``single_scale_dirs = {p: folder}``."""

    data_root: Path
    single_scale_dirs: dict[int, Path]


def _substitute_single_scale(
    category: str, p: int, out_dir: str | os.PathLike, data_root: Path, config: PipelineConfig
) -> Path:
    """``<out_dir>/substitutes/mvtec/<category>/p<p>``: a single-scale run with the ``mvtec_train``
    sizes of ``profiles/smoke.yaml``, trained first when it has not finished."""
    from ust.experiments.mvtec_single import run_single_scale

    folder = single_scale_run_dir(substitutes_dir(out_dir) / "mvtec", category, p)
    if (folder / "metrics.json").exists():
        return folder
    smoke = smoke_config().mvtec_train_for(category)
    losses = config.mvtec_train_for(category).teacher_losses
    device = resolve_device(smoke.device)
    print(
        f"no finished single-scale run for p = {p}: training a smoke-size substitute "
        f"({smoke.students} students, {smoke.epochs} epoch(s) at {smoke.image_size} px) into "
        f"{shown(folder)}; `dvc repro mvtec` runs the real ones."
    )
    run_single_scale(
        data_root,
        category,
        int(p),
        stage_teacher(p, losses, device, out_dir=out_dir),
        folder,
        run_settings(smoke),
        device=device,
        progress=False,
    )
    return folder


def multiscale_inputs(
    category: str,
    single_scale_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: PipelineConfig | None = None,
) -> MultiscaleInputs:
    """The data root (:func:`mvtec_data_root`) and the single-scale runs
    ``<single_scale_root>/<category>/p<p>`` of every p of ``mvtec.patch_sizes``; a run that has not
    finished is replaced by a smoke-size substitute when :func:`ust.stages.builds_substitutes`
    allows it for ``out_dir`` (otherwise the multiscale run reports it missing)."""
    config = config or load_config()
    root = mvtec_data_root(category, out_dir, config)
    dirs = single_scale_dirs(category, single_scale_root, config)
    if builds_substitutes(out_dir):
        dirs = {
            p: d
            if (d / "metrics.json").exists()
            else _substitute_single_scale(category, p, out_dir, root, config)
            for p, d in dirs.items()
        }
    return MultiscaleInputs(root, dirs)


def run_mvtec_multiscale(
    category: str,
    single_scale_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> dict:
    """Multiscale fusion of the single-scale runs ``<single_scale_root>/<category>/p<p>`` (one per
    p of ``mvtec.patch_sizes``) plus the Table 2 baselines: the feature baselines on the
    descriptors of the p = ``mvtec_baselines.p`` teacher and the raw-pixel floor ``raw_nn`` (when
    ``methods`` is not empty; the teacher is loaded only for the teacher-feature methods) and the
    SSIM-AE (when ``ssim_ae_epochs > 0``). Writes metrics.json (multiscale), table.json/.csv,
    baselines.json and ssim_ae.json to ``out_dir``; returns {"multiscale", "baselines", "ssim_ae"}
    results (the last two when run). Missing inputs: see :func:`multiscale_inputs`."""
    from ust.experiments.mvtec_baselines import run_feature_baselines, run_ssim_ae_baseline
    from ust.experiments.mvtec_multiscale import run_multiscale

    config = load_config()
    train, base = config.mvtec_train_for(category), config.mvtec_baselines
    device = resolve_device(train.device)
    inputs = multiscale_inputs(category, single_scale_root, out_dir, config)
    root, dirs = inputs.data_root, inputs.single_scale_dirs
    out = output_dir(out_dir)
    result = {"multiscale": run_multiscale(dirs, root, category, out, progress=progress)}
    if base.methods:
        from ust.experiments.mvtec_baselines import RAW_METHODS

        needs_teacher = set(base.methods) - set(RAW_METHODS)
        result["baselines"] = run_feature_baselines(
            root,
            category,
            stage_teacher(base.p, train.teacher_losses, device, out_dir=out)
            if needs_teacher
            else None,
            out,
            feature_baseline_settings(base, train),
            device=device,
            progress=progress,
        )
    if base.ssim_ae_epochs > 0:
        result["ssim_ae"] = run_ssim_ae_baseline(
            root,
            category,
            out,
            ssim_ae_settings(base, train, progress=progress),
            device=device,
            progress=progress,
        )
    return result
