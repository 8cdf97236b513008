"""Stage `teacher@p<p>-<losses>` (notebook 10): the teacher configuration of one stage."""

from __future__ import annotations

from typing import Any

from ust.experiments.config import LOSS_LETTERS, load_config, loss_weights  # noqa: F401
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)


def teacher_config(patch_size: int, losses: str, **overrides: Any):
    """The :class:`ust.method.teacher.TeacherConfig` of one teacher stage: the ``teacher`` section
    with receptive field ``patch_size`` and the Table 1 loss letters ``losses`` (``overrides``
    replace further fields)."""
    return load_config().teacher_for(patch_size, losses, **overrides)
