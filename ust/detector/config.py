"""The configuration of a fused detector: method, scales, input size, training and threshold rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ust.io import jsonable
from ust.method.networks import PATCH_SIZES
from ust.train.fit import FitSettings
from ust.train.gcad import GCADFitSettings

# The segmentation rules a detector can decide with (keys of ust.eval.thresholds.estimate_thresholds).
THRESHOLD_RULES: tuple[str, ...] = ("max", "quantile", "k_sigma")

#: "st": the Student–Teacher detector (paper); "gcad": GCAD (thesis ch. 7)
METHODS: tuple[str, ...] = ("st", "gcad")

#: the receptive fields each method fuses by default (paper §3.3: 17, 33, 65; thesis §7.3: 17, 33)
DEFAULT_PATCH_SIZES: dict[str, tuple[int, ...]] = {"st": PATCH_SIZES, "gcad": (17, 33)}


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
        patch_sizes: receptive fields p of the fused scales; ``None``: the method's default
            (:data:`DEFAULT_PATCH_SIZES`: 17, 33, 65 for ``st``; 17, 33 for ``gcad``).
        threshold_rule: ``max``, ``quantile`` or ``k_sigma``
            (docs/decisions.md#segmentation-thresholds); all are stored, this one outlines pixels.
        false_alarm_rate: target share of good images called anomalous; the image threshold is
            calibrated for it on the validation images' scores (docs/decisions.md#image-threshold).
        method: ``st`` (one calibrated Student–Teacher per scale: ``students``, ``training``) or
            ``gcad`` (one calibrated GCAD model per scale: ``gcad``; docs/decisions.md#gcad-detector).
        gcad: how each GCAD model is fitted (:class:`ust.train.gcad.GCADFitSettings`: architecture
            and training); only with ``method="gcad"``, where ``None`` means the thesis' settings.
            Its ``model.image_size``, ``seed`` and ``inference_batch_size`` are always the
            detector's own (declared once here), whatever was passed.
    """

    patch_sizes: tuple[int, ...] | None = None
    threshold_rule: str = "quantile"
    false_alarm_rate: float = 0.01
    method: str = "st"
    gcad: GCADFitSettings | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        sizes = DEFAULT_PATCH_SIZES[self.method] if self.patch_sizes is None else self.patch_sizes
        object.__setattr__(self, "patch_sizes", tuple(int(p) for p in sizes))
        object.__setattr__(self, "threshold_rule", threshold_rule(self.threshold_rule))
        object.__setattr__(self, "gcad", self._gcad_settings())
        self.validate()

    def _gcad_settings(self) -> GCADFitSettings | None:
        """The GCAD settings with the detector's image size, seed and inference batch size."""
        if self.method != "gcad":
            if self.gcad is not None:
                raise ValueError("gcad settings apply to method='gcad' only (pass gcad=None)")
            return None
        gcad = self.gcad if self.gcad is not None else GCADFitSettings()
        if isinstance(gcad, dict):  # read back from a file
            gcad = GCADFitSettings(**gcad)
        return replace(
            gcad,
            model=replace(gcad.model, image_size=self.image_size),
            seed=self.seed,
            inference_batch_size=self.inference_batch_size,
        )

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
        d["gcad"] = jsonable(d["gcad"])
        return d
