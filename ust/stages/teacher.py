"""Stage `teacher@p<p>-<losses>` (notebook 10): the teacher configuration of one stage."""

from __future__ import annotations

from typing import Any

from ust.experiments.outputs import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.experiments.params import section

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
