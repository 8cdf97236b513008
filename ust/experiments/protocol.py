"""The evaluation protocol, one for every method and dataset: maps in, run folder out.

:func:`evaluate` asks a method (anything with ``anomaly_maps(samples, progress=...)`` returning one
float32 map (H_i, W_i) per :class:`~ust.data.dataset.Sample`, at the sample's original size) for the
maps of a category's test images and, when given, of its anomaly-free validation images, and writes
to ``out``::

    maps/<category>/<split>/<defect>/<id>.tiff        float32 test maps (the official layout)
    val_maps/<category>/<split>/good/<id>.tiff        the validation maps
    thresholds.json        max / quantile / k_sigma / max_area on the validation maps
    segmentation/<category>/test/<defect>/<id>.png    0/255 masks at one threshold (A > t)
    pro_curve.csv          fpr,pro resampled at 1001 FPRs in [0, 1] (DVC plots; AU-PRO suite only)
    metrics.json           au_pro, pixel_auroc, image_auroc, identity, counts and timings (last)

Metrics take the dataset's ground-truth regions (:meth:`DatasetIndex.regions`), never its files.
The metric suite is the dataset's: an index with a ``metrics(maps)`` method (:class:`MetricSuite`;
MVTec LOCO AD's AU-sPRO, :meth:`ust.data.loco.LocoCategoryIndex.metrics`) supplies its own
metrics.json entries, any other index gets AU-PRO, pixel and image ROC-AUC (:func:`dataset_metrics`).
Every file is written atomically and every folder is swapped in whole, and ``metrics.json`` comes
last, so its presence marks a finished run. Students, their multiscale fusion, the feature
baselines, the SSIM autoencoder and a fitted :class:`~ust.detector.Detector` all go through here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ust.data.dataset import DatasetIndex, Sample, ground_truth_mask
from ust.data.mvtec import load_anomaly_map, save_anomaly_map
from ust.eval.metrics import evaluate_maps, pro_curve
from ust.eval.thresholds import binarize, estimate_thresholds, save_segmentation
from ust.io import fresh_dir, replace_dir, write_csv, write_json
from ust.method.scoring import fuse_multiscale

METRIC_KEYS: tuple[str, ...] = ("au_pro", "pixel_auroc", "image_auroc")
PRO_CURVE_POINTS = 1001
THRESHOLD_RULES: tuple[str, ...] = ("max", "quantile", "k_sigma", "max_area")


class Method(Protocol):
    """What the protocol needs of a method: maps at the samples' original sizes."""

    def anomaly_maps(
        self, samples: Sequence[Sample], *, progress: bool = False
    ) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class EvaluationSettings:
    """How maps are scored: AU-PRO up to ``integration_limit`` (0.3, the paper's), and the
    threshold rule of the PNG segmentations (a key of
    :func:`ust.eval.thresholds.estimate_thresholds`; docs/decisions.md#segmentation-thresholds)."""

    integration_limit: float = 0.3
    segmentation_rule: str = "quantile"

    def __post_init__(self) -> None:
        if self.segmentation_rule not in THRESHOLD_RULES:
            raise ValueError(
                f"unknown segmentation rule {self.segmentation_rule!r}; expected one of "
                f"{THRESHOLD_RULES}"
            )


def map_path(root: Path, category: str, sample: Sample, suffix: str = ".tiff") -> Path:
    """``<root>/<category>/<split>/<defect>/<id><suffix>``: where a sample's map lives."""
    return Path(root) / category / f"{sample.key}{suffix}"


def ground_truth(index: DatasetIndex, samples: Sequence[Sample]) -> list[np.ndarray]:
    """Bool (H, W) masks, the union of each sample's regions, at the original resolution."""
    return [ground_truth_mask(index, s) for s in samples]


def compute_metrics(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], limit: float) -> dict:
    """The three map metrics (au_pro at ``limit``, pixel and image ROC-AUC) as Python floats."""
    result = evaluate_maps(list(maps), list(masks), integration_limit=limit)
    return {k: float(result[k]) for k in METRIC_KEYS}


