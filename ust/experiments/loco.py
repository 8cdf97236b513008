"""MVTec LOCO AD (thesis ch. 6–7): the Student–Teacher and GCAD at one receptive field, then their
multiscale fusion, both scored with AU-sPRO by the shared protocol.

A scale run (:func:`run_loco_scale`) fits, on the category's ``train/good`` images, one calibrated
Student–Teacher scale (:func:`ust.train.fit.fit_student_teacher`, e/v statistics from
``validation/good``) and, when GCAD settings are given, one GCAD model
(:func:`ust.train.gcad.fit_gcad`, A_loc/A_glo statistics from ``validation/good``); each method is
evaluated by :func:`ust.experiments.protocol.evaluate` into its own folder::

    <out_dir>/<method>/           method: "st" or "gcad"
        run_config.json, ensemble.pt or gcad.pt      the calibrated model (resumable)
        maps/<category>/test/<subset>/<id>.tiff      the official map layout
        val_maps/<category>/validation/good/<id>.tiff
        thresholds.json, segmentation/, metrics.json (au_spro, localization, classification)

:func:`run_loco_multiscale` fuses the scale runs of each method (mean of the normalised maps, as
the multiscale Student–Teacher and GCAD of the thesis) into ``<out_dir>/<method>/`` and writes
``table.json`` (AU-sPRO at FPR 0.05 and image ROC-AUC per subset, per method and scale).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ust.data.loco import validate_loco_category
from ust.experiments.mvtec_single import ScaleMaps, fit_data
from ust.experiments.protocol import EvaluationSettings, SavedMaps, evaluate
from ust.io import read_json, write_json
from ust.method.networks import PatchNet
from ust.method.teacher import resolve_teacher
from ust.train.fit import FitSettings, fit_student_teacher
from ust.train.gcad import GCADFitSettings, fit_gcad

#: the methods of the chapter, in table order: folder name → label
METHODS: dict[str, str] = {"st": "Student–Teacher", "gcad": "GCAD"}
#: the subsets of MVTec LOCO AD and their mean, as in the published metrics.json
SUBSETS: tuple[str, ...] = ("structural_anomalies", "logical_anomalies", "mean")


@dataclass(frozen=True)
class LocoRunSettings:
    """One LOCO scale run: how the Student–Teacher scale is fitted (its ``image_size`` is the
    images' zoom for both methods), how GCAD is fitted (``None``: Student–Teacher only), and how
    maps are scored (segmentation thresholds; the metric suite is the dataset's)."""

    st: FitSettings = field(default_factory=FitSettings)
    gcad: GCADFitSettings | None = None
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)


def run_loco_scale(
    data_root: str | os.PathLike,
    category: str,
    teacher: PatchNet | str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: LocoRunSettings = LocoRunSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, dict]:
    """Fit and evaluate the methods at the teacher's receptive field on one LOCO category.

    Returns ``{method: metrics.json dict}`` (``au_spro`` = mean AU-sPRO at FPR 0.05, the
    ``localization`` and ``classification`` structures, identity, counts and timings). The layout
    is validated before anything is written (:class:`ust.data.loco.LocoLayoutError`).
    """
    device = torch.device(device)
    index = validate_loco_category(data_root, category)
    net = resolve_teacher(teacher, device)
    train, val = index.train_validation()
    size = settings.st.image_size
    data = fit_data(train, val, size, progress)
    out = Path(out_dir)
    identity = {"p": net.config.p, "image_size": size, "n_train": len(train), "n_val": len(val)}
    st = fit_student_teacher(net, data, settings.st, out / "st", progress=progress).model
    results = {
        "st": evaluate(
            ScaleMaps(st, size, settings.st.inference_batch_size),
            index,
            out / "st",
            settings.evaluation,
            validation=val,
            extra={"method": "st", **identity, "students": settings.st.students},
            progress=progress,
        )
    }
    if settings.gcad is not None:
        gcad = fit_gcad(net, data, settings.gcad, out / "gcad", progress=progress)
        results["gcad"] = evaluate(
            ScaleMaps(gcad, size, settings.gcad.inference_batch_size),
            index,
            out / "gcad",
            settings.evaluation,
            validation=val,
            extra={"method": "gcad", **identity, "epochs": settings.gcad.training.epochs},
            progress=progress,
        )
    return results


def headline(metrics: Mapping) -> dict[str, float]:
    """AU-sPRO at FPR 0.05 and image ROC-AUC per subset (and their mean) of a metrics.json."""
    spro = metrics["localization"]["auc_spro"]
    auc = metrics["classification"]["auc_roc"]
    return {
        **{f"au_spro_{s}": float(spro[s]["0.05"]) for s in SUBSETS},
        **{f"auc_roc_{s}": float(auc[s]) for s in SUBSETS},
    }


def run_loco_multiscale(
    scale_dirs: Mapping[int, str | os.PathLike],
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    settings: EvaluationSettings = EvaluationSettings(),
    *,
    progress: bool = False,
) -> dict[str, dict]:
    """Fuse the finished scale runs ``scale_dirs = {p: out_dir of run_loco_scale}`` of each method
    over the scales where it ran (mean of the normalised maps; the thesis fuses p ∈ {17, 33, 65}
    for the Student–Teacher and p ∈ {17, 33} for GCAD), evaluate each fusion into
    ``<out_dir>/<method>/``, and write ``<out_dir>/table.json``: per method, per scale and
    ``multiscale``, the :func:`headline` numbers. Returns ``{method: fused metrics.json dict}``."""
    if not scale_dirs:
        raise ValueError("run_loco_multiscale needs at least one scale run")
    index = validate_loco_category(data_root, category)
    _, val = index.train_validation()
    scales = sorted(scale_dirs)
    dirs = {p: Path(scale_dirs[p]) for p in scales}
    methods = {
        m: ps
        for m in METHODS
        if (ps := [p for p in scales if (dirs[p] / m / "metrics.json").is_file()])
    }
    if "st" not in methods or len(methods["st"]) != len(scales):
        missing = [p for p in scales if not (dirs[p] / "st" / "metrics.json").is_file()]
        raise FileNotFoundError(
            f"the Student–Teacher run of scale(s) {missing} has not finished: expected "
            f"{', '.join(str(dirs[p] / 'st' / 'metrics.json') for p in missing)}"
        )
    out = Path(out_dir)
    results, table = {}, {}
    for m, ps in methods.items():
        fused = SavedMaps([dirs[p] / m for p in ps], category)
        extra = {"method": m, "scales": ps}
        results[m] = evaluate(
            fused, index, out / m, settings, validation=val, extra=extra, progress=progress
        )
        rows = {str(p): headline(read_json(dirs[p] / m / "metrics.json")) for p in ps}
        table[m] = {**rows, "multiscale": headline(results[m])}
    write_json(table, out / "table.json", sort_keys=False)
    return results
