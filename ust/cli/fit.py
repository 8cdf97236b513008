"""``ust fit``: fit a fused detector on anomaly-free images and write it to one file."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ust.detector.config import DEFAULT_PATCH_SIZES, METHODS, DetectorConfig
from ust.method.networks import PATCH_SIZES
from ust.method.teacher import find_teacher
from ust.paths import resolve
from ust.train.gcad import AUGMENTATIONS

RULES = ("max", "quantile", "k-sigma")


def add_fit_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a detector on a folder of anomaly-free images (writes one detector file)",
        description=(
            "Fits the fused detector (all --patch-sizes, mean of the normalised scores) on "
            "anomaly-free images only: the Student-Teacher (--method st, the paper) or GCAD "
            "(--method gcad, thesis ch. 7: a local and a global branch, for logical anomalies as "
            "well). A seeded 10 % of the images is held out to normalise the scores and to "
            "estimate the thresholds (max, quantile, k-sigma; --threshold picks the one that "
            "decides). Per-scale checkpoints go to <out>.work/ so that an interrupted run resumes "
            "when called again; the folder is removed when the detector is written. Prints a JSON "
            "summary."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_input_arguments(p)
    _add_training_arguments(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="torch device")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_fit)


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    """Where the good images, the teachers and the detector file are."""
    src = p.add_argument_group("good images (one of)")
    src.add_argument("--images", type=Path, help="folder of anomaly-free images (recursive)")
    src.add_argument(
        "--data-root", type=Path, help="MVTec-layout root: uses <root>/<category>/train/good"
    )
    src.add_argument("--category", help="category folder name under --data-root")
    p.add_argument(
        "--out", required=True, type=Path, help="detector file to write (e.g. detector.pt)"
    )
    p.add_argument(
        "--teacher-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="folder with p<p>.pt teachers (from `ust teacher`) or the pipeline's "
        "p<p>/<losses>/teacher.pt layout (default: the pipeline's results/teachers)",
    )


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """How the detector is fitted; every default is the field's default of DetectorConfig."""
    defaults = DetectorConfig()
    p.add_argument(
        "--method",
        choices=METHODS,
        default=defaults.method,
        help="st: Student-Teacher scales (paper); gcad: GCAD scales (thesis ch. 7)",
    )
    spelled = "; ".join(f"{' '.join(map(str, v))} for {k}" for k, v in DEFAULT_PATCH_SIZES.items())
    p.add_argument(
        "--patch-sizes",
        type=int,
        nargs="+",
        default=argparse.SUPPRESS,
        choices=list(PATCH_SIZES),
        help=f"receptive fields fused (default: {spelled})",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help="side the images are zoomed to (gcad: a multiple of 32)",
    )
    st = p.add_argument_group("Student-Teacher (--method st)")
    st.add_argument(
        "--epochs", type=int, default=defaults.training.epochs, help="student training epochs"
    )
    st.add_argument(
        "--batch-size",
        type=int,
        default=defaults.training.batch_size,
        help="images (or windows, with --crop) per step",
    )
    st.add_argument(
        "--crop",
        type=int,
        default=None,
        help="train on random N×N windows of output pixels inside each image instead of whole "
        "images (faster steps; default: whole images)",
    )
    st.add_argument(
        "--students", type=int, default=defaults.students, help="students per receptive field"
    )
    _add_gcad_arguments(p)
    p.add_argument(
        "--threshold",
        choices=RULES,
        default=defaults.threshold_rule.replace("_", "-"),
        help="threshold rule",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="share held out for validation",
    )
    p.add_argument(
        "--val-images",
        type=Path,
        default=None,
        help="folder of further anomaly-free images that calibrate the scores and thresholds "
        "(then every image of --images trains); more images support a lower --false-alarm-rate",
    )
    p.add_argument(
        "--false-alarm-rate",
        type=float,
        default=defaults.false_alarm_rate,
        help="target share of good images called anomalous; the image threshold is calibrated "
        "for it on the validation images",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of split, initialisation and data order",
    )


