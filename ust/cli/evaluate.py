"""``ust evaluate``: the dataset's metrics of saved anomaly maps or of a fitted detector.

Both modes go through :func:`ust.experiments.protocol.evaluate`, so the numbers are the ones the
pipeline reports: an MVTec AD folder gets AU-PRO (FPR ≤ 0.3), pixel and image ROC-AUC; an MVTec
LOCO AD folder (detected by :func:`ust.data.loco.is_loco_category`) gets the official
metrics.json structure (AU-sPRO per subset at five FPR limits, image ROC-AUC) and ``au_spro``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="metrics of saved anomaly maps or of a fitted detector on a labelled category",
        description=(
            "Scores the test images of <data-root>/<category> and writes <out>/metrics.json. "
            "--maps DIR reads any method's float TIFF maps in the official layout "
            "(DIR/<category>/test/<defect or subset>/<id>.tiff, each at its image's size); "
            "--model FILE scores the images with a detector from `ust fit` and adds the decisions "
            "at its stored thresholds (good images rejected, defective images accepted, the "
            "observed false-alarm rate). MVTec AD folders get au_pro (FPR <= 0.3), pixel_auroc and "
            "image_auroc; MVTec LOCO AD folders (defects_config.json, validation/, "
            "test/logical_anomalies) get the official evaluation's structure "
            "(localization.auc_spro and classification.auc_roc per subset and their mean) plus "
            "au_spro, the mean AU-sPRO at FPR 0.05. One summary line is printed. Errors: exit "
            "code 2 with one line on stderr (e.g. a test image without a map, naming the file)."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--maps", type=Path, help="folder holding <category>/test/<defect>/<id>.tiff maps"
    )
    source.add_argument("--model", type=Path, help="detector file from `ust fit`")
    p.add_argument(
        "--data-root",
        required=True,
        type=Path,
        help="folder holding <category> in the MVTec AD or MVTec LOCO AD layout",
    )
    p.add_argument("--category", required=True, help="category folder name")
    p.add_argument("--out", required=True, type=Path, help="output folder (metrics.json)")
    p.add_argument("--batch-size", type=int, default=8, help="images scored at once (--model)")
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"], help="torch device (--model)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_evaluate)


def summary(result: dict) -> str:
    """One line with the headline metrics of ``result`` (and the decisions, when present)."""
    if "au_spro" in result:
        spro = result["localization"]["auc_spro"]
        roc = result["classification"]["auc_roc"]
        text = (
            f"au_spro (FPR 0.05) {result['au_spro']:.4f} (structural "
            f"{spro['structural_anomalies']['0.05']:.4f}, logical "
            f"{spro['logical_anomalies']['0.05']:.4f}), image auc_roc {roc['mean']:.4f}"
        )
    else:
        text = ", ".join(f"{k} {result[k]:.4f}" for k in ("au_pro", "pixel_auroc", "image_auroc"))
    d = result.get("decisions")
    if d:
        text += (
            f"; at image threshold {d['image_threshold']:.6g}: {d['good_rejected']} of "
            f"{d['good_images']} good image(s) rejected (false-alarm rate "
            f"{d['observed_false_alarm_rate']:.3f}, target {d['target_false_alarm_rate']:.3f}), "
            f"{d['defective_accepted']} of {d['defective_images']} defective image(s) accepted"
        )
        p = d.get("false_alarm_p_value")
        if p is not None and p < 0.05:
            text += (
                f"; more than the ≤ {d['promised_false_alarm_rate']:.3f} that "
                f"{d['calibration_images']} validation image(s) promise (binomial p = {p:.2g}): "
                "these good images score higher than the validation images did; calibrate on "
                "good images like them (--val-images)"
            )
    return f"{result['category']}: {text}"


def run_evaluate(args: argparse.Namespace) -> int:
    from ust.detector.outputs import check_output_dir, os_error_message

    try:
        out = check_output_dir(args.out)
        result = _evaluate(args)
        from ust.io import write_json

        path = write_json(result, out / "metrics.json", sort_keys=False)
    except OSError as e:  # one line instead of a traceback (ust.cli.main)
        raise ValueError(os_error_message(e)) from e
    print(f"{summary(result)}: {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> dict:
    from ust.experiments.protocol import PrecomputedMaps, evaluate, load_maps

    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    from ust.detector.evaluation import load_index

    data_root = args.data_root.expanduser().resolve()
    index = load_index(data_root, args.category)
    progress = not args.no_progress
    if args.maps is not None:
        folder = args.maps.expanduser().resolve()
        if not (folder / args.category).is_dir():
            raise FileNotFoundError(
                f"--maps {folder}: no folder {folder / args.category}; --maps must hold "
                f"<category>/test/<defect>/<id>.tiff"
            )
        maps = load_maps(folder, args.category, index.test)  # names a missing map's file
        extra = {"maps": str(folder), "data_root": str(data_root)}
        return evaluate(PrecomputedMaps(index.test, maps), index, None, extra=extra)
    return _evaluate_model(args, index, data_root, progress)


def _evaluate_model(args: argparse.Namespace, index, data_root: Path, progress: bool) -> dict:
    from ust.detector import Detector
    from ust.detector.evaluation import evaluate_detector
    from ust.train.device import resolve_device

    detector = Detector.load(args.model, device=resolve_device(args.device))
    extra = {"model": str(args.model.expanduser().resolve()), "data_root": str(data_root)}
    return evaluate_detector(
        detector, index, batch_size=args.batch_size, extra=extra, progress=progress
    )
