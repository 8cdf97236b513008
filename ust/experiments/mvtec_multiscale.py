"""MVTec AD, several receptive fields (paper §4.2, Table 3): fuse finished single-scale runs.

:func:`run_multiscale` averages the normalised maps ẽ + ṽ of the single-scale runs (one folder per p,
written by :func:`ust.experiments.mvtec_single.run_single_scale`), writes the same maps / val_maps /
thresholds / segmentation / pro_curve / metrics files as a single-scale run for the fused map, plus
``table.json`` and ``table.csv`` (per-scale + multiscale rows).
:func:`recompute_metrics_from_tiffs` evaluates a folder of TIFF maps as the official evaluation does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from ust.data.dataset import GOOD, Sample
from ust.data.mvtec import CategoryIndex, validate_category
from ust.experiments.protocol import (
    METRIC_KEYS,
    EvaluationSettings,
    SavedMaps,
    compute_metrics,
    counts,
    evaluate,
    ground_truth,
    load_maps,
)
from ust.io import read_json, write_csv, write_json


# ------------------------------------------------------------------------------------ multiscale
def read_scale_runs(dirs: Mapping[int, Path], index: CategoryIndex) -> dict[int, dict]:
    """``metrics.json`` of every finished single-scale run; raises FileNotFoundError for a scale
    whose run is unfinished or misses a test map."""
    per_scale: dict[int, dict] = {}
    for p, folder in dirs.items():
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            raise FileNotFoundError(f"scale p={p}: {metrics_file} is missing (run not finished)")
        per_scale[p] = read_json(metrics_file)
        try:
            load_maps(folder / "maps", index.category, index.test)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"scale p={p}: {err}") from None
    return per_scale


def shared_validation(dirs: Mapping[int, Path], index: CategoryIndex) -> list[Sample] | None:
    """The validation samples every scale holds maps of (``val_maps/<category>/train/good``), or
    ``None`` with a warning when the scales disagree (the multiscale run then gets no thresholds)."""
    names = {
        p: sorted(q.name for q in (d / "val_maps" / index.category / "train" / GOOD).glob("*.tiff"))
        for p, d in dirs.items()
    }
    first = next(iter(names.values()))
    by_stem = {q.stem: q for q in index.train}
    stems = [Path(n).stem for n in first]
    if first and all(n == first for n in names.values()) and all(s in by_stem for s in stems):
        return [Sample(by_stem[s], GOOD, index.sizes[by_stem[s]], split="train") for s in stems]
    warnings.warn(
        f"{index.category}: the scales do not share one set of validation maps; the multiscale "
        "run gets no thresholds.json and no segmentation",
        stacklevel=3,
    )
    return None


def write_scale_table(out: Path, per_scale: Mapping[int, dict], result: dict) -> None:
    """``table.json`` and ``table.csv``: the metrics of every scale, then of the fusion."""
    table = {str(p): {k: metrics[k] for k in METRIC_KEYS} for p, metrics in per_scale.items()}
    table["multiscale"] = {k: result[k] for k in METRIC_KEYS}
    write_json(table, out / "table.json", sort_keys=False)
    write_csv(
        out / "table.csv",
        ("scale", *METRIC_KEYS),
        [(name, *(row[k] for k in METRIC_KEYS)) for name, row in table.items()],
    )


def run_multiscale(
    out_dirs_per_p: Mapping[int, str | os.PathLike],
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    settings: EvaluationSettings = EvaluationSettings(),
    *,
    progress: bool = True,
) -> dict:
    """Fuse finished single-scale runs: A = (1/L) Σ_l (ẽ^(l) + ṽ^(l)) per pixel (paper Eq. 12).

    Each ``out_dirs_per_p[p]`` is an ``out_dir`` of
    :func:`ust.experiments.mvtec_single.run_single_scale` (its maps are already normalised by that
    scale's validation statistics and upsampled to the original size; bilinear zoom is linear, so
    fusing there equals fusing at 256 and zooming). Validation maps are fused the same way for the
    thresholds when every scale holds the same validation images.

    Writes to ``out_dir`` what :func:`ust.experiments.protocol.evaluate` writes for the fused map,
    plus the comparison ``table.json`` / ``table.csv`` (one row per scale, read from its
    ``metrics.json``, plus ``multiscale``).

    Returns:
        The multiscale ``metrics.json`` dict (``au_pro``, ``pixel_auroc``, ``image_auroc``,
        ``scales`` and counts).

    Raises:
        MVTecLayoutError: bad folder tree; FileNotFoundError: a scale's run is unfinished or misses a
        map; ValueError: no scale given or map sizes disagree. Nothing is written in these cases.
    """
    if not out_dirs_per_p:
        raise ValueError("run_multiscale needs at least one single-scale run")
    index = validate_category(data_root, category)
    scales = sorted(out_dirs_per_p)
    dirs = {p: Path(out_dirs_per_p[p]) for p in scales}
    per_scale = read_scale_runs(dirs, index)
    validation = shared_validation(dirs, index)
    first = per_scale[scales[0]]
    extra = {
        "scales": scales,
        **{k: first[k] for k in ("n_train", "n_val") if k in first},
        **{k: v for k, v in counts(index, 0, 0).items() if k not in ("n_train", "n_val")},
    }
    method = SavedMaps([dirs[p] for p in scales], category)
    result = evaluate(
        method, index, out_dir, settings, validation=validation, extra=extra, progress=progress
    )
    write_scale_table(Path(out_dir), per_scale, result)
    return result


def recompute_metrics_from_tiffs(
    maps_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    category: str,
    *,
    integration_limit: float = 0.3,
) -> dict[str, float]:
    """Metrics from saved TIFF maps and the original masks (what the official script would see).

    Args:
        maps_dir: folder holding ``<category>/test/<defect>/<id>.tiff`` (e.g. ``<out_dir>/maps``).
        data_root: the dataset root (masks and image sizes are read there).
        category: category name.
        integration_limit: FPR limit of AU-PRO.

    Returns:
        ``{"au_pro", "pixel_auroc", "image_auroc"}`` as floats.

    Raises:
        FileNotFoundError: a test image has no map; ValueError: a map's shape differs from its image.
    """
    index = validate_category(data_root, category)
    maps = load_maps(Path(maps_dir), category, index.test)
    return compute_metrics(maps, ground_truth(index, index.test), integration_limit)