def _add_gcad_arguments(p: argparse.ArgumentParser) -> None:
    """GCAD's training and U-Net size; defaults: DetectorConfig(method="gcad").gcad (the thesis)."""
    gcad = DetectorConfig(method="gcad").gcad
    g = p.add_argument_group("GCAD (--method gcad)")
    g.add_argument(
        "--gcad-epochs",
        type=int,
        default=gcad.training.epochs,
        help="GCAD training epochs; the thesis' schedule (skip weights faded out by epoch 100, "
        "L_glo from epoch 50, of 500) is scaled to them",
    )
    g.add_argument(
        "--gcad-batch-size", type=int, default=gcad.training.batch_size, help="images per step"
    )
    g.add_argument(
        "--gcad-augment",
        nargs="*",
        choices=AUGMENTATIONS,
        default=list(gcad.training.augment),
        metavar="AUG",
        help=f"training augmentations among {', '.join(AUGMENTATIONS)} (thesis Tables 6.2, 7.4 "
        "per category)",
    )
    g.add_argument(
        "--gcad-unet-width",
        type=int,
        default=gcad.model.unet_width,
        help="channels of the first level of R_loc and R_glo (doubled per level)",
    )
    g.add_argument(
        "--gcad-unet-depth",
        type=int,
        default=gcad.model.unet_depth,
        help="levels of R_loc and R_glo",
    )


def _good_images(args: argparse.Namespace) -> list[Path]:
    """The good image files of ``--images`` or ``--data-root/--category`` (errors: ValueError)."""

    if (args.images is None) == (args.data_root is None):
        raise ValueError("give either --images DIR or --data-root ROOT --category NAME")
    if args.data_root is not None:
        if not args.category:
            raise ValueError("--data-root needs --category")
        folder = args.data_root / args.category / "train" / "good"
    else:
        folder = args.images
    return _image_files(folder)


def _image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (searched recursively); ValueError when it is no folder."""
    from ust.detector.images import collect_images

    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"image folder {folder} {what}")
    return [item.path for item in collect_images([folder])]


def _gcad_settings(args: argparse.Namespace):
    """GCADFitSettings of the GCAD options (None for --method st)."""
    from dataclasses import replace

    from ust.train.gcad import GCADFitSettings, GCADTrainingConfig

    if args.method != "gcad":
        return None
    base = DetectorConfig(method="gcad").gcad
    return GCADFitSettings(
        model=replace(
            base.model,
            image_size=args.image_size,
            unet_width=args.gcad_unet_width,
            unet_depth=args.gcad_unet_depth,
        ),
        training=GCADTrainingConfig.for_budget(
            args.gcad_epochs,
            batch_size=args.gcad_batch_size,
            lr=base.training.lr,
            weight_decay=base.training.weight_decay,
            seed=args.seed,
            augment=tuple(args.gcad_augment),
        ),
    )


def _config(args: argparse.Namespace):
    from ust.detector import DetectorConfig
    from ust.train.students import StudentTrainingConfig

    return DetectorConfig(
        patch_sizes=tuple(getattr(args, "patch_sizes", None) or ()) or None,
        image_size=args.image_size,
        students=args.students,
        training=StudentTrainingConfig(
            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, crop=args.crop
        ),
        val_fraction=args.val_fraction,
        seed=args.seed,
        threshold_rule=args.threshold,
        false_alarm_rate=args.false_alarm_rate,
        method=args.method,
        gcad=_gcad_settings(args),
    )


def run_fit(args: argparse.Namespace) -> int:
    from ust.detector import Detector
    from ust.detector.outputs import check_output_dir, check_output_file, os_error_message
    from ust.train.device import resolve_device

    try:
        config = _config(args)
        images = _good_images(args)
        val_images = _image_files(args.val_images) if args.val_images is not None else None
        teacher_dir = getattr(args, "teacher_dir", None) or resolve("results/teachers")
        teachers = {p: find_teacher(teacher_dir, p) for p in config.patch_sizes}
        out = check_output_file(args.out)
        work = check_output_dir(out.with_name(out.name + ".work"), "work folder")
        detector = Detector.fit(
            images,
            teachers,
            config,
            work_dir=work,
            device=resolve_device(args.device),
            progress=not args.no_progress,
            val_images=val_images,
        )
        detector.save(out)
        shutil.rmtree(work, ignore_errors=True)
    except OSError as e:  # a one-line message instead of a traceback (ust.cli.main)
        raise ValueError(os_error_message(e)) from e
    cal = detector.calibration
    image = detector.image_calibration
    summary = {
        "detector": str(out),
        "method": config.method,
        "patch_sizes": list(config.patch_sizes),
        "image_size": config.image_size,
        "n_train": len(images) - (len(cal.images) if val_images is None else 0),
        "n_val": len(cal.images),
        "threshold_rule": config.threshold_rule,
        "threshold": detector.threshold,
        "thresholds": cal.thresholds,
        "image_threshold": image.threshold,
        "false_alarm_rate": image.requested_rate,
        "supported_false_alarm_rate": image.supported_rate,
        "good_images_needed": image.images_needed,
    }
    print(json.dumps(summary, indent=2))
    print(image.summary, file=sys.stderr)
    if image.message:
        print(f"ust fit: {image.message}", file=sys.stderr)
    return 0
