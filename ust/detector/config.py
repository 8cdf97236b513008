"""The configuration of a fused detector: scales, input size, ensemble, training and threshold rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ust.method.networks import PATCH_SIZES
from ust.train.fit import FitSettings

# The segmentation rules a detector can decide with (keys of ust.eval.thresholds.estimate_thresholds).
THRESHOLD_RULES: tuple[str, ...] = ("max", "quantile", "k_sigma")


def threshold_rule(name: str) -> str:
    """Canonical rule name: ``"k-sigma"`` (the command-line spelling) → ``"k_sigma"``."""
    rule = str(name).replace("-", "_")
    if rule not in THRESHOLD_RULES:
        spelled = ", ".join(r.replace("_", "-") for r in THRESHOLD_RULES)
        raise ValueError(f"unknown threshold rule {name!r}; expected one of {spelled}")
    return rule


@dataclass(frozen=True)
class DetectorConfig(FitSettings):
    """Everything a fitted :class:`~ust.detector.Detector` depends on besides its data and teachers:
    how each scale is fitted (the inherited :class:`ust.train.fit.FitSettings`: ``image_size``,
    ``students``, ``training``, ``val_fraction``, ``seed``, ``inference_batch_size``) plus

    Attributes:
        patch_sizes: receptive fields p of the fused scales (paper: 17, 33, 65).
        threshold_rule: ``max``, ``quantile`` or ``k_sigma``
            (docs/decisions.md#segmentation-thresholds); all are stored, this one outlines pixels.
        false_alarm_rate: target share of good images called anomalous; the image threshold is
            calibrated for it on the validation images' scores (docs/decisions.md#image-threshold).
    """

    patch_sizes: tuple[int, ...] = PATCH_SIZES
    threshold_rule: str = "quantile"
    false_alarm_rate: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "patch_sizes", tuple(int(p) for p in self.patch_sizes))
        object.__setattr__(self, "threshold_rule", threshold_rule(self.threshold_rule))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        bad = [p for p in self.patch_sizes if p not in PATCH_SIZES]
        if not self.patch_sizes or bad or len(set(self.patch_sizes)) != len(self.patch_sizes):
            raise ValueError(
                f"patch_sizes must be distinct values among {PATCH_SIZES}, got {self.patch_sizes}"
            )
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.students < 1 or self.training.epochs < 1 or self.inference_batch_size < 1:
            raise ValueError("students, training.epochs and inference_batch_size must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {self.false_alarm_rate}")

    def to_dict(self) -> dict:
        """Plain-Python form (tuples as lists), as stored in detector files."""
        d = asdict(self)
        d["patch_sizes"] = list(self.patch_sizes)
        return d
