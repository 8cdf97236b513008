"""The fused detector of one category: per scale a calibrated model (a frozen teacher with its
descriptor statistics, the networks trained on the good images and their score statistics), plus the
thresholds estimated on held-out good images.

Each scale is a calibrated :class:`~ust.method.students.StudentTeacher` (``method="st"``: teacher,
μ/σ, students and e/v statistics in one module, the object the MVTec protocol evaluates too,
:mod:`ust.experiments.mvtec_single`) or a calibrated :class:`~ust.method.gcad.GCAD` model
(``method="gcad"``: E_loc with μ/σ folded in, R_loc, E_glo, U, R_glo and the A_loc/A_glo
statistics; docs/decisions.md#gcad-detector). Both own their calibration and give normalised maps
with ``anomaly_maps(images, batch_size=...)``, so everything below is the same for both. Anomaly
maps: images are zoomed to ``image_size``² (docs/decisions.md#image-resizing), each scale gives its
normalised score (ẽ + ṽ, docs/decisions.md#score-normalisation; or Ã_loc + Ã_glo) at that size,
the scales are averaged
(docs/decisions.md#multiscale-fusion) and the fused map is upsampled bilinearly to each image's
original size (docs/decisions.md#evaluation-resolution). The image score is the map's maximum
(docs/decisions.md#image-score). Two thresholds, two meanings: a pixel is anomalous when its score
exceeds the pixel threshold (a rule on the validation pixels, docs/decisions.md#segmentation-thresholds),
an image when its image score exceeds the image threshold (calibrated on the validation images'
image scores for a target false-alarm rate, docs/decisions.md#image-threshold).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ust.data.transforms import upsample_map
from ust.detector.config import DetectorConfig, threshold_rule
from ust.detector.files import DetectorFileError, read_detector_file, write_detector_file
from ust.detector.fit import fit_scales
from ust.detector.images import as_images, as_items, sizes_of, zoom
from ust.eval.thresholds import ImageThreshold, calibrate_image_threshold, estimate_thresholds
from ust.method.gcad import GCAD, GCADConfig, GCADScoreStats
from ust.method.networks import NetConfig, PatchNet
from ust.method.scoring import ScoreStats, fuse_multiscale
from ust.method.students import StudentTeacher, make_students

#: a calibrated scale: anything with ``calibrated``, ``score_stats`` and ``anomaly_maps``
ScaleModel = StudentTeacher | GCAD
#: the model class of each method (DetectorConfig.method)
SCALE_MODELS: dict[str, type] = {"st": StudentTeacher, "gcad": GCAD}


@dataclass
class Calibration:
    """What the held-out good images say about the fused scores (all in score units).

    Attributes:
        thresholds: ``max``, ``quantile``, ``k_sigma`` and ``max_area`` thresholds of
            :func:`ust.eval.thresholds.estimate_thresholds` on the validation maps.
        pixel_median: median fused score over all validation pixels (the colour scale's bottom).
        pixel_max: largest fused score over all validation pixels.
        image_scores: image score (map maximum) of every validation image, in split order.
        images: names of the validation images (file names, or ``image_<i>`` for in-memory input).
    """

    thresholds: dict[str, float]
    pixel_median: float
    pixel_max: float
    image_scores: list[float] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @classmethod
    def from_maps(cls, maps: Sequence[np.ndarray], names: Sequence[str]) -> Calibration:
        """Calibrate on fused validation maps (H_i, W_i) at the images' original sizes."""
        values = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps])
        return cls(
            thresholds={k: float(v) for k, v in estimate_thresholds(list(maps)).items()},
            pixel_median=float(np.median(values)),
            pixel_max=float(values.max()),
            image_scores=[float(np.max(m)) for m in maps],
            images=list(names),
        )

    def image_threshold(self, false_alarm_rate: float) -> ImageThreshold:
        """The image threshold for ``false_alarm_rate`` on the validation image scores, with what
        it promises (:func:`ust.eval.thresholds.calibrate_image_threshold`)."""
        return calibrate_image_threshold(self.image_scores, false_alarm_rate)


