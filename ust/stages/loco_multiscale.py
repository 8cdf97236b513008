"""Stage `loco_multiscale@<category>` (notebook 32): the multiscale Student–Teacher and GCAD on one
MVTec LOCO AD category, from the finished scale runs ``results/loco/<category>/p<p>`` (stage
``loco``), written to ``results/loco_multiscale/<category>/`` by
:func:`ust.experiments.loco.run_loco_multiscale`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ust.experiments.config import PipelineConfig, load_config
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve
from ust.stages import output_dir
from ust.stages.shared import (
    builds_substitutes,
    shown,
    smoke_config,
    stage_teacher,
    substitutes_dir,
)


def data_root(config: PipelineConfig | None = None) -> Path:
    """The MVTec LOCO AD root the scale runs read (``loco_data.root``)."""
    return resolve((config or load_config()).loco_data.root)


def scale_dirs(
    category: str, scale_root: str | os.PathLike = "results/loco", config=None
) -> dict[int, Path]:
    """``{p: <scale_root>/<category>/p<p>}`` for every p of ``loco.patch_sizes``."""
    config = config or load_config()
    return {int(p): resolve(scale_root) / category / f"p{int(p)}" for p in config.loco.patch_sizes}


@dataclass(frozen=True)
class LocoInputs:
    """What the multiscale run reads: the LOCO data root and each scale's run folder."""

    data_root: Path
    scale_dirs: dict[int, Path]


def inputs(category: str, scale_root: str | os.PathLike, out_dir: str | os.PathLike) -> LocoInputs:
    """The data root and the scale runs ``<scale_root>/<category>/p<p>``. Run interactively
    (``out_dir`` outside ``results/``, :func:`ust.stages.builds_substitutes`) before the pipeline,
    the missing inputs are built at smoke size (``profiles/smoke.yaml``) under
    ``<out_dir>/substitutes/`` first, with a message; under DVC nothing is substituted."""
    config = load_config()
    dirs = scale_dirs(category, scale_root, config)
    root = data_root(config)
    missing = [p for p, d in dirs.items() if not (d / "st" / "metrics.json").is_file()]
    if not missing or not builds_substitutes(out_dir):
        return LocoInputs(root, dirs)
    return _substitutes(category, out_dir, dirs, missing)


def _substitutes(category, out_dir, dirs, missing) -> LocoInputs:
    from ust.experiments.loco import run_loco_scale
    from ust.stages.loco import settings
    from ust.stages.loco_data import build_loco_set

    smoke = smoke_config()
    data = smoke.loco_data
    root = substitutes_dir(out_dir) / "loco_data"
    print(
        f"no finished LOCO scale run for p = {missing}: building the smoke-size scene set in "
        f"{shown(root)} and smoke-size runs beside it; `dvc repro loco` runs the real ones."
    )
    build_loco_set(root, data, [category])
    subs = {}
    for p in dirs:
        subs[p] = substitutes_dir(out_dir) / "loco" / category / f"p{p}"
        if not (subs[p] / "st" / "metrics.json").is_file():
            teacher = stage_teacher(p, smoke.loco_train.teacher_losses, "cpu", out_dir=out_dir)
            run_loco_scale(root, category, teacher, subs[p], settings(smoke, p))
    return LocoInputs(root, subs)


def run(category: str, inputs: LocoInputs, out_dir: str | os.PathLike) -> dict[str, dict]:
    """The stage: ``{method: fused metrics.json dict}`` in ``out_dir``."""
    from ust.experiments.loco import run_loco_multiscale

    return run_loco_multiscale(inputs.scale_dirs, inputs.data_root, category, output_dir(out_dir))
