"""Stage `mvtec@<category>-<p>` (notebook 30): one single-scale run, written to
``results/mvtec/<category>/p<p>/``; the multiscale stage is :mod:`ust.stages.mvtec_multiscale`.

Run interactively (``out_dir`` outside ``results/``, see :func:`ust.stages.builds_substitutes`), a
missing teacher or a missing MVTec AD folder is built at smoke size under ``<out_dir>/substitutes/``
first, with a message (:func:`mvtec_data_root`); under DVC nothing is substituted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ust.experiments.config import (
    MVTecTrainConfig,
    PipelineConfig,
    load_config,
)
from ust.experiments.outputs import single_scale_run_dir
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve
from ust.stages import output_dir
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
    from ust.experiments.mvtec_single import MVTecRunSettings


def mvtec_root(config: PipelineConfig | None = None) -> Path:
    """The MVTec-layout data root of ``mvtec_data``; with ``synthetic: true`` the texture set is
    (re)built there first when it is missing or differs from the parameters (the ``mvtec_data``
    stage builds the same bytes; an identical existing tree is kept untouched)."""
    config = config or load_config()
    data = config.mvtec_data
    root = resolve(data.root)
    if data.synthetic:
        from ust.stages.mvtec_data import build_texture_set

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

    return MVTecRunSettings(fit=fit_settings(train))


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
        stage_teacher(patch_size, train.teacher_losses, device, out_dir=out_dir),
        output_dir(out_dir),
        run_settings(train),
        device=device,
        progress=progress,
    )