@dataclass
class Prediction:
    """Result of :meth:`Detector.predict` for N images.

    Attributes:
        maps: N float32 arrays (H_i, W_i): fused anomaly maps at each image's original size.
        scores: float64 (N,): image scores, the maximum of each map.
        masks: N bool arrays (H_i, W_i): ``map > threshold`` (the pixel threshold).
        anomalous: bool (N,): ``score > image_threshold``.
        threshold: the pixel threshold used (score units).
        image_threshold: the image threshold used (score units).
    """

    maps: list[np.ndarray]
    scores: np.ndarray
    masks: list[np.ndarray]
    anomalous: np.ndarray
    threshold: float
    image_threshold: float

    def __len__(self) -> int:
        return len(self.maps)


class Detector:
    """A fitted detector fusing several receptive fields (paper §3.3, Eq. 12; thesis §7.3).

    Build one with :meth:`fit` (from good images and teachers) or :meth:`load`; use it with
    :meth:`predict`; write it with :meth:`save`. ``models[p]`` is the calibrated model of scale p:
    a :class:`StudentTeacher` (with its μ/σ and e/v statistics) when ``config.method`` is ``st``,
    a :class:`~ust.method.gcad.GCAD` model (with its μ/σ and A_loc/A_glo statistics) when it is
    ``gcad``.
    """

    def __init__(
        self,
        models: Mapping[int, ScaleModel],
        config: DetectorConfig,
        calibration: Calibration | None = None,
    ):
        if sorted(models) != sorted(config.patch_sizes):
            raise ValueError(
                f"models {sorted(models)} must cover the configured patch sizes "
                f"{list(config.patch_sizes)}"
            )
        kind = SCALE_MODELS[config.method]
        foreign = [p for p, m in models.items() if not isinstance(m, kind)]
        if foreign:
            raise ValueError(
                f"the models of p = {foreign} are not {kind.__name__} models (method "
                f"{config.method!r})"
            )
        uncalibrated = [p for p, m in models.items() if not m.calibrated]
        if uncalibrated:
            raise ValueError(f"the models of p = {uncalibrated} have no score statistics")
        self.config = config
        self.models = {p: models[p].eval() for p in config.patch_sizes}
        self.calibration = calibration
        self.sha256: str | None = None  # of the file it was saved to or loaded from

    # ------------------------------------------------------------------------------- properties
    @property
    def score_stats(self) -> dict[int, ScoreStats | GCADScoreStats]:
        """The score statistics of every scale (read from the models): e/v for ``st``,
        A_loc/A_glo for ``gcad``."""
        return {p: m.score_stats for p, m in self.models.items()}

    @property
    def method(self) -> str:
        """``st`` (Student–Teacher scales) or ``gcad`` (GCAD scales)."""
        return self.config.method

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        return self.config.patch_sizes

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return next(next(iter(self.models.values())).parameters()).device

    @property
    def threshold_rule(self) -> str:
        return self.config.threshold_rule

    @property
    def threshold(self) -> float:
        """The pixel threshold of :attr:`threshold_rule` (score units); needs a calibrated
        detector."""
        if self.calibration is None:
            raise ValueError("this detector has no thresholds: fit it (Detector.fit) first")
        return self.calibration.thresholds[self.threshold_rule]

    @property
    def false_alarm_rate(self) -> float:
        """The target share of good images the image threshold rejects (the configuration's)."""
        return self.config.false_alarm_rate

    @property
    def image_calibration(self) -> ImageThreshold:
        """The image threshold for :attr:`false_alarm_rate` and what it promises."""
        if self.calibration is None:
            raise ValueError("this detector has no thresholds: fit it (Detector.fit) first")
        return self.calibration.image_threshold(self.false_alarm_rate)

    @property
    def image_threshold(self) -> float:
        """The image threshold (score units): an image is anomalous when its score exceeds it."""
        return self.image_calibration.threshold

    def use_false_alarm_rate(self, rate: float) -> None:
        """Decide images at another target false-alarm rate (recalibrated from the stored
        validation image scores)."""
        self.config = replace(self.config, false_alarm_rate=float(rate))

    def use_threshold(self, rule: str) -> None:
        """Decide with another stored rule (``max``, ``quantile``, ``k_sigma``/``k-sigma``)."""
        self.config = replace(self.config, threshold_rule=threshold_rule(rule))

    def display_range(self, threshold: float | None = None) -> tuple[float, float]:
        """Fixed colour scale (vmin, vmax) for heat maps: from the validation median m to
        2t − m, so the threshold t sits in the middle of the scale for every image."""
        t = self.threshold if threshold is None else float(threshold)
        vmin = self.calibration.pixel_median if self.calibration is not None else 0.0
        vmin = min(vmin, t - 1e-6)
        return vmin, 2.0 * t - vmin

    def to(self, device: str | torch.device) -> Detector:
        for model in self.models.values():
            model.to(device)
        return self

    # ---------------------------------------------------------------------------------- scoring
    def network_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Fused normalised scores (ẽ + ṽ or Ã_loc + Ã_glo) at network resolution: zoomed images
        (N, 3, S, S) in [0, 1] → (N, S, S)."""
        batch = self.config.inference_batch_size
        return fuse_multiscale(
            [self.models[p].anomaly_maps(x, batch_size=batch) for p in self.patch_sizes]
        )

    def anomaly_maps(self, images: Any) -> list[np.ndarray]:
        """Fused maps at the original sizes: float32 arrays (H_i, W_i), one per image (any input
        :meth:`predict` accepts)."""
        loaded = as_images(images)
        if not loaded:
            return []
        fused = self.network_maps(zoom(loaded, self.image_size))
        return [upsample_map(m, size) for m, size in zip(fused, sizes_of(loaded))]

    def predict(
        self,
        images: Any,
        *,
        threshold: float | None = None,
        image_threshold: float | None = None,
        batch_size: int | None = None,
    ) -> Prediction:
        """Anomaly maps, image scores, masks and decisions for ``images``.

        Args:
            images: image file paths (or a folder), PIL images, (C, H, W) tensors, or a float
                tensor (B, 3, H, W) in [0, 1]; images may differ in size.
            threshold: pixel threshold of the masks; default: the stored one of
                :attr:`threshold_rule`.
            image_threshold: threshold of the image decisions; default: :attr:`image_threshold`.
            batch_size: images loaded and scored at once (default: ``inference_batch_size``).

        Returns:
            A :class:`Prediction`; maps are at each image's original size.
        """
        t = self.threshold if threshold is None else float(threshold)
        ti = self.image_threshold if image_threshold is None else float(image_threshold)
        items = as_items(images)
        step = batch_size or self.config.inference_batch_size
        maps: list[np.ndarray] = []
        for start in range(0, len(items), step):
            maps += self.anomaly_maps(items[start : start + step])
        scores = np.array([float(m.max()) for m in maps], dtype=np.float64)
        return Prediction(maps, scores, [m > t for m in maps], scores > ti, t, ti)

    # ---------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        good_images: Any,
        teachers: Any,
        config: DetectorConfig = DetectorConfig(),
        *,
        work_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        val_images: Any = None,
    ) -> Detector:
        """Fit a fused detector on anomaly-free images (see :mod:`ust.detector.fit` for the steps).

        Args:
            good_images: a folder (searched recursively), file paths, PIL images, or a float tensor
                (N, 3, H, W) in [0, 1]; at least 2 images, of any sizes. No anomalies among them.
            teachers: see :func:`ust.detector.fit.resolve_teachers` (mapping p → teacher, folder,
                or one teacher).
            config: see :class:`DetectorConfig`.
            work_dir: folder for per-scale checkpoints (resumable); ``None``: nothing is written.
            device: torch device for training and scoring.
            progress: tqdm progress bars.
            val_images: anomaly-free images that calibrate the scores and thresholds instead of a
                held-out share of ``good_images`` (more of them support a lower false-alarm rate,
                docs/decisions.md#image-threshold).

        Returns:
            The calibrated detector (on ``device``).
        """
        models, data = fit_scales(
            good_images,
            teachers,
            config,
            work_dir=work_dir,
            device=device,
            progress=progress,
            val_images=val_images,
        )
        detector = cls(models, config)
        fused = detector.network_maps(data.val)
        val_maps = [upsample_map(m, size) for m, size in zip(fused, data.val_sizes)]
        names = [Path(n).name for n in data.val_names]
        detector.calibration = Calibration.from_maps(val_maps, names)
        return detector

    # ------------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the detector to one file atomically (see :mod:`ust.detector.files`)."""
        if self.calibration is None:
            raise ValueError("refusing to save a detector without thresholds: fit it first")
        self.sha256 = write_detector_file(_payload(self), path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Detector:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            DetectorFileError: not a detector file, another ust version, or corrupt (the message
                names the file).
        """
        payload, digest = read_detector_file(path)
        try:
            detector = _from_payload(payload)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise DetectorFileError(f"{path} is not a valid detector file ({e})") from e
        detector.sha256 = digest
        return detector.to(device)


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in state.items()}


def _scale_payload(model: ScaleModel) -> dict[str, Any]:
    """One scale as plain values and CPU tensors; ``kind`` says which model it is (a scale
    without ``kind``, from a ``ust.detector/1`` file, is a Student–Teacher)."""
    if isinstance(model, GCAD):
        return {
            "kind": "gcad",
            "teacher_config": asdict(model.e_loc.config),
            "config": asdict(model.config),
            "state": _cpu(model.state_dict()),  # weights, μ/σ, skip weights, score statistics
        }
    return {
        "kind": "st",
        "teacher_config": asdict(model.teacher.config),
        "teacher": _cpu(model.teacher.state_dict()),
        "students": _cpu(model.students.state_dict()),
        "m": model.m,
        "target_mean": model.target_mean.cpu(),
        "target_std": model.target_std.cpu(),
        "score_stats": model.score_stats.to_dict(),
    }


def _payload(detector: Detector) -> dict[str, Any]:
    """The detector's content as plain Python values and CPU tensors (what the file stores)."""
    return {
        "config": detector.config.to_dict(),
        "scales": {str(p): _scale_payload(m) for p, m in detector.models.items()},
        "calibration": asdict(detector.calibration),
    }


def _scale_from_payload(entry: dict[str, Any]) -> ScaleModel:
    kind = entry.get("kind", "st")
    if kind == "gcad":
        model = GCAD(PatchNet(NetConfig(**entry["teacher_config"])), GCADConfig(**entry["config"]))
        model.load_state_dict(entry["state"])
        return model.eval()
    if kind != "st":
        raise ValueError(f"unknown scale kind {kind!r}")
    teacher = PatchNet(NetConfig(**entry["teacher_config"]))
    teacher.load_state_dict(entry["teacher"])
    model = StudentTeacher(teacher, make_students(teacher, entry["m"]))
    model.students.load_state_dict(entry["students"])
    model.target_mean.copy_(entry["target_mean"])
    model.target_std.copy_(entry["target_std"])
    model.set_score_stats(ScoreStats(**entry["score_stats"]))
    return model.eval()


def _from_payload(payload: dict[str, Any]) -> Detector:
    config = DetectorConfig(**payload["config"])
    models = {p: _scale_from_payload(payload["scales"][str(p)]) for p in config.patch_sizes}
    return Detector(models, config, Calibration(**payload["calibration"]))
