"""A fitted :class:`~ust.detector.Detector` on a labelled folder: the dataset's metrics through the
shared protocol (:func:`ust.experiments.protocol.evaluate`) and what the stored thresholds decide on
the test images (what ``ust evaluate --model`` and ``notebooks/50_own_images.ipynb`` show)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


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
    false-alarm rate on the good images beside the configured target and beside what the
    calibration promised (with :func:`false_alarm_p_value`), and the share of the good images'
    pixels above the pixel threshold."""
    good = [s for s in test if not s.is_anomalous]
    defective = [s for s in test if s.is_anomalous]
    rejected = sum(method.anomalous[s.key] for s in good)
    by_defect: dict[str, int] = {}
    for s in defective:
        by_defect[s.defect] = by_defect.get(s.defect, 0) + (not method.anomalous[s.key])
    above = sum(method.pixels_above[s.key][0] for s in good)
    pixels = sum(method.pixels_above[s.key][1] for s in good)
    calibration = detector.image_calibration
    return {
        "image_threshold": float(detector.image_threshold),
        "target_false_alarm_rate": float(detector.false_alarm_rate),
        "promised_false_alarm_rate": float(calibration.supported_rate),
        "calibration_images": int(calibration.n_images),
        "false_alarm_p_value": false_alarm_p_value(
            int(rejected), len(good), calibration.supported_rate
        ),
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


def false_alarm_p_value(rejected: int, good: int, promised: float) -> float | None:
    """How surprising ``rejected`` of ``good`` test images rejected are if the image threshold
    kept its promise (P(a good image rejected) ≤ ``promised``): the one-sided binomial p-value
    P(X ≥ rejected), X ~ Binomial(good, promised) (:func:`scipy.stats.binomtest`). Small values
    (< 0.05) say the good test images score higher than the good validation images did, so the
    validation images do not represent them; ``None`` without good test images."""
    if good == 0:
        return None
    from scipy.stats import binomtest

    return float(binomtest(rejected, good, min(1.0, promised), alternative="greater").pvalue)


def load_index(data_root: Path, category: str):
    """The validated category: MVTec LOCO AD when :func:`ust.data.loco.is_loco_category`, else
    MVTec AD (both raise a ValueError naming the file at fault)."""
    from ust.data.loco import is_loco_category, validate_loco_category
    from ust.data.mvtec import validate_category

    if is_loco_category(data_root, category):
        return validate_loco_category(data_root, category)
    return validate_category(data_root, category)


def evaluate_detector(
    detector: Any,
    index: Any,
    *,
    batch_size: int = 8,
    extra: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict:
    """The protocol's metrics of ``detector`` on ``index`` (a validated category, e.g. from
    :func:`load_index`) plus ``decisions`` (:func:`decisions`): confusion counts at the stored
    thresholds and the observed false-alarm rate."""
    from ust.experiments.protocol import evaluate

    method = DetectorMethod(detector, batch_size)
    extra = {**(extra or {}), "model_sha256": detector.sha256}
    result = evaluate(method, index, None, extra=extra, progress=progress)
    return {**result, "decisions": decisions(detector, method, index.test)}


def decisions_table(result: Mapping) -> pd.DataFrame:
    """The confusion counts of :func:`evaluate_detector` as a table: rows good / defective
    images, columns accepted / rejected, plus the observed false-alarm rate beside the target."""
    d = result["decisions"]
    good, defective = d["good_images"], d["defective_images"]
    table = pd.DataFrame(
        {
            "accepted": [good - d["good_rejected"], d["defective_accepted"]],
            "rejected": [d["good_rejected"], defective - d["defective_accepted"]],
        },
        index=pd.Index(["good images", "defective images"], name="test images"),
    )
    table.attrs["false_alarm_rate"] = (d["observed_false_alarm_rate"], d["target_false_alarm_rate"])
    return table
