"""MVTec AD, one receptive field (paper §4.2): train M students, score, upsample, evaluate.

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
    <out_dir>/score_stats.json       e_mean, e_std, v_mean, v_std on the validation split
    <out_dir>/maps/<cat>/test/<defect>/<id>.tiff      float32 ẽ+ṽ at the ORIGINAL image size
    <out_dir>/val_maps/<cat>/train/good/<id>.tiff     the same for the validation images
    <out_dir>/thresholds.json        max / quantile / k_sigma / max_area on the validation maps
    <out_dir>/segmentation/<cat>/test/<defect>/<id>.png   0/255 masks at one threshold (A > t)
    <out_dir>/pro_curve.csv          fpr,pro resampled at 1001 FPRs in [0, 1] (DVC plots)
    <out_dir>/metrics.json           au_pro, pixel_auroc, image_auroc + counts, timings and
                                     optimizer_steps (per student, see below)

:func:`run_multiscale` writes the same maps / val_maps / thresholds / segmentation / pro_curve /
metrics files for the fused map, plus ``table.json`` and ``table.csv`` (per-scale + multiscale rows).
:func:`run_feature_baselines` writes ``baselines.json`` and :func:`run_ssim_ae_baseline`
``ssim_ae.json`` (optionally with ``maps_<method>/...`` TIFFs).

Anomaly maps are computed at ``image_size`` (the networks' input, 256 in the paper) and upsampled
bilinearly (``align_corners=False``) to each image's original size, where the metrics are taken
against the original masks (docs/decisions.md#evaluation-resolution). Everything is deterministic
for a seed on the CPU.

``metrics.json`` records ``optimizer_steps`` (:data:`STEPS_KEY`): the optimiser updates each student
of the ensemble took (all students follow the same schedule), epochs × ⌈n_train / batch_size⌉
(:func:`ust.train.students.optimizer_steps`); also when a finished ensemble was reused (its run configuration
is the same). The report labels a run below
:data:`ust.report.claims.MIN_OPTIMIZER_STEPS` as under-trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ust.data.mvtec import (
    GOOD,
    CategoryIndex,
    TestSample,
    anomaly_map_path,
    load_image,
    load_mask,
    save_anomaly_map,
    validate_category,
)
from ust.eval.metrics import evaluate_maps, pro_curve
from ust.eval.thresholds import binarize, estimate_thresholds, save_segmentation
from ust.experiments.outputs import (
    STEPS_KEY,
    fresh_dir,
    jsonable,
    read_json,
    replace_dir,
    write_csv,
    write_json,
)
from ust.method.networks import PatchNet
from ust.method.scoring import ScoreStats
from ust.method.students import (
    StudentTeacher,
    anomaly_scores,
    fit_target_statistics,
    fit_validation_stats,
    load_ensemble,
    make_students,
    save_ensemble,
)
from ust.train.students import StudentTrainingConfig, optimizer_steps, train_students

__all__ = [
    "STEPS_KEY",
    "MVTecRunSettings",
    "run_single_scale",
    "teacher_fingerprint",
    "upsample_map",
]

METRIC_KEYS: tuple[str, ...] = ("au_pro", "pixel_auroc", "image_auroc")
PRO_CURVE_POINTS = 1001
THRESHOLD_RULES: tuple[str, ...] = ("max", "quantile", "k_sigma", "max_area")
RUN_CONFIG = "run_config.json"
ENSEMBLE = "ensemble.pt"
CHECKPOINT = "students.ckpt"
LIVE_DIR = "dvclive"  # training loss per epoch, for `dvc plots` / `dvc exp show`
#: key of the per-student optimiser-step count in ``metrics.json`` (as ``ust.report.claims``)


def _world_size() -> int:
    """Ranks :func:`ust.train.students.train_students` shares each epoch among (1 outside a
    process group; it trains data parallel inside one with several ranks)."""
    from ust.train import distributed as ddp

    return ddp.current().world_size if ddp.is_initialized() else 1


# ------------------------------------------------------------------------------------ small helpers
def upsample_map(score_map: torch.Tensor | np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear zoom (``align_corners=False``) of one map (h, w) to ``size`` = (H, W) pixels.

    Returns a float32 numpy array (H, W) (scores keep their units;
    docs/decisions.md#evaluation-resolution).
    """
    t = torch.as_tensor(np.asarray(score_map, dtype=np.float32))
    if t.dim() != 2:
        raise ValueError(f"expected a 2-D map (h, w), got shape {tuple(t.shape)}")
    h, w = int(size[0]), int(size[1])
    if tuple(t.shape) != (h, w):
        t = F.interpolate(t[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return t.numpy().astype(np.float32, copy=False)


def as_teacher(teacher: PatchNet | str | os.PathLike, device: torch.device) -> PatchNet:
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


def load_images(paths: Sequence[Path], size: int, desc: str, progress: bool) -> torch.Tensor:
    """(N, 3, size, size) float32 images in [0, 1], zoomed bilinearly (antialiased)."""
    return torch.stack(
        [_load_image(p, size) for p in tqdm(paths, desc=desc, disable=not progress, leave=False)]
    )


def load_masks(samples: Sequence[TestSample]) -> list[np.ndarray]:
    """Ground truth of the test samples as bool (H, W) arrays at the original resolution."""
    return [load_mask(s.mask_path, s.size).numpy() for s in samples]


def compute_metrics(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], limit: float) -> dict:
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


def map_paths(root: Path, category: str, samples: Sequence[TestSample]) -> list[Path]:
    return [anomaly_map_path(root, category, s.defect, s.image_id) for s in samples]


def _val_map_path(root: Path, category: str, image: Path) -> Path:
    return Path(root) / category / "train" / GOOD / f"{Path(image).stem}.tiff"


def split_counts(index: CategoryIndex, n_train: int, n_val: int) -> dict[str, int]:
    c = index.counts()
    return {
        "n_train": n_train,
        "n_val": n_val,
        "n_test": len(index.test),
        "n_test_good": c["test_good"],
        "n_test_defective": c["test_defective"],
    }


def check_rule(rule: str) -> None:
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown segmentation rule {rule!r}; expected one of {THRESHOLD_RULES}")


def write_results(
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
    masks = load_masks(samples)
    metrics = compute_metrics(test_maps, masks, integration_limit)
    fpr, pro = _resampled_pro_curve(test_maps, masks)

    tmp = fresh_dir(out_dir, "maps")
    for path, m in zip(map_paths(tmp, category, samples), test_maps):
        save_anomaly_map(path, m)
    replace_dir(tmp, out_dir / "maps")

    thresholds: dict[str, Any] = {}
    if val_maps is not None:
        tmp = fresh_dir(out_dir, "val_maps")
        for p, m in zip(val_paths, val_maps):
            save_anomaly_map(_val_map_path(tmp, category, p), m)
        replace_dir(tmp, out_dir / "val_maps")
        thresholds = estimate_thresholds(list(val_maps))
        t = thresholds[segmentation_rule]
        tmp = fresh_dir(out_dir, "segmentation")
        for s, m in tqdm(
            list(zip(samples, test_maps)), desc="segmentation", disable=not progress, leave=False
        ):
            seg = tmp / category / "test" / s.defect / f"{s.path.stem}.png"
            save_segmentation(seg, binarize(m, t))
        replace_dir(tmp, out_dir / "segmentation")
        write_json(
            {**thresholds, "segmentation": {"rule": segmentation_rule, "threshold": t}},
            out_dir / "thresholds.json",
            sort_keys=False,
        )

    write_csv(out_dir / "pro_curve.csv", ("fpr", "pro"), zip(fpr.tolist(), pro.tolist()))
    result = {
        "category": category,
        **metrics,
        "integration_limit": integration_limit,
        **extra,
    }
    write_json(result, out_dir / "metrics.json", sort_keys=False)
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


@dataclass(frozen=True)
class MVTecRunSettings:
    """What one single-scale run depends on besides its identity (data, category, p, teacher).

    Attributes:
        image_size: network input side in pixels (256 in the paper).
        students: ensemble size M (3 in the paper).
        training: student optimisation (paper: 100 epochs, batch 1, Adam 1e-4, wd 1e-5).
        val_fraction: share of ``train/good`` held out for validation.
        seed: seed of the split and of the students' initialisation.
        inference_batch_size: images per forward pass when computing statistics and scores.
        integration_limit: FPR limit of AU-PRO (0.3).
        segmentation_rule: threshold used for the PNG segmentations (a key of
            :func:`ust.eval.thresholds.estimate_thresholds`: max, quantile, k_sigma, max_area).

    The choices behind the defaults are recorded in ``docs/decisions.md``.
    """

    image_size: int = 256
    students: int = 3
    training: StudentTrainingConfig = StudentTrainingConfig()
    val_fraction: float = 0.1
    seed: int = 0
    inference_batch_size: int = 8
    integration_limit: float = 0.3
    segmentation_rule: str = "quantile"


@dataclass
class RunInputs:
    """Everything a single-scale run reads, loaded before the first byte is written."""

    index: CategoryIndex
    teacher: PatchNet
    train_paths: list[Path]
    val_paths: list[Path]
    train_images: torch.Tensor
    val_images: torch.Tensor
    test_images: torch.Tensor


def load_run_inputs(
    data_root: str | os.PathLike,
    category: str,
    p: int,
    teacher: PatchNet | str | os.PathLike,
    settings: MVTecRunSettings,
    device: torch.device,
    progress: bool,
) -> RunInputs:
    """Validate the category, copy the teacher (its p must be ``p``), split and load the images."""
    check_rule(settings.segmentation_rule)
    index = validate_category(data_root, category)
    teacher_net = as_teacher(teacher, device)
    if teacher_net.config.p != p:
        raise ValueError(f"p={p} but the teacher has receptive field p={teacher_net.config.p}")
    train_paths, val_paths = index.split(settings.val_fraction, settings.seed)
    size = settings.image_size
    return RunInputs(
        index=index,
        teacher=teacher_net,
        train_paths=train_paths,
        val_paths=val_paths,
        train_images=load_images(train_paths, size, "train images", progress),
        val_images=load_images(val_paths, size, "validation images", progress),
        test_images=load_images([s.path for s in index.test], size, "test images", progress),
    )


def single_scale_run_config(
    category: str, p: int, inputs: RunInputs, settings: MVTecRunSettings
) -> dict:
    """The content of ``run_config.json``: everything the trained ensemble depends on."""
    return jsonable(
        {
            "category": category,
            "p": p,
            "teacher_sha256": teacher_fingerprint(inputs.teacher),
            "students": settings.students,
            "image_size": settings.image_size,
            "training": asdict(settings.training),
            "val_fraction": settings.val_fraction,
            "seed": settings.seed,
            "train_images": [q.name for q in inputs.train_paths],
            "val_images": [q.name for q in inputs.val_paths],
        }
    )


def prepare_run_dir(out: Path, run_config: dict) -> None:
    """Create ``out`` and write ``run_config.json``; refuse a folder that holds another run."""
    config_path = out / RUN_CONFIG
    if config_path.is_file() and read_json(config_path) != run_config:
        raise ValueError(
            f"{out} holds a run with a different configuration ({config_path}); delete the folder "
            "or choose another out_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(run_config, config_path, sort_keys=False)


def train_or_resume(
    out: Path,
    inputs: RunInputs,
    settings: MVTecRunSettings,
    device: torch.device,
    *,
    progress: bool,
    on_epoch: Callable[[int, list[float]], None] | None,
) -> tuple[StudentTeacher, bool, float]:
    """The finished ensemble of ``out`` if there is one, else a trained one (resuming from the
    per-epoch checkpoint); returns (model, trained now, training seconds)."""
    t0 = time.perf_counter()
    if (out / ENSEMBLE).is_file():
        model, _ = load_ensemble(out / ENSEMBLE, device)
        return model, False, time.perf_counter() - t0
    teacher = inputs.teacher
    model = StudentTeacher(teacher, make_students(teacher, settings.students, seed=settings.seed))
    model.to(device)
    fit_target_statistics(
        model, inputs.train_images, batch_size=settings.inference_batch_size, progress=progress
    )
    train_students(
        model,
        inputs.train_images,
        settings.training,
        checkpoint=out / CHECKPOINT,
        progress=progress,
        on_epoch=on_epoch,
        live_dir=out / LIVE_DIR,
    )
    return model, True, time.perf_counter() - t0


def score_run(
    out: Path,
    model: StudentTeacher,
    inputs: RunInputs,
    settings: MVTecRunSettings,
    *,
    p: int,
    trained_now: bool,
    run_config: dict,
    progress: bool,
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, float]]:
    """Validation statistics (saved with a newly trained ensemble and as ``score_stats.json``),
    then the validation and test maps at the original sizes; returns (validation maps, test maps,
    timings: ``inference_seconds`` and ``test_seconds``)."""
    batch = settings.inference_batch_size
    index = inputs.index
    t0 = time.perf_counter()
    stats = fit_validation_stats(model, inputs.val_images, batch_size=batch)
    if trained_now:
        save_ensemble(model, out / ENSEMBLE, score_stats=stats.to_dict(), run_config=run_config)
        (out / CHECKPOINT).unlink(missing_ok=True)
    write_json(stats.to_dict(), out / "score_stats.json", sort_keys=False)
    val_sizes = [index.sizes[q] for q in inputs.val_paths]
    val_maps = _score_maps(
        model,
        inputs.val_images,
        val_sizes,
        stats,
        batch_size=batch,
        desc="validation maps",
        progress=progress,
    )
    t1 = time.perf_counter()
    test_maps = _score_maps(
        model,
        inputs.test_images,
        [s.size for s in index.test],
        stats,
        batch_size=batch,
        desc=f"test maps p={p}",
        progress=progress,
    )
    t2 = time.perf_counter()
    return val_maps, test_maps, {"inference_seconds": t2 - t0, "test_seconds": t2 - t1}


def single_scale_extra(
    p: int,
    inputs: RunInputs,
    settings: MVTecRunSettings,
    *,
    trained_now: bool,
    seconds: Mapping[str, float],
) -> dict:
    """The ``metrics.json`` entries after the metrics: identity, counts, the per-student
    :data:`STEPS_KEY` and timings (``seconds``: ``train_seconds``, ``inference_seconds``,
    ``test_seconds``)."""
    index = inputs.index
    return {
        "p": p,
        "students": settings.students,
        "image_size": settings.image_size,
        "epochs": settings.training.epochs,
        STEPS_KEY: optimizer_steps(len(inputs.train_paths), settings.training, _world_size()),
        **split_counts(index, len(inputs.train_paths), len(inputs.val_paths)),
        "trained_now": trained_now,
        "train_seconds": seconds["train_seconds"],
        "inference_seconds": seconds["inference_seconds"],
        "test_images_per_second": len(index.test) / max(seconds["test_seconds"], 1e-9),
    }


def run_single_scale(
    data_root: str | os.PathLike,
    category: str,
    p: int,
    teacher: PatchNet | str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: MVTecRunSettings = MVTecRunSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> dict:
    """Train and evaluate one student-teacher ensemble of receptive field ``p`` on one category.

    Protocol (``docs/decisions.md``): ``train/good`` is split into a seeded 90 % training and 10 %
    validation part; images are zoomed to ``settings.image_size``²; the teacher's μ/σ are taken
    over all pixels of the training part; ``settings.students`` students are trained with
    ``settings.training`` (checkpoint after every epoch, a later call resumes); e/v statistics come
    from the validation part; test and validation maps ẽ+ṽ are upsampled to the original size and
    evaluated against the original masks. See the module docstring for the files written.

    Args:
        data_root: folder holding ``<category>/train``, ``test`` and ``ground_truth``.
        category: category folder name.
        p: receptive field (17, 33 or 65); must match the teacher.
        teacher: a :class:`PatchNet` (copied, never modified) or a teacher file from ``pretrain``.
        out_dir: output folder (created only after the layout has been validated).
        settings: see :class:`MVTecRunSettings`.
        device: torch device for training and scoring.
        progress: tqdm progress bars.
        on_epoch: called as ``on_epoch(epoch, losses)`` after every training epoch.

    Returns:
        The dict written to ``metrics.json``: ``au_pro``, ``pixel_auroc``, ``image_auroc`` (floats
        in [0, 1]), identity (category, p, students, image_size, epochs), ``optimizer_steps`` (per
        student), counts (n_train, n_val, n_test, n_test_good, n_test_defective) and timings in
        seconds (``train_seconds`` is 0 when a finished ensemble was reused).

    Raises:
        MVTecLayoutError: bad folder tree (nothing is written).
        ValueError: ``p`` differs from the teacher's, an unknown segmentation rule, or ``out_dir``
            holds a run with another configuration (delete it to start afresh).
    """
    device = torch.device(device)
    inputs = load_run_inputs(data_root, category, p, teacher, settings, device, progress)
    out = Path(out_dir)
    run_config = single_scale_run_config(category, p, inputs, settings)
    prepare_run_dir(out, run_config)
    model, trained_now, train_seconds = train_or_resume(
        out, inputs, settings, device, progress=progress, on_epoch=on_epoch
    )
    val_maps, test_maps, seconds = score_run(
        out,
        model,
        inputs,
        settings,
        p=p,
        trained_now=trained_now,
        run_config=run_config,
        progress=progress,
    )
    seconds["train_seconds"] = train_seconds if trained_now else 0.0
    return write_results(
        out,
        inputs.index,
        test_maps,
        inputs.val_paths,
        val_maps,
        integration_limit=settings.integration_limit,
        segmentation_rule=settings.segmentation_rule,
        extra=single_scale_extra(p, inputs, settings, trained_now=trained_now, seconds=seconds),
        progress=progress,
    )
