"""Stage `mds` (notebook 40): the students of Figure 4 and the embedding the report draws."""

from __future__ import annotations

import os

from ust.experiments.config import load_config
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve
from ust.stages.oneclass import load_oneclass_task, student_settings
from ust.stages.shared import stage_teacher
from ust.train.device import resolve_device

#: the file Figure 4 is drawn from (in the stage's output folder)
EMBEDDING = "embedding.npz"


def train_mds_students(*, progress: bool = True, out_dir: str | os.PathLike | None = None):
    """Students of Figure 4 (``mds``: dataset, normal class, M) with the ``oneclass_train`` settings
    of that dataset (``oneclass_dataset.<dataset>`` merged over them);
    returns (trained vector-mode model, the one-class task, :func:`run_students` result).

    ``out_dir``: the stage's output folder; when it lies outside the pipeline's outputs and the
    teacher has not been trained, a smoke-size substitute is built there
    (:func:`ust.stages.stage_teacher`)."""
    from ust.experiments.oneclass import run_students

    config = load_config()
    mds = config.mds
    train = config.oneclass_train_for(mds.dataset)
    data = load_oneclass_task(mds.dataset, mds.normal_class, config=config)
    device = resolve_device(train.device)
    teacher = stage_teacher(train.p, mds.teacher_losses, device, out_dir=out_dir)
    result = run_students(
        data,
        teacher,
        student_settings(train, students=mds.students),
        device=device,
        progress=progress,
        teacher_config=mds.teacher_losses,
    )
    return result["model"], data, result


def write_mds_embedding(model, data, result: dict, out_dir: str | os.PathLike):
    """``<out_dir>/embedding.npz``: what Figure 4 shows (:func:`ust.experiments.mds.mds_embedding`
    of :func:`train_mds_students` output, seeded by ``mds.seed``), for the report to draw;
    returns the path."""
    from ust.experiments.mds import mds_embedding, save_embedding

    arrays = mds_embedding(
        None,
        model,
        data,
        seed=load_config().mds.seed,
        stats=result["score_stats"],
        scores=result["scores"],
    )
    return save_embedding(arrays, resolve(out_dir) / EMBEDDING)
