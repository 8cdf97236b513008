"""Stage `loco@<category>-<p>`: the Student–Teacher and GCAD at one receptive field on one MVTec LOCO
AD category (``python -m ust.stages.loco --category C --p P --out results/loco/C/pP``).

Settings: ``loco_train`` (the Student–Teacher scale and the image size), ``gcad`` (GCAD, run at
the receptive fields ``gcad.patch_sizes``; ``gcad.epochs: 0`` skips it); data: ``loco_data.root``
(built by the ``loco_data`` stage when synthetic); teachers: the teacher stages'
``results/teachers/p<p>/<loco_train.teacher_losses>``. Writes what
:func:`ust.experiments.loco.run_loco_scale` writes.
"""

from __future__ import annotations

import argparse
import os
import sys

from ust.experiments.config import PipelineConfig, load_config
from ust.paths import resolve
from ust.stages import output_dir
from ust.stages.shared import fit_settings, gcad_settings, stage_teacher
from ust.train.device import resolve_device


def settings(config: PipelineConfig, patch_size: int):
    """The :class:`ust.experiments.loco.LocoRunSettings` of scale ``patch_size``."""
    from ust.experiments.loco import LocoRunSettings

    train, gcad = config.loco_train, config.gcad
    run_gcad = gcad.epochs > 0 and int(patch_size) in gcad.patch_sizes
    return LocoRunSettings(
        st=fit_settings(train),
        gcad=gcad_settings(gcad, train.image_size) if run_gcad else None,
    )


def run(
    category: str, patch_size: int, out_dir: str | os.PathLike, *, progress: bool = False
) -> dict[str, dict]:
    """The stage: ``{method: metrics.json dict}`` of the scale run in ``out_dir``."""
    from ust.experiments.loco import run_loco_scale

    config = load_config()
    device = resolve_device(config.loco_train.device)
    teacher = stage_teacher(patch_size, config.loco_train.teacher_losses, device, out_dir=out_dir)
    return run_loco_scale(
        resolve(config.loco_data.root),
        category,
        teacher,
        output_dir(out_dir),
        settings(config, patch_size),
        device=device,
        progress=progress,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ust.stages.loco", description=__doc__)
    parser.add_argument("--category", required=True)
    parser.add_argument("--p", type=int, required=True, help="receptive field")
    parser.add_argument("--out", required=True, help="output folder of the scale run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = run(args.category, args.p, args.out)
    for method, m in results.items():
        print(f"{args.category} p={args.p} {method}: AU-sPRO (FPR 0.05) {m['au_spro']:.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised by the DVC pipeline tests
    raise SystemExit(main())
