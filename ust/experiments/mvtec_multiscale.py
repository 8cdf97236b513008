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

import numpy as np
import torch
from tqdm.auto import tqdm

from ust.data.mvtec import (
    GOOD,
    CategoryIndex,
    load_anomaly_map,
    validate_category,
)
from ust.experiments.mvtec_single import (
    METRIC_KEYS,
    check_rule,
    compute_metrics,
    load_masks,
    map_paths,
    split_counts,
    write_results,
)
from ust.experiments.outputs import read_json, write_csv, write_json
from ust.method.scoring import fuse_multiscale


# ------------------------------------------------------------------------------------ multiscale
def read_scale_runs(
    dirs: Mapping[int, Path], category: str, index: CategoryIndex
) -> dict[int, dict]:
    """``metrics.json`` of every finished single-scale run; raises FileNotFoundError for a scale
    whose run is unfinished or misses a test map."""
    per_scale: dict[int, dict] = {}
    for p, folder in dirs.items():
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            raise FileNotFoundError(f"scale p={p}: {metrics_file} is missing (run not finished)")
        per_scale[p] = read_json(metrics_file)
        missing = [q for q in map_paths(folder / "maps", category, index.test) if not q.is_file()]
        if missing:
            raise FileNotFoundError(
                f"scale p={p}: {len(missing)} map(s) missing, e.g. {missing[0]}"
            )
    return per_scale


def fuse_map_files(
    paths_per_scale: list[list[Path]],
    sizes: list[tuple[int, int]],
    desc: str,
    progress: bool,
) -> list[np.ndarray]:
    """Mean of the maps ``paths_per_scale[l][i]`` over the scales l, for each image i of size
    ``sizes[i]`` (a map of another shape raises ValueError)."""
    fused = []
    for i in tqdm(range(len(sizes)), desc=desc, disable=not progress, leave=False):
        maps = [torch.from_numpy(load_anomaly_map(paths[i])) for paths in paths_per_scale]
        if tuple(maps[0].shape) != tuple(sizes[i]):
            raise ValueError(
                f"{paths_per_scale[0][i]}: map shape {tuple(maps[0].shape)} differs from the "
                f"image size {tuple(sizes[i])}"
            )
        fused.append(fuse_multiscale(maps).numpy().astype(np.float32, copy=False))
    return fused


def fuse_validation_maps(
    dirs: Mapping[int, Path], category: str, index: CategoryIndex, progress: bool
) -> tuple[list[np.ndarray] | None, list[Path]]:
    """Fused validation maps and their images when every scale holds the same validation maps,
    else (None, []) with a warning (the multiscale run then gets no thresholds)."""
    scales = list(dirs)
    val_sets = {
        p: sorted((dirs[p] / "val_maps" / category / "train" / GOOD).glob("*.tiff")) for p in scales
    }
    names = {p: [q.name for q in v] for p, v in val_sets.items()}
    val_maps, val_paths = None, []
    if all(names[p] and names[p] == names[scales[0]] for p in scales):
        by_stem = {q.stem: q for q in index.train}
        val_paths = [by_stem[Path(n).stem] for n in names[scales[0]] if Path(n).stem in by_stem]
        if len(val_paths) == len(names[scales[0]]):
            val_maps = fuse_map_files(
                [val_sets[p] for p in scales],
                [index.sizes[q] for q in val_paths],
                "fusing val",
                progress,
            )
        else:
            val_paths = []
    if val_maps is None:
        warnings.warn(
            f"{category}: the scales do not share one set of validation maps; the multiscale run "
            "gets no thresholds.json and no segmentation",
            stacklevel=3,
        )
    return val_maps, val_paths


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
    *,
    integration_limit: float = 0.3,
    segmentation_rule: str = "quantile",
    progress: bool = True,
) -> dict:
    """Fuse finished single-scale runs: A = (1/L) Σ_l (ẽ^(l) + ṽ^(l)) per pixel (paper Eq. 12).

    Each ``out_dirs_per_p[p]`` is an ``out_dir`` of :func:`run_single_scale` (its maps are already
    normalised by that scale's validation statistics and upsampled to the original size; bilinear
    zoom is linear, so fusing there equals fusing at 256 and zooming). Validation maps are fused the
    same way for the thresholds when every scale holds the same validation images.

    Writes to ``out_dir`` the fused ``maps/``, ``val_maps/``, ``thresholds.json``,
    ``segmentation/``, ``pro_curve.csv``, ``metrics.json`` and the comparison ``table.json`` /
    ``table.csv`` (one row per scale, read from its ``metrics.json``, plus ``multiscale``).

    Returns:
        The multiscale ``metrics.json`` dict (``au_pro``, ``pixel_auroc``, ``image_auroc``, ``scales``
        and counts).

    Raises:
        MVTecLayoutError: bad folder tree; FileNotFoundError: a scale's run is unfinished or misses a
        map; ValueError: no scale given or map sizes disagree. Nothing is written in these cases.
    """
    if not out_dirs_per_p:
        raise ValueError("run_multiscale needs at least one single-scale run")
    check_rule(segmentation_rule)
    index = validate_category(data_root, category)
    scales = sorted(out_dirs_per_p)
    dirs = {p: Path(out_dirs_per_p[p]) for p in scales}
    per_scale = read_scale_runs(dirs, category, index)
    test_maps = fuse_map_files(
        [map_paths(dirs[p] / "maps", category, index.test) for p in scales],
        [s.size for s in index.test],
        "fusing test maps",
        progress,
    )
    val_maps, val_paths = fuse_validation_maps(dirs, category, index, progress)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = per_scale[scales[0]]
    extra = {
        "scales": scales,
        **{k: first[k] for k in ("n_train", "n_val") if k in first},
        **{k: v for k, v in split_counts(index, 0, 0).items() if k not in ("n_train", "n_val")},
    }
    result = write_results(
        out,
        index,
        test_maps,
        val_paths,
        val_maps,
        integration_limit=integration_limit,
        segmentation_rule=segmentation_rule,
        extra=extra,
        progress=progress,
    )
    write_scale_table(out, per_scale, result)
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
    maps = []
    for s, path in zip(index.test, map_paths(Path(maps_dir), category, index.test)):
        if not path.is_file():
            raise FileNotFoundError(f"no anomaly map for test image {s.path}: expected {path}")
        m = load_anomaly_map(path)
        if m.shape != tuple(s.size):
            raise ValueError(f"{path}: map shape {m.shape} differs from the image size {s.size}")
        maps.append(m)
    return compute_metrics(maps, load_masks(index.test), integration_limit)
