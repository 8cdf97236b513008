"""Glue between ``params.yaml`` and the library, called by the notebooks so that they stay thin.

Identity (patch size, loss configuration, category, output folder) comes in as papermill
parameters; hyperparameters come from the active ``params.yaml`` sections listed by the DVC stage.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from ust.config import section
from ust.paths import resolve

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
    """The :class:`ust.teacher.TeacherConfig` of one teacher stage, from the ``teacher`` section."""
    from ust.teacher import TeacherConfig

    values = section("teacher")
    values.update(patch_size=int(patch_size), **loss_weights(losses), **overrides)
    return TeacherConfig.from_dict(values)


def output_dir(path: str | os.PathLike) -> Path:
    """Resolve a stage output folder against the repository root and create it."""
    out = resolve(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write ``data`` as pretty JSON atomically (numpy scalars converted, NaN → null)."""
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_clean(data), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> dict:
    with open(resolve(path)) as f:
        return json.load(f)