class MetricSuite(Protocol):
    """An index that scores test maps itself (optional on a :class:`DatasetIndex`): ``maps`` are
    one float32 map (H_i, W_i) per ``index.test`` sample, in order; the result is the metrics.json
    entries (Python floats and dicts; MVTec LOCO AD: ``au_spro``, ``localization``, ...)."""

    def metrics(self, maps: Sequence[np.ndarray]) -> dict: ...


def dataset_metrics(
    index: DatasetIndex, maps: Sequence[np.ndarray], settings: EvaluationSettings
) -> tuple[dict, list[np.ndarray] | None]:
    """(metrics.json entries, ground-truth masks or ``None``) of the test maps: the index's own
    suite when it has one (:class:`MetricSuite`, masks ``None``), else :func:`compute_metrics` at
    ``settings.integration_limit`` plus ``integration_limit`` (and the union masks)."""
    suite = getattr(index, "metrics", None)
    if callable(suite):
        return dict(suite(maps)), None
    masks = ground_truth(index, index.test)
    limit = settings.integration_limit
    return {**compute_metrics(maps, masks, limit), "integration_limit": limit}, masks


def resampled_pro_curve(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_points: int = PRO_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """PRO curve resampled at ``n_points`` evenly spaced FPRs in [0, 1] (linear interpolation).

    The exact curve has one point per distinct score (~1e8 on MVTec); for plots it is thinned. The
    exact curve is piecewise linear with vertical steps (several points sharing one FPR): between
    two FPR values it runs from the top of the left step to the bottom of the right one, and at a
    step the top is taken, as in the trapezoid integration of :func:`ust.eval.metrics.au_pro`.
    """
    fpr, pro = pro_curve(list(maps), list(masks))
    grid = np.linspace(0.0, 1.0, n_points)
    j = np.searchsorted(fpr, grid, side="right") - 1  # last point with fpr <= x (top of its step)
    nxt = np.minimum(j + 1, len(fpr) - 1)
    span = fpr[nxt] - fpr[j]
    frac = np.divide(grid - fpr[j], span, out=np.zeros_like(grid), where=span > 0)
    return grid, pro[j] + frac * (pro[nxt] - pro[j])


def counts(index: DatasetIndex, n_train: int, n_val: int) -> dict[str, int]:
    """Image counts of a run: training, validation, test (good and defective)."""
    n_good = sum(1 for s in index.test if not s.is_anomalous)
    return {
        "n_train": n_train,
        "n_val": n_val,
        "n_test": len(index.test),
        "n_test_good": n_good,
        "n_test_defective": len(index.test) - n_good,
    }


def save_maps(out: Path, name: str, category: str, samples, maps) -> None:
    """Write ``maps`` as TIFFs under ``out/<name>`` (built aside, swapped in whole)."""
    tmp = fresh_dir(out, name)
    for sample, m in zip(samples, maps):
        save_anomaly_map(map_path(tmp, category, sample), m)
    replace_dir(tmp, out / name)


def load_maps(root: Path, category: str, samples: Sequence[Sample]) -> list[np.ndarray]:
    """Maps saved by :func:`save_maps` (``root`` = ``<out>/maps``), each checked against the
    sample's size; a missing map raises FileNotFoundError naming the file and the image."""
    maps = []
    for sample in samples:
        path = map_path(root, category, sample)
        if not path.is_file():
            raise FileNotFoundError(f"no anomaly map for {sample.path}: expected {path}")
        m = load_anomaly_map(path)
        if m.shape != tuple(sample.size):
            raise ValueError(
                f"{path}: map shape {m.shape} differs from the image size {sample.size}"
            )
        maps.append(m)
    return maps


def _write_thresholds(out, index, test, val, val_maps, test_maps, rule, progress) -> None:
    """Validation maps, ``thresholds.json`` and the PNG segmentations at the ``rule`` threshold."""
    save_maps(out, "val_maps", index.category, val, val_maps)
    thresholds: dict[str, Any] = estimate_thresholds(list(val_maps))
    t = thresholds[rule]
    tmp = fresh_dir(out, "segmentation")
    for s, m in tqdm(
        list(zip(test, test_maps)), desc="segmentation", disable=not progress, leave=False
    ):
        save_segmentation(map_path(tmp, index.category, s, ".png"), binarize(m, t))
    replace_dir(tmp, out / "segmentation")
    write_json(
        {**thresholds, "segmentation": {"rule": rule, "threshold": t}},
        out / "thresholds.json",
        sort_keys=False,
    )


def evaluate(
    method: Method,
    index: DatasetIndex,
    out: str | Path | None,
    settings: EvaluationSettings = EvaluationSettings(),
    *,
    validation: Sequence[Sample] | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict:
    """Score ``method`` on ``index``'s test images and write the run folder ``out``.

    Args:
        method: see :class:`Method`.
        index: a validated category (:class:`ust.data.dataset.DatasetIndex`).
        out: run folder (see the module docstring); ``None`` computes the metrics only.
        settings: see :class:`EvaluationSettings`.
        validation: anomaly-free samples for the thresholds and segmentations (``None``: none).
        extra: entries appended to ``metrics.json`` (identity, counts, training timings).
        progress: tqdm progress bars.

    Returns:
        The ``metrics.json`` dict: ``category``, the :data:`METRIC_KEYS` floats in [0, 1] and
        ``integration_limit`` (or the index's own suite, :func:`dataset_metrics`), ``extra``, then
        ``inference_seconds`` (validation and test maps) and ``test_images_per_second``.
    """
    t0 = time.perf_counter()
    val_maps = method.anomaly_maps(validation, progress=progress) if validation else None
    t1 = time.perf_counter()
    test_maps = method.anomaly_maps(index.test, progress=progress)
    t2 = time.perf_counter()
    metrics, masks = dataset_metrics(index, test_maps, settings)
    result = {
        "category": index.category,
        **metrics,
        **(extra or {}),
        "inference_seconds": t2 - t0,
        "test_images_per_second": len(index.test) / max(t2 - t1, 1e-9),
    }
    if out is None:
        return result
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_maps(out, "maps", index.category, index.test, test_maps)
    if val_maps is not None:
        rule = settings.segmentation_rule
        _write_thresholds(out, index, index.test, validation, val_maps, test_maps, rule, progress)
    if masks is not None:
        fpr, pro = resampled_pro_curve(test_maps, masks)
        write_csv(out / "pro_curve.csv", ("fpr", "pro"), zip(fpr.tolist(), pro.tolist()))
    write_json(result, out / "metrics.json", sort_keys=False)
    return result


@dataclass
class SavedMaps:
    """A method whose maps were written before: the fusion of several run folders' map files
    (mean over the folders, paper Eq. 12 when they are scales), read back per sample.

    ``runs``: run folders holding ``<category>/<split>/<defect>/<id>.tiff`` (``<run>/maps`` for test
    images, ``<run>/val_maps`` for validation images, chosen by each sample's ``split``).
    """

    runs: Sequence[Path]
    category: str

    def anomaly_maps(
        self, samples: Sequence[Sample], *, progress: bool = False
    ) -> list[np.ndarray]:
        """Mean of the runs' maps of each sample (one (H, W) float32 map per sample)."""
        fused = []
        for sample in tqdm(samples, desc="fusing maps", disable=not progress, leave=False):
            folder = "maps" if sample.split == "test" else "val_maps"
            maps = [load_maps(Path(r) / folder, self.category, [sample])[0] for r in self.runs]
            fused.append(fuse_multiscale([torch.from_numpy(m) for m in maps]).numpy())
        return fused


@dataclass
class PrecomputedMaps:
    """Maps a method computed for a list of samples all at once (the feature baselines score every
    method from one pass of teacher descriptors), served to :func:`evaluate` per sample."""

    samples: Sequence[Sample]
    maps: Sequence[np.ndarray]

    def anomaly_maps(
        self, samples: Sequence[Sample], *, progress: bool = False
    ) -> list[np.ndarray]:
        """The stored maps of ``samples`` (KeyError for a sample that was not scored)."""
        by_key = {s.key: m for s, m in zip(self.samples, self.maps)}
        return [by_key[s.key] for s in samples]
