"""Stage `mds` (notebook 40): the students and the drawing of Figure 4."""

from __future__ import annotations

import os

from ust.experiments.config import load_config
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.stages import stage_teacher
from ust.stages.oneclass import load_oneclass_task, student_settings
from ust.train.device import resolve_device


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


def draw_mds_figure(model, data, result: dict, path: str | os.PathLike):
    """Draw Figure 4 from :func:`train_mds_students` output; returns (figure, embedding data)."""
    from ust.report.figures_oneclass import mds_figure as draw

    return draw(
        None,
        model,
        data,
        path=path,
        seed=load_config().mds.seed,
        stats=result["score_stats"],
        scores=result["scores"],
    )
