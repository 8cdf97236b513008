"""MVTec AD experiments (SPEC §3.2, §4, §5.2, §7.1-7.2): single scale, multiscale and Table 2 baselines.

Every function validates the category's folder tree first (:func:`ust.data.mvtec.validate_category`)
and loads all images before the first byte is written, so a bad layout leaves ``out_dir`` untouched.
Each file is written atomically (temp file + ``os.replace``); map and segmentation folders are built
in a hidden temp folder and swapped into place whole, so a crash never leaves a mixture of old and
new maps. ``metrics.json`` is written last: its presence marks a finished run.

Output layout of :func:`run_single_scale` (``<cat>`` = category, ``<defect>/<id>`` = a test image)::

    <out_dir>/run_config.json        what the run depends on (a different config in the same folder
                                     is refused instead of silently mixing two runs)
    <out_dir>/students.ckpt          per-epoch training state while training (deleted when done)
    <out_dir>/ensemble.pt            teacher + students + μ/σ + e/v stats (ust.method.students.save_ensemble)
    <out_dir>/score_stats.json       e_mean, e_std, v_mean, v_std on the validation split (SPEC §4.2)
    <out_dir>/maps/<cat>/test/<defect>/<id>.tiff      float32 ẽ+ṽ at the ORIGINAL image size (A15)
    <out_dir>/val_maps/<cat>/train/good/<id>.tiff     the same for the validation images
    <out_dir>/thresholds.json        max / quantile / k_sigma / max_area on the validation maps
    <out_dir>/segmentation/<cat>/test/<defect>/<id>.png   0/255 masks at one threshold (A > t)
    <out_dir>/pro_curve.csv          fpr,pro resampled at 1001 FPRs in [0, 1] (DVC plots)
    <out_dir>/metrics.json           au_pro, pixel_auroc, image_auroc + counts and timings

:func:`run_multiscale` writes the same maps / val_maps / thresholds / segmentation / pro_curve /
metrics files for the fused map, plus ``table.json`` and ``table.csv`` (per-scale + multiscale rows).
:func:`run_feature_baselines` writes ``baselines.json`` and :func:`run_ssim_ae_baseline`
``ssim_ae.json`` (optionally with ``maps_<method>/...`` TIFFs).

Anomaly maps are computed at ``image_size`` (the networks' input, 256 in the paper) and upsampled
bilinearly (``align_corners=False``) to each image's original size, where the metrics are taken
against the original masks (register A15). Everything is deterministic for a seed on the CPU.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import io
import json
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ust.data.mvtec import (
    GOOD,
    CategoryIndex,
    TestSample,
    anomaly_map_path,
    atomic_write,
    load_anomaly_map,
    load_image,
    load_mask,
    save_anomaly_map,
    validate_category,
)
from ust.eval.metrics import evaluate_maps, pro_curve
from ust.eval.thresholds import binarize, estimate_thresholds, save_segmentation
from ust.method.networks import PatchNet
from ust.method.scoring import ScoreStats, fuse_multiscale
from ust.method.students import (
    StudentTeacher,
    StudentTrainingConfig,
    anomaly_scores,
    derive_seed,
    fit_target_statistics,
    fit_validation_stats,
    load_ensemble,
    make_students,
    save_ensemble,
    train_students,
)

__all__ = [
    "BASELINE_METHODS",
    "recompute_metrics_from_tiffs",
    "run_feature_baselines",
    "run_multiscale",
    "run_single_scale",
    "run_ssim_ae_baseline",
    "teacher_fingerprint",
    "upsample_map",
]

BASELINE_METHODS: tuple[str, ...] = ("1nn", "kmeans", "ocsvm", "l2ae", "vae")
METRIC_KEYS: tuple[str, ...] = ("au_pro", "pixel_auroc", "image_auroc")
PRO_CURVE_POINTS = 1001
THRESHOLD_RULES: tuple[str, ...] = ("max", "quantile", "k_sigma", "max_area")
RUN_CONFIG = "run_config.json"
ENSEMBLE = "ensemble.pt"
CHECKPOINT = "students.ckpt"


# ------------------------------------------------------------------------------------ small helpers
def upsample_map(score_map: torch.Tensor | np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear zoom (``align_corners=False``) of one map (h, w) to ``size`` = (H, W) pixels.

    Returns a float32 numpy array (H, W) (scores keep their units; register A15).
    """
    t = torch.as_tensor(np.asarray(score_map, dtype=np.float32))
    if t.dim() != 2:
        raise ValueError(f"expected a 2-D map (h, w), got shape {tuple(t.shape)}")
    h, w = int(size[0]), int(size[1])
    if tuple(t.shape) != (h, w):
        t = F.interpolate(t[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return t.numpy().astype(np.float32, copy=False)


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(data))


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON (tuples → lists) so configs compare equal to what was stored."""
    return json.loads(json.dumps(obj))


def _fresh_dir(parent: Path, name: str) -> Path:
    """A new hidden sibling folder ``.<name>.tmp-<hex>`` of ``parent/name`` (stale ones removed)."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in list(parent.glob(f".{name}.tmp-*")) + list(parent.glob(f".{name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an older ``target`` whole."""
    if target.exists():
        trash = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
        os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _as_teacher(teacher: PatchNet | str | os.PathLike, device: torch.device) -> PatchNet:
    """A private copy of ``teacher`` (a :class:`PatchNet` or a file written by ``pretrain``)."""
    if isinstance(teacher, PatchNet):
        return copy.deepcopy(teacher).to(device).eval()
    from ust.method.teacher import (
        load_teacher,  # lazy: the pretraining stack is not needed otherwise
    )

    return load_teacher(teacher, device)


def teacher_fingerprint(teacher: PatchNet) -> str:
    """SHA-256 of the teacher's configuration and descriptor weights (the decoder is ignored)."""
    h = hashlib.sha256(json.dumps(asdict(teacher.config), sort_keys=True).encode())
    for key, value in sorted(teacher.state_dict().items()):
        if key.startswith("decoder."):
            continue
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) float32 in [0, 1] (grayscale replicated, bilinear zoom)."""
    return load_image(path, size)


def _load_images(paths: Sequence[Path], size: int, desc: str, progress: bool) -> torch.Tensor:
    """(N, 3, size, size) float32 images in [0, 1], zoomed bilinearly (antialiased)."""
    return torch.stack(
        [_load_image(p, size) for p in tqdm(paths, desc=desc, disable=not progress, leave=False)]
    )


def _load_masks(samples: Sequence[TestSample]) -> list[np.ndarray]:
    """Ground truth of the test samples as bool (H, W) arrays at the original resolution."""
    return [load_mask(s.mask_path, s.size).numpy() for s in samples]


def _metrics(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], limit: float) -> dict:
    """The three map metrics (au_pro at ``limit``, pixel and image ROC-AUC) as Python floats."""
    result = evaluate_maps(list(maps), list(masks), integration_limit=limit)
    return {k: float(result[k]) for k in METRIC_KEYS}


def _resampled_pro_curve(
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


def _map_paths(root: Path, category: str, samples: Sequence[TestSample]) -> list[Path]:
    return [anomaly_map_path(root, category, s.defect, s.image_id) for s in samples]


def _val_map_path(root: Path, category: str, image: Path) -> Path:
    return Path(root) / category / "train" / GOOD / f"{Path(image).stem}.tiff"


def _counts(index: CategoryIndex, n_train: int, n_val: int) -> dict[str, int]:
    c = index.counts()
    return {
        "n_train": n_train,
        "n_val": n_val,
        "n_test": len(index.test),
        "n_test_good": c["test_good"],
        "n_test_defective": c["test_defective"],
    }


def _check_rule(rule: str) -> None:
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown segmentation rule {rule!r}; expected one of {THRESHOLD_RULES}")


def _write_results(
    out_dir: Path,
    index: CategoryIndex,
    test_maps: Sequence[np.ndarray],
    val_paths: Sequence[Path],
    val_maps: Sequence[np.ndarray] | None,
    *,
    integration_limit: float,
    segmentation_rule: str,
    extra: Mapping[str, Any],
    progress: bool,
) -> dict:
    """Write maps, validation maps, thresholds, segmentations, PRO curve and (last) metrics.json.

    ``test_maps``/``val_maps`` are float32 (H, W) arrays at the images' original sizes, in the order
    of ``index.test`` / ``val_paths``. Returns the metrics dict that was written.
    """
    category = index.category
    samples = index.test
    masks = _load_masks(samples)
    metrics = _metrics(test_maps, masks, integration_limit)
    fpr, pro = _resampled_pro_curve(test_maps, masks)

    tmp = _fresh_dir(out_dir, "maps")
    for path, m in zip(_map_paths(tmp, category, samples), test_maps):
        save_anomaly_map(path, m)
    _replace_dir(tmp, out_dir / "maps")

    thresholds: dict[str, Any] = {}
    if val_maps is not None:
        tmp = _fresh_dir(out_dir, "val_maps")
        for p, m in zip(val_paths, val_maps):
            save_anomaly_map(_val_map_path(tmp, category, p), m)
        _replace_dir(tmp, out_dir / "val_maps")
        thresholds = estimate_thresholds(list(val_maps))
        t = thresholds[segmentation_rule]
        tmp = _fresh_dir(out_dir, "segmentation")
        for s, m in tqdm(
            list(zip(samples, test_maps)), desc="segmentation", disable=not progress, leave=False
        ):
            seg = tmp / category / "test" / s.defect / f"{s.path.stem}.png"
            save_segmentation(seg, binarize(m, t))
        _replace_dir(tmp, out_dir / "segmentation")
        _write_json(
            out_dir / "thresholds.json",
            {**thresholds, "segmentation": {"rule": segmentation_rule, "threshold": t}},
        )

    _write_csv(out_dir / "pro_curve.csv", ("fpr", "pro"), zip(fpr.tolist(), pro.tolist()))
    result = {
        "category": category,
        **metrics,
        "integration_limit": integration_limit,
        **extra,
    }
    _write_json(out_dir / "metrics.json", result)
    return result


# ---------------------------------------------------------------------------------- single scale
def _score_maps(
    model: StudentTeacher,
    images: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    stats: ScoreStats,
    *,
    batch_size: int,
    desc: str,
    progress: bool,
) -> list[np.ndarray]:
    """ẽ+ṽ maps of ``images`` (N, 3, h, w), each upsampled to its original size (H_i, W_i)."""
    out: list[np.ndarray] = []
    for start in tqdm(
        range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False
    ):
        scores = anomaly_scores(model, images[start : start + batch_size], stats)
        out.extend(
            upsample_map(s, size) for s, size in zip(scores, sizes[start : start + batch_size])
        )
    return out


def run_single_scale(
    data_root: str | os.PathLike,
    category: str,
    p: int,
    teacher: PatchNet | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    students: int = 3,
    training: StudentTrainingConfig = StudentTrainingConfig(),
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 8,
    integration_limit: float = 0.3,
    segmentation_rule: str = "quantile",
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> dict:
    """Train and evaluate one student-teacher ensemble of receptive field ``p`` on one category.

    Protocol (SPEC §3.2, §4.2-4.3, §5.2): ``train/good`` is split into a seeded 90 % training and
    10 % validation part (register A11); images are zoomed to ``image_size``²; the teacher's μ/σ are
    taken over all pixels of the training part (A12); ``students`` students are trained with
    ``training`` (checkpoint after every epoch, a later call resumes); e/v statistics come from the
    validation part; test and validation maps ẽ+ṽ are upsampled to the original size (A15) and
    evaluated against the original masks. See the module docstring for the files written.

    Args:
        data_root: folder holding ``<category>/train``, ``test`` and ``ground_truth``.
        category: category folder name.
        p: receptive field (17, 33 or 65); must match the teacher.
        teacher: a :class:`PatchNet` (copied, never modified) or a teacher file from ``pretrain``.
        out_dir: output folder (created only after the layout has been validated).
        image_size: network input side in pixels (256 in the paper).
        students: ensemble size M (3 in the paper).
        training: student optimisation (paper: 100 epochs, batch 1, Adam 1e-4, wd 1e-5).
        val_fraction: share of ``train/good`` held out for validation.
        seed: seed of the split and of the students' initialisation.
        device: torch device for training and scoring.
        progress: tqdm progress bars.
        batch_size: images per forward pass when computing statistics and scores.
        integration_limit: FPR limit of AU-PRO (0.3).
        segmentation_rule: threshold used for the PNG segmentations (a key of
            :func:`ust.eval.thresholds.estimate_thresholds`: max, quantile, k_sigma, max_area).
        on_epoch: called as ``on_epoch(epoch, losses)`` after every training epoch.

    Returns:
        The dict written to ``metrics.json``: ``au_pro``, ``pixel_auroc``, ``image_auroc`` (floats
        in [0, 1]), identity (category, p, students, image_size, epochs), counts (n_train, n_val,
        n_test, n_test_good, n_test_defective) and timings in seconds (``train_seconds`` is 0 when
        a finished ensemble was reused).

    Raises:
        MVTecLayoutError: bad folder tree (nothing is written).
        ValueError: ``p`` differs from the teacher's, or ``out_dir`` holds a run with another
            configuration (delete it to start afresh).
    """
    _check_rule(segmentation_rule)
    index = validate_category(data_root, category)
    device = torch.device(device)
    teacher_net = _as_teacher(teacher, device)
    if teacher_net.config.p != p:
        raise ValueError(f"p={p} but the teacher has receptive field p={teacher_net.config.p}")
    train_paths, val_paths = index.split(val_fraction, seed)
    train_imgs = _load_images(train_paths, image_size, "train images", progress)
    val_imgs = _load_images(val_paths, image_size, "validation images", progress)
    test_imgs = _load_images([s.path for s in index.test], image_size, "test images", progress)

    out = Path(out_dir)
    run_config = _jsonable(
        {
            "category": category,
            "p": p,
            "teacher_sha256": teacher_fingerprint(teacher_net),
            "students": students,
            "image_size": image_size,
            "training": asdict(training),
            "val_fraction": val_fraction,
            "seed": seed,
            "train_images": [q.name for q in train_paths],
            "val_images": [q.name for q in val_paths],
        }
    )
    config_path = out / RUN_CONFIG
    if config_path.is_file() and _read_json(config_path) != run_config:
        raise ValueError(
            f"{out} holds a run with a different configuration ({config_path}); delete the folder "
            "or choose another out_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(config_path, run_config)

    ensemble_path, ckpt_path = out / ENSEMBLE, out / CHECKPOINT
    t0 = time.perf_counter()
    if ensemble_path.is_file():
        model, _ = load_ensemble(ensemble_path, device)
        trained_now = False
    else:
        model = StudentTeacher(teacher_net, make_students(teacher_net, students, seed=seed))
        model.to(device)
        fit_target_statistics(model, train_imgs, batch_size=batch_size, progress=progress)
        train_students(
            model, train_imgs, training, checkpoint=ckpt_path, progress=progress, on_epoch=on_epoch
        )
        trained_now = True
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = fit_validation_stats(model, val_imgs, batch_size=batch_size)
    if trained_now:
        save_ensemble(model, ensemble_path, score_stats=stats.to_dict(), run_config=run_config)
        ckpt_path.unlink(missing_ok=True)
    _write_json(out / "score_stats.json", stats.to_dict())
    val_maps = _score_maps(
        model,
        val_imgs,
        [index.sizes[q] for q in val_paths],
        stats,
        batch_size=batch_size,
        desc="validation maps",
        progress=progress,
    )
    t1 = time.perf_counter()
    test_maps = _score_maps(
        model,
        test_imgs,
        [s.size for s in index.test],
        stats,
        batch_size=batch_size,
        desc=f"test maps p={p}",
        progress=progress,
    )
    test_seconds = time.perf_counter() - t1
    inference_seconds = time.perf_counter() - t0

    extra = {
        "p": p,
        "students": students,
        "image_size": image_size,
        "epochs": training.epochs,
        **_counts(index, len(train_paths), len(val_paths)),
        "trained_now": trained_now,
        "train_seconds": train_seconds if trained_now else 0.0,
        "inference_seconds": inference_seconds,
        "test_images_per_second": len(index.test) / max(test_seconds, 1e-9),
    }
    return _write_results(
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


# ------------------------------------------------------------------------------------ multiscale
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
    """Fuse finished single-scale runs: A = (1/L) Σ_l (ẽ^(l) + ṽ^(l)) per pixel (SPEC §4.2, Eq. 12).

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
    _check_rule(segmentation_rule)
    index = validate_category(data_root, category)
    scales = sorted(out_dirs_per_p)
    dirs = {p: Path(out_dirs_per_p[p]) for p in scales}
    per_scale: dict[int, dict] = {}
    for p in scales:
        metrics_file = dirs[p] / "metrics.json"
        if not metrics_file.is_file():
            raise FileNotFoundError(f"scale p={p}: {metrics_file} is missing (run not finished)")
        per_scale[p] = _read_json(metrics_file)
        missing = [q for q in _map_paths(dirs[p] / "maps", category, index.test) if not q.is_file()]
        if missing:
            raise FileNotFoundError(
                f"scale p={p}: {len(missing)} map(s) missing, e.g. {missing[0]}"
            )

    def fuse(paths_per_scale: list[list[Path]], sizes: list[tuple[int, int]], desc: str):
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

    test_maps = fuse(
        [_map_paths(dirs[p] / "maps", category, index.test) for p in scales],
        [s.size for s in index.test],
        "fusing test maps",
    )
    val_sets = {
        p: sorted((dirs[p] / "val_maps" / category / "train" / GOOD).glob("*.tiff")) for p in scales
    }
    names = {p: [q.name for q in v] for p, v in val_sets.items()}
    val_maps, val_paths = None, []
    if all(names[p] and names[p] == names[scales[0]] for p in scales):
        by_stem = {q.stem: q for q in index.train}
        val_paths = [by_stem[Path(n).stem] for n in names[scales[0]] if Path(n).stem in by_stem]
        if len(val_paths) == len(names[scales[0]]):
            val_maps = fuse(
                [val_sets[p] for p in scales], [index.sizes[q] for q in val_paths], "fusing val"
            )
        else:
            val_paths = []
    if val_maps is None:
        warnings.warn(
            f"{category}: the scales do not share one set of validation maps; the multiscale run "
            "gets no thresholds.json and no segmentation",
            stacklevel=2,
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = per_scale[scales[0]]
    extra = {
        "scales": scales,
        **{k: first[k] for k in ("n_train", "n_val") if k in first},
        **{k: v for k, v in _counts(index, 0, 0).items() if k not in ("n_train", "n_val")},
    }
    result = _write_results(
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
    table = {str(p): {k: per_scale[p][k] for k in METRIC_KEYS} for p in scales}
    table["multiscale"] = {k: result[k] for k in METRIC_KEYS}
    _write_json(out / "table.json", table)
    _write_csv(
        out / "table.csv",
        ("scale", *METRIC_KEYS),
        [(name, *(row[k] for k in METRIC_KEYS)) for name, row in table.items()],
    )
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
    for s, path in zip(index.test, _map_paths(Path(maps_dir), category, index.test)):
        if not path.is_file():
            raise FileNotFoundError(f"no anomaly map for test image {s.path}: expected {path}")
        m = load_anomaly_map(path)
        if m.shape != tuple(s.size):
            raise ValueError(f"{path}: map shape {m.shape} differs from the image size {s.size}")
        maps.append(m)
    return _metrics(maps, _load_masks(index.test), integration_limit)


# ------------------------------------------------------------------------------------- baselines
def _teacher_only(teacher: PatchNet, device: torch.device) -> StudentTeacher:
    """A :class:`StudentTeacher` without students: dense teacher features and their μ/σ."""
    return StudentTeacher(teacher, nn.ModuleList(), dense=True).to(device)


def _sample_descriptors(
    model: StudentTeacher,
    images: torch.Tensor,
    n_samples: int,
    seed: int,
    *,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """A seeded random subset of the normalised dense descriptors of ``images`` (N, 3, h, w).

    Draws ``min(n_samples, N·h·w)`` distinct pixel positions uniformly over all images and returns
    their (y^T − μ)/σ descriptors, shape (n, d) float32, in random order (so any prefix is itself a
    uniform random subset).
    """
    n, _, h, w = images.shape
    total = n * h * w
    k = min(int(n_samples), total)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=k, replace=False))
    device = model.target_mean.device
    parts = []
    for start in tqdm(
        range(0, n, batch_size), desc="teacher descriptors", disable=not progress, leave=False
    ):
        batch = images[start : start + batch_size]
        lo, hi = start * h * w, (start + len(batch)) * h * w
        sel = chosen[(chosen >= lo) & (chosen < hi)] - lo
        if len(sel) == 0:
            continue
        feats = model.targets(batch.to(device)).permute(0, 2, 3, 1).reshape(-1, model.teacher.d)
        parts.append(feats[torch.from_numpy(sel).to(device)].cpu().numpy())
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    return samples[rng.permutation(k)]


def _score_descriptors(
    score: Callable[[np.ndarray], np.ndarray], desc: np.ndarray, chunk_size: int | None
) -> np.ndarray:
    """Scores of (n, d) descriptors → (n,), ``chunk_size`` rows at a time (None: all at once)."""
    step = len(desc) if chunk_size is None else max(1, int(chunk_size))
    return np.concatenate(
        [np.asarray(score(desc[i : i + step])) for i in range(0, len(desc), step)]
    )


def run_feature_baselines(
    data_root: str | os.PathLike,
    category: str,
    teacher65: PatchNet | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    methods: Sequence[str] = BASELINE_METHODS,
    n_1nn: int = 5000,
    n_fit: int = 50_000,
    ae_epochs: int = 100,
    ae_lr: float = 1e-4,
    ae_batch: int = 512,
    ae_weight_decay: float = 1e-5,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 8,
    chunk_size: int = 65_536,
    integration_limit: float = 0.3,
    save_maps: bool = False,
) -> dict[str, dict]:
    """Feature-distribution baselines of [P] Table 2 on the teacher's dense descriptors (SPEC §7.1).

    The teacher (p = 65 in the paper) describes every pixel of the training part of ``train/good``
    (the same seeded 90 % split as the students); descriptors are normalised per dimension by their
    mean/std over all training pixels, exactly as the students' targets. Fitting uses seeded random
    subsets of pixels: ``n_1nn`` (5000) vectors as the 1-NN dictionary and ``n_fit`` (50 000) for
    K-Means and OC-SVM (register A19) and for the ℓ2-AE / VAE (the paper's "all descriptors" in
    batches of 512 is read as this subset, a reproduction choice). Shallow models reduce with PCA
    (95 % variance) first; the autoencoders see the raw normalised 128-d vectors. Every pixel of a
    test image's (image_size²) descriptor map is scored: by the shallow models in chunks of
    ``chunk_size`` rows, by the autoencoders one image per call (they batch internally; the VAE's
    5 posterior samples are seeded per image, so results do not depend on any chunking). The map
    is upsampled bilinearly to the original size and evaluated like the students' maps.

    Args:
        methods: subset of ``("1nn", "kmeans", "ocsvm", "l2ae", "vae")``.
        ae_epochs, ae_lr, ae_batch, ae_weight_decay: autoencoder training ([P] App. C: 100, 1e-4,
            512, 1e-5).
        save_maps: also write ``<out_dir>/maps_<method>/<category>/test/<defect>/<id>.tiff``.
        (others as in :func:`run_single_scale`)

    Returns:
        ``{method: {"au_pro", "pixel_auroc", "image_auroc", "n_fit", "fit_seconds",
        "score_seconds"}}``, also written to ``<out_dir>/baselines.json``.
    """
    from ust.baselines.autoencoders import make_autoencoder, train_autoencoder
    from ust.baselines.shallow import make_shallow

    methods = [m.lower() for m in methods]
    unknown = [m for m in methods if m not in BASELINE_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown baseline(s) {unknown}; choose among {BASELINE_METHODS}")
    index = validate_category(data_root, category)
    device = torch.device(device)
    teacher = _as_teacher(teacher65, device)
    train_paths, _ = index.split(val_fraction, seed)
    train_imgs = _load_images(train_paths, image_size, "train images", progress)
    test_imgs = _load_images([s.path for s in index.test], image_size, "test images", progress)

    model = _teacher_only(teacher, device)
    fit_target_statistics(model, train_imgs, batch_size=batch_size, progress=progress)
    sizes = {"1nn": n_1nn, "kmeans": n_fit, "ocsvm": n_fit, "l2ae": n_fit, "vae": n_fit}
    pool = _sample_descriptors(
        model,
        train_imgs,
        max(sizes[m] for m in methods),
        derive_seed(seed, 65),
        batch_size=batch_size,
        progress=progress,
    )

    # name → (score function, rows per call). The autoencoders batch internally and see a whole
    # image per call: the VAE's sampling noise then depends on the image only, not on chunking.
    scorers: dict[str, tuple[Callable[..., np.ndarray], int | None]] = {}
    info: dict[str, dict] = {}
    for name in methods:
        X = pool[: sizes[name]]
        t0 = time.perf_counter()
        if name in ("1nn", "kmeans", "ocsvm"):
            kw = {"device": str(device)} if name == "1nn" else {}
            est = make_shallow(name, pca_variance=0.95, max_samples=None, seed=seed, **kw).fit(X)
            scorers[name] = (est.score, chunk_size)
        else:
            ae = make_autoencoder(name, in_dim=X.shape[1], seed=derive_seed(seed, 7))
            train_autoencoder(
                ae,
                X,
                epochs=ae_epochs,
                lr=ae_lr,
                batch_size=ae_batch,
                weight_decay=ae_weight_decay,
                seed=seed,
                device=device,
                progress=progress,
            )
            scorers[name] = (ae.score, None)
        info[name] = {
            "n_fit": len(X),
            "fit_seconds": time.perf_counter() - t0,
            "score_seconds": 0.0,
        }

    small: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    h, w = test_imgs.shape[-2:]
    for start in tqdm(
        range(0, len(test_imgs), batch_size), desc="baseline maps", disable=not progress
    ):
        feats = model.targets(test_imgs[start : start + batch_size].to(device))
        for offset, f in enumerate(feats):
            desc = f.permute(1, 2, 0).reshape(-1, f.shape[0]).cpu().numpy()
            for name in methods:
                fn, rows = scorers[name]
                if name == "vae":
                    image_seed = derive_seed(seed, start + offset)
                    fn = functools.partial(fn, seed=image_seed)
                t0 = time.perf_counter()
                s = _score_descriptors(fn, desc, rows)
                info[name]["score_seconds"] += time.perf_counter() - t0
                small[name].append(s.reshape(h, w).astype(np.float32))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    masks = _load_masks(index.test)
    results: dict[str, dict] = {}
    for name in methods:
        maps = [upsample_map(m, s.size) for m, s in zip(small[name], index.test)]
        if save_maps:
            _save_map_folder(out, f"maps_{name}", index, maps)
        results[name] = {**_metrics(maps, masks, integration_limit), **info[name]}
    _write_json(out / "baselines.json", results)
    return results


def _save_map_folder(
    out: Path, folder: str, index: CategoryIndex, maps: Sequence[np.ndarray]
) -> None:
    tmp = _fresh_dir(out, folder)
    for path, m in zip(_map_paths(tmp, index.category, index.test), maps):
        save_anomaly_map(path, m)
    _replace_dir(tmp, out / folder)


def run_ssim_ae_baseline(
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    patch: int | None = None,
    stride: int = 30,
    config: Any = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    integration_limit: float = 0.3,
    save_maps: bool = False,
) -> dict:
    """SSIM-autoencoder baseline ([P] Table 2) with the thesis ch. 3 protocol (SPEC §7.2, A24).

    Grayscale images (BT.601 luma) zoomed to ``image_size``²; the AE (thesis Table 3.1) is trained on
    random ``patch``² crops of the 90 % training split (``config``: an
    :class:`ust.baselines.ssim_ae.SSIMAEConfig`, default ch. 3: d = 100, 10 000 crops, 200 epochs,
    Adam 2e-4, wd 1e-5, batch 64); test images are evaluated patch-wise with ``stride`` and the
    per-pixel 1 − SSIM averaged over overlapping patches, then upsampled to the original size.
    The training state is checkpointed in ``out_dir`` after every epoch (a later call resumes).

    Args:
        patch: patch side, default 128 or ``image_size`` if smaller; must be 128 or 256 (the only
            input sizes of the architecture).
        stride: step between evaluated patches in pixels (thesis ch. 3: 30).
        save_maps: also write ``<out_dir>/maps_ssim_ae/<category>/test/<defect>/<id>.tiff``.

    Returns:
        ``{"au_pro", "pixel_auroc", "image_auroc", "patch", "stride", "train_seconds",
        "score_seconds"}``, also written to ``<out_dir>/ssim_ae.json``.
    """
    from ust.baselines.ssim_ae import SSIMAEConfig, ssim_ae_anomaly_map, to_grayscale, train_ssim_ae

    patch = min(128, image_size) if patch is None else int(patch)
    if patch not in (128, 256) or patch > image_size:
        raise ValueError(
            f"SSIM-AE patch must be 128 or 256 and ≤ image_size={image_size}, got {patch}"
        )
    index = validate_category(data_root, category)
    train_paths, _ = index.split(val_fraction, seed)
    train_imgs = to_grayscale(_load_images(train_paths, image_size, "train images", progress))
    test_imgs = to_grayscale(
        _load_images([s.path for s in index.test], image_size, "test images", progress)
    )
    cfg = copy.deepcopy(config) if config is not None else SSIMAEConfig()
    cfg.input_size, cfg.in_channels, cfg.seed, cfg.progress = patch, 1, seed, progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, _ = train_ssim_ae(train_imgs, cfg, device=device, checkpoint_dir=out)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps = [
        upsample_map(
            ssim_ae_anomaly_map(model, img, stride=stride, win_size=cfg.win_size, K=cfg.K), s.size
        )
        for img, s in tqdm(
            list(zip(test_imgs, index.test)), desc="SSIM-AE maps", disable=not progress
        )
    ]
    score_seconds = time.perf_counter() - t0
    if save_maps:
        _save_map_folder(out, "maps_ssim_ae", index, maps)
    result = {
        **_metrics(maps, _load_masks(index.test), integration_limit),
        "patch": patch,
        "stride": stride,
        "train_seconds": train_seconds,
        "score_seconds": score_seconds,
    }
    _write_json(out / "ssim_ae.json", result)
    return result
