"""What the stage modules share: the teachers the teacher stages wrote, smoke-size substitutes for
interactive runs (see :mod:`ust.stages`), and the mapping of ``params.yaml`` sections onto the
library's settings. Kept out of ``ust/stages/__init__.py`` so that a stage that needs none of it
(``strip_notebooks``, ``html``) does not depend on the training code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ust.paths import ROOT, resolve

if TYPE_CHECKING:
    from ust.experiments.config import GCADSectionConfig, MVTecTrainConfig, OneClassTrainConfig


# --------------------------------------------------------------------------------------------------
# Teachers produced by the teacher stages


#: where the teacher stages write their teachers (``p<p>/<losses>/teacher.pt``)
TEACHERS = "results/teachers"


def stage_teacher_file(patch_size: int, losses: str) -> Path:
    """``results/teachers/p<p>/<losses>/teacher.pt`` (absolute), whether it exists or not
    (:func:`ust.method.teacher.teacher_file`)."""
    from ust.method.teacher import teacher_file

    return teacher_file(resolve(TEACHERS), patch_size, losses)


# --------------------------------------------------------------------------------------------------
# Smoke-size substitutes for interactive runs (see the module docstring)

#: the folders the pipeline writes; a stage writing elsewhere may build missing inputs
PIPELINE_OUTPUTS = ("results", "figures")
#: the parameter file whose sizes the substitutes use
SMOKE_PROFILE = "profiles/smoke.yaml"


def builds_substitutes(out_dir: str | os.PathLike | None) -> bool:
    """True when a stage writing to ``out_dir`` may build its missing inputs at smoke size: any
    folder outside ``results/`` and ``figures/`` (``None``: never)."""
    if out_dir is None:
        return False
    out = resolve(out_dir).resolve()
    return not any(out == ROOT / d or (ROOT / d) in out.parents for d in PIPELINE_OUTPUTS)


def substitutes_dir(out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/substitutes``: where a stage builds the inputs the pipeline has not made."""
    return resolve(out_dir) / "substitutes"


def smoke_config():
    """The typed ``profiles/smoke.yaml`` (:class:`ust.experiments.config.PipelineConfig`)."""
    from ust.experiments.config import load_config

    return load_config(SMOKE_PROFILE)


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when inside it, for messages."""
    from ust.experiments.config import display_path

    return display_path(path)


def substitute_teacher(patch_size: int, losses: str, out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/substitutes/teachers/p<p>/<losses>/teacher.pt``, pretrained first (with the
    ``teacher`` section of ``profiles/smoke.yaml``: a few iterations) when it does not exist yet."""
    from ust.train.teacher import pretrain

    folder = substitutes_dir(out_dir) / "teachers" / f"p{int(patch_size)}" / losses
    path = folder / "teacher.pt"
    if path.exists():
        print(f"using the smoke-size substitute teacher {shown(path)}")
        return path
    config = smoke_config().teacher_for(patch_size, losses)
    print(
        f"{shown(stage_teacher_file(patch_size, losses))} does not "
        f"exist (the teacher stage has not run): pretraining a smoke-size substitute "
        f"({SMOKE_PROFILE}: {config.iterations} iterations) into {shown(path)}. It runs every step "
        "but detects little; `dvc repro teacher` trains the real one."
    )
    pretrain(config, path, checkpoint_path=folder / "checkpoint.pt", progress=False)
    return path


def stage_teacher(
    patch_size: int, losses: str, device="cpu", *, out_dir: str | os.PathLike | None = None
):
    """The teacher that stage `teacher@p<patch_size>-<losses>` wrote (found by
    :func:`ust.method.teacher.find_teacher`, which says how to train a missing one), or, when that
    file is missing and :func:`builds_substitutes` allows it for ``out_dir``, a smoke-size
    substitute (:func:`substitute_teacher`)."""
    from ust.method.teacher import find_teacher, load_teacher

    if stage_teacher_file(patch_size, losses).exists() or not builds_substitutes(out_dir):
        return load_teacher(find_teacher(resolve(TEACHERS), patch_size, losses), device=device)
    return load_teacher(substitute_teacher(patch_size, losses, out_dir), device=device)


# --------------------------------------------------------------------------------------------------
# params.yaml sections → the library's settings (the one place each key is mapped)


def student_training(section: MVTecTrainConfig | OneClassTrainConfig, **extra: Any):
    """:class:`ust.train.students.StudentTrainingConfig` from a section's ``epochs``,
    ``batch_size``, ``lr``, ``weight_decay`` and ``seed`` (``mvtec_train``/``loco_train`` add
    ``batched``, ``crop``, ``schedule``, ``warmup`` and ``padding``)."""
    from ust.train.students import StudentTrainingConfig

    for key in ("batched", "crop", "schedule", "warmup", "padding"):
        if hasattr(section, key):
            extra.setdefault(key, getattr(section, key))
    return StudentTrainingConfig(
        epochs=section.epochs,
        batch_size=section.batch_size,
        lr=section.lr,
        weight_decay=section.weight_decay,
        seed=section.seed,
        **extra,
    )


def fit_settings(section: MVTecTrainConfig):
    """:class:`ust.train.fit.FitSettings` of a ``mvtec_train``-like section (one scale)."""
    from ust.train.fit import FitSettings

    return FitSettings(
        image_size=section.image_size,
        students=section.students,
        training=student_training(section),
        val_fraction=section.val_fraction,
        seed=section.seed,
    )


def gcad_settings(section: GCADSectionConfig, image_size: int):
    """:class:`ust.train.gcad.GCADFitSettings` of the ``gcad`` section for ``image_size`` px."""
    from ust.method.gcad import GCADConfig
    from ust.train.gcad import GCADFitSettings, GCADTrainingConfig

    model = GCADConfig(
        image_size=image_size,
        g=section.g,
        d_glo=section.d_glo,
        unet_depth=section.unet_depth,
        unet_width=section.unet_width,
    )
    training = GCADTrainingConfig.for_budget(
        section.epochs,
        batch_size=section.batch_size,
        lr=section.lr,
        weight_decay=section.weight_decay,
        seed=section.seed,
        augment=section.augment,
    )
    return GCADFitSettings(model=model, training=training, seed=section.seed)
