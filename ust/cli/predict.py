"""``ust predict``: anomaly maps, overlays and scores of image files with a fitted detector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RULES = ("max", "quantile", "k-sigma")


def _threshold(value: str) -> str | float:
    if value in RULES:
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(RULES)} or a number, got {value!r}"
        ) from None


def add_predict_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="anomaly maps, overlays and scores of images with a detector from `ust fit`",
        description=(
            "Scores image files (folders are searched recursively; grayscale, RGBA and 16-bit "
            "images work) and writes <out>/maps/<name>.tiff (float32 anomaly map at the image's "
            "original size), <out>/overlays/<name>.png (heat map on a colour scale fixed by the "
            "detector's validation scores and threshold, pixels above the threshold outlined) and "
            "<out>/scores.csv (image,score,anomalous,threshold,name); with --report also "
            "<out>/report.html (one self-contained page to review the batch). <name> is the "
            "image's path relative to the folder it was found in, without suffix. An unreadable "
            "image is reported on stderr and skipped; the exit code is then 1. Errors: exit code 2."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument("--model", required=True, type=Path, help="detector file from `ust fit`")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--batch-size", type=int, default=8, help="images scored at once")
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="threshold rule (max, quantile, k-sigma) or a score value; default: the detector's",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help=(
            "also write <out>/report.html: every image beside its overlay, by score, with a name "
            "filter, an 'anomalous only' box and a threshold slider that re-labels the images and "
            "counts them live; one file, images inlined, opens in any browser offline"
        ),
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="torch device")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ust.detector import Detector
    from ust.detector.batch import predict_to_folder
    from ust.detector.outputs import os_error_message
    from ust.train.device import resolve_device

    def report(message: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"ust predict: skipped {message}", file=sys.stderr)  # above the progress bar

    try:
        detector = Detector.load(args.model, device=resolve_device(args.device))
        threshold = args.threshold
        if isinstance(threshold, str):
            detector.use_threshold(threshold)
            threshold = None
        summary = predict_to_folder(
            detector,
            args.paths,
            args.out,
            batch_size=args.batch_size,
            threshold=threshold,
            progress=not args.no_progress,
            on_skip=report,
        )
        page = write_predict_report(detector, summary, args.model) if args.report else None
    except OSError as e:  # a one-line message instead of a traceback (ust.cli.main)
        raise ValueError(os_error_message(e)) from e
    n = len(summary.rows) + len(summary.skipped)
    print(
        f"{len(summary.rows)} image(s) scored, {summary.n_anomalous} anomalous at image threshold "
        f"{summary.threshold:.6g}: {summary.out_dir / 'scores.csv'}"
    )
    if page is not None:
        print(f"report: {page}")
    if summary.skipped:
        print(
            f"ust predict: {len(summary.skipped)} of {n} image(s) could not be read and were "
            "skipped (listed above); the others were written",
            file=sys.stderr,
        )
        return 1
    return 0


def write_predict_report(detector, summary, model: Path) -> Path:
    """``<out>/report.html`` of a :func:`ust.detector.batch.predict_to_folder` run: each scored
    image with the overlay that run wrote, its score and decision; the slider starts at the
    image threshold the decisions were made with (:attr:`ust.detector.Prediction.image_threshold`)."""
    from ust.detector.report import ReportItem, write_report

    items = [
        ReportItem(
            name=row["name"],
            score=row["score"],
            image=row["image"],
            overlay=summary.out_dir / "overlays" / f"{row['name']}.png",
            anomalous=row["anomalous"],
        )
        for row in summary.rows
    ]
    return write_report(
        summary.out_dir / "report.html",
        items,
        summary.threshold,
        title=f"ust predict: {len(items)} image(s), detector {model}",
        value_range=detector.display_range(summary.pixel_threshold),
    )
