"""Glue between ``params.yaml`` and the library, called by the notebooks so that they stay thin:
one module per stage family (:mod:`.teacher`, :mod:`.oneclass`, :mod:`.mvtec`, :mod:`.mds`) and the
helpers they share, here.

Identity (patch size, loss configuration, category, output folder) comes in as papermill
parameters; hyperparameters come from the active ``params.yaml``, read and validated once per call
by :func:`ust.experiments.config.load_config` (typed sections), then passed to the experiment
functions as settings objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ust.experiments.outputs import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve

if TYPE_CHECKING:
    from ust.experiments.config import MVTecTrainConfig, OneClassTrainConfig


def output_dir(path: str | os.PathLike) -> Path:
    """Resolve a stage output folder against the repository root and create it."""
    out = resolve(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


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


def load_stage_teacher(patch_size: int, losses: str, device: str = "cpu"):
    """The teacher that stage `teacher@p<patch_size>-<losses>` wrote, on ``device``."""
    from ust.method.teacher import load_teacher

    return load_teacher(teacher_path(patch_size, losses), device=device)


def student_training(section: MVTecTrainConfig | OneClassTrainConfig):
    """The :class:`ust.train.students.StudentTrainingConfig` of a typed section's training keys
    (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``)."""
    from ust.train.students import StudentTrainingConfig

    return StudentTrainingConfig(
        epochs=section.epochs,
        batch_size=section.batch_size,
        lr=section.lr,
        weight_decay=section.weight_decay,
        seed=section.seed,
    )
