"""``ust evaluate``: the dataset's metrics of saved anomaly maps or of a fitted detector.

Both modes go through :func:`ust.experiments.protocol.evaluate`, so the numbers are the ones the
pipeline reports: an MVTec AD folder gets AU-PRO (FPR ≤ 0.3), pixel and image ROC-AUC; an MVTec
LOCO AD folder (detected by :func:`ust.data.loco.is_loco_category`) gets the official
metrics.json structure (AU-sPRO per subset at five FPR limits, image ROC-AUC) and ``au_spro``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


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


# ------------------------------------------------------------------------------------- methods
@dataclass
class DetectorMethod:
    """A fitted :class:`~ust.detector.Detector` as a protocol method: the maps of
    :meth:`Detector.predict` (at the original sizes). For every sample key it records the image
    score, the decision at the stored image threshold (``score > image_threshold``) and
    (pixels above the stored pixel threshold, pixels)."""

    detector: Any
    batch_size: int = 8
    scores: dict[str, float] = field(default_factory=dict)
    anomalous: dict[str, bool] = field(default_factory=dict)
    pixels_above: dict[str, tuple[int, int]] = field(default_factory=dict)

    def anomaly_maps(self, samples: Sequence[Any], *, progress: bool = False) -> list[np.ndarray]:
        from tqdm.auto import tqdm

        maps: list[np.ndarray] = []
        starts = range(0, len(samples), self.batch_size)
        for start in tqdm(starts, desc="scoring", disable=not progress, leave=False):
            chunk = samples[start : start + self.batch_size]
            pred = self.detector.predict([s.path for s in chunk], batch_size=self.batch_size)
            for sample, score, decision, mask in zip(
                chunk, pred.scores, pred.anomalous, pred.masks
            ):
                self.scores[sample.key] = float(score)
                self.anomalous[sample.key] = bool(decision)
                self.pixels_above[sample.key] = (int(np.count_nonzero(mask)), int(mask.size))
            maps += pred.maps
        return maps


def decisions(detector: Any, method: DetectorMethod, test: Sequence[Any]) -> dict:
    """The detector's decisions on the test images at its stored thresholds: confusion counts at
    the image threshold (an image is rejected when its score exceeds it), the observed
    false-alarm rate on the good images beside the configured target, and the share of the good
    images' pixels above the pixel threshold."""
    good = [s for s in test if not s.is_anomalous]
    defective = [s for s in test if s.is_anomalous]
    rejected = sum(method.anomalous[s.key] for s in good)
    by_defect: dict[str, int] = {}
    for s in defective:
        by_defect[s.defect] = by_defect.get(s.defect, 0) + (not method.anomalous[s.key])
    above = sum(method.pixels_above[s.key][0] for s in good)
    pixels = sum(method.pixels_above[s.key][1] for s in good)
    return {
        "image_threshold": float(detector.image_threshold),
        "target_false_alarm_rate": float(detector.false_alarm_rate),
        "threshold_rule": detector.threshold_rule,
        "pixel_threshold": float(detector.threshold),
        "good_images": len(good),
        "good_rejected": int(rejected),
        "defective_images": len(defective),
        "defective_accepted": int(sum(by_defect.values())),
        "defective_accepted_by_defect": by_defect,
        "observed_false_alarm_rate": rejected / len(good) if good else None,
        "good_pixels_above_threshold": above / pixels if pixels else None,
    }


# ------------------------------------------------------------------------------------- running
def load_index(data_root: Path, category: str):
    """The validated category: MVTec LOCO AD when :func:`ust.data.loco.is_loco_category`, else
    MVTec AD (both raise a ValueError naming the file at fault)."""
    from ust.data.loco import is_loco_category, validate_loco_category
    from ust.data.mvtec import validate_category

    if is_loco_category(data_root, category):
        return validate_loco_category(data_root, category)
    return validate_category(data_root, category)


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
    from ust.experiments.protocol import evaluate
    from ust.train.device import resolve_device

    detector = Detector.load(args.model, device=resolve_device(args.device))
    method = DetectorMethod(detector, args.batch_size)
    extra = {
        "model": str(args.model.expanduser().resolve()),
        "model_sha256": detector.sha256,
        "data_root": str(data_root),
    }
    result = evaluate(method, index, None, extra=extra, progress=progress)
    return {**result, "decisions": decisions(detector, method, index.test)}
