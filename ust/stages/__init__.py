"""Glue between ``params.yaml`` and the library, called by the notebooks so that they stay thin:
one module per stage family (:mod:`.teacher`, :mod:`.oneclass`, :mod:`.mvtec`, :mod:`.mds`) and the
helpers they share, here.

Identity (patch size, loss configuration, category, output folder) comes in as papermill
parameters; hyperparameters come from the active ``params.yaml``, read and validated once per call
by :func:`ust.experiments.config.load_config` (typed sections), then passed to the experiment
functions as settings objects.

Substitutes for interactive runs: a stage whose ``out_dir`` lies outside the pipeline's outputs
(``results/``, ``figures/``; e.g. the notebooks' ``scratch/`` defaults) and whose input is missing
(the pipeline has not run) builds that input at smoke size (``profiles/smoke.yaml``) under
``<out_dir>/substitutes/`` and says so. Under DVC every ``out_dir`` is in ``results/``: a missing
input raises the usual error and nothing is substituted.
"""

from __future__ import annotations

import os
from pathlib import Path

from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import ROOT, resolve


def output_dir(path: str | os.PathLike) -> Path:
    """Resolve a stage output folder against the repository root and create it."""
    out = resolve(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


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
