"""Stage `mvtec_multiscale@<category>` (notebook 31): the multiscale fusion of the single-scale runs
and the Table 2 baselines, written to ``results/mvtec_multiscale/<category>/``.

Run interactively (``out_dir`` outside ``results/``, see :func:`ust.stages.builds_substitutes`), a
missing single-scale run is trained at smoke size under ``<out_dir>/substitutes/`` first, with a
message (:func:`multiscale_inputs`); under DVC nothing is substituted.
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
from ust.stages import output_dir
from ust.stages.mvtec import mvtec_data_root, run_settings, single_scale_dirs
from ust.stages.shared import (
    builds_substitutes,
    fit_settings,
    shown,
    smoke_config,
    stage_teacher,
    substitutes_dir,
)
from ust.train.device import resolve_device

if TYPE_CHECKING:
    from ust.experiments.mvtec_baselines import FeatureBaselineSettings, SSIMAEBaselineSettings


def feature_baseline_settings(
    base: MVTecBaselinesConfig, train: MVTecTrainConfig
) -> FeatureBaselineSettings:
    """``mvtec_baselines`` with the students' image size and split → the feature baselines'
    :class:`ust.experiments.mvtec_baselines.FeatureBaselineSettings`."""
    from ust.experiments.mvtec_baselines import FeatureBaselineSettings

    return FeatureBaselineSettings.from_sections(base, fit_settings(train))


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
