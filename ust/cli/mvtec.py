"""``ust mvtec``: train and evaluate Student-Teacher ensembles on one MVTec-layout category."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ust.paths import resolve
from ust.train.fit import FitSettings


def add_mvtec_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mvtec",
        help="train students on one MVTec-layout category and evaluate them",
        description=(
            "Trains M students per receptive field on <data-root>/<category>/train/good (90 %; "
            "10 % validate the score normalisation), writes anomaly maps of the test images as TIFF "
            "in the official MVTec AD evaluation layout (<out>/p<p>/maps/<category>/test/<defect>/"
            "<id>.tiff), and metrics.json with au_pro (FPR <= 0.3), pixel_auroc and image_auroc per "
            "scale and for the multiscale fusion (<out>/multiscale). The folder layout is validated "
            "before training; an interrupted run resumes from its last epoch when called again."
        ),
    )
    p.add_argument(
        "--data-root",
        required=True,
        type=Path,
        help="folder holding <category>/train/good, test/, ground_truth/",
    )
    p.add_argument(
        "--category", required=True, help="category folder name (any name: your own data works)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--patch-sizes",
        type=int,
        nargs="+",
        default=[17, 33, 65],
        choices=[17, 33, 65],
        help="receptive fields; more than one adds the multiscale fusion (default: 17 33 65)",
    )
    defaults = FitSettings()  # the paper's settings, declared once
    p.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help=f"side the images are zoomed to (default {defaults.image_size})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=defaults.training.epochs,
        help=f"student training epochs (default {defaults.training.epochs})",
    )
    p.add_argument(
        "--students",
        type=int,
        default=defaults.students,
        help=f"students per receptive field (default {defaults.students})",
    )
    p.add_argument(
        "--teacher-dir",
        type=Path,
        default=None,
        help="folder with p<p>.pt teachers (from `ust teacher`) or the pipeline's "
        "results/teachers (default)",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="torch device (default cpu)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the split, initialisation and data order"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_mvtec)


def run_mvtec(args: argparse.Namespace) -> int:
    from ust.detector.outputs import os_error_message

    try:
        return _run_mvtec(args)
    except OSError as e:  # e.g. a file inside --out in the way: one line, not a traceback
        raise ValueError(os_error_message(e)) from e


def _run_mvtec(args: argparse.Namespace) -> int:
    from ust.data.mvtec import validate_category
    from ust.detector.outputs import check_output_dir
    from ust.experiments.mvtec_multiscale import run_multiscale
    from ust.experiments.mvtec_single import MVTecRunSettings, run_single_scale
    from ust.io import write_json
    from ust.method.teacher import find_teacher
    from ust.train.students import StudentTrainingConfig

    if args.epochs < 1 or args.students < 1 or args.image_size < 8:
        raise ValueError("--epochs and --students must be >= 1 and --image-size >= 8")
    args.data_root, args.out = args.data_root.resolve(), args.out.resolve()  # relative to the cwd
    validate_category(args.data_root, args.category)  # before anything is trained or written
    teacher_dir = args.teacher_dir or resolve("results/teachers")
    teachers = {p: find_teacher(teacher_dir, p) for p in args.patch_sizes}
    check_output_dir(args.out)  # an existing file, or an unwritable folder: before any training
    settings = MVTecRunSettings(
        fit=FitSettings(
            image_size=args.image_size,
            students=args.students,
            training=StudentTrainingConfig(epochs=args.epochs, batch_size=1, seed=args.seed),
            seed=args.seed,
        )
    )
    results, dirs = {}, {}
    for p, teacher in teachers.items():
        dirs[p] = args.out / f"p{p}"
        m = run_single_scale(
            args.data_root,
            args.category,
            teacher,
            dirs[p],
            settings,
            device=args.device,
            progress=not args.no_progress,
        )
        results[f"p{p}"] = {k: m[k] for k in ("au_pro", "pixel_auroc", "image_auroc")}
    if len(dirs) > 1:
        m = run_multiscale(
            dirs,
            args.data_root,
            args.category,
            args.out / "multiscale",
            progress=not args.no_progress,
        )
        results["multiscale"] = {k: m[k] for k in ("au_pro", "pixel_auroc", "image_auroc")}
    write_json(results, args.out / "metrics.json")
    print(json.dumps(results, indent=2))
    return 0
