"""Fitting a :class:`~ust.detector.Detector` on anomaly-free images (paper §3.2 and §4.2).

Steps: hold out a seeded validation split of the good images (docs/decisions.md#validation-split),
zoom every image to ``image_size``², then per scale p: the teacher's μ/σ over the training pixels
(docs/decisions.md#student-target-normalisation), M students trained for ``training.epochs``
(docs/decisions.md#mvtec-student-training), and the e/v statistics over the validation pixels
(docs/decisions.md#score-normalisation). Finally the fused maps of the validation images at their
original sizes give the thresholds (docs/decisions.md#segmentation-thresholds).

With ``work_dir`` each scale works in ``<work_dir>/p<p>/``: ``run_config.json`` (what the scale
depends on; another configuration there is refused), ``students.ckpt`` after every epoch (a new call
resumes from it) and ``ensemble.pt`` when the scale is done (a new call reuses it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ust.data.mvtec import split_train_val
from ust.detector.config import DetectorConfig
from ust.detector.images import as_image, as_items, sizes_of, zoom
from ust.detector.model import Calibration, Detector
from ust.experiments.mvtec_single import (
    CHECKPOINT,
    ENSEMBLE,
    as_teacher,
    prepare_run_dir,
    teacher_fingerprint,
    upsample_map,
)
from ust.experiments.outputs import jsonable
from ust.method.networks import PatchNet
from ust.method.scoring import ScoreStats
from ust.method.students import (
    StudentTeacher,
    fit_target_statistics,
    fit_validation_stats,
    load_ensemble,
    make_students,
    save_ensemble,
)
from ust.train.students import train_students


@dataclass
class FitData:
    """The zoomed good images of one fit, split into training and validation parts.

    ``train``/``val``: (N, 3, S, S) float32 in [0, 1]; ``val_sizes``: original (H, W) of each
    validation image; ``digest``: SHA-256 of both tensors (identifies the data in ``run_config``).
    """

    train: torch.Tensor
    val: torch.Tensor
    val_sizes: list[tuple[int, int]]
    train_names: list[str]
    val_names: list[str]
    digest: str


def resolve_teachers(
    teachers: Any, patch_sizes: Sequence[int], device: torch.device
) -> dict[int, PatchNet]:
    """Private copies of the teachers, one per p: ``teachers`` is a mapping p → :class:`PatchNet`
    or teacher file, a folder (``p<p>.pt`` or the pipeline's ``p<p>/<losses>/teacher.pt``), or a
    single network / file when there is one scale. Raises ValueError when a p does not match."""
    if isinstance(teachers, str | os.PathLike) and Path(teachers).is_dir():
        from ust.cli.mvtec import find_teacher  # the one lookup rule for teacher folders

        teachers = {p: find_teacher(Path(teachers), p) for p in patch_sizes}
    elif not isinstance(teachers, Mapping):
        if len(patch_sizes) != 1:
            raise ValueError(
                f"give one teacher per patch size {list(patch_sizes)} (a mapping p → teacher)"
            )
        teachers = {patch_sizes[0]: teachers}
    missing = [p for p in patch_sizes if p not in teachers]
    if missing:
        raise ValueError(f"no teacher given for patch size(s) {missing}")
    nets = {p: as_teacher(teachers[p], device) for p in patch_sizes}
    for p, net in nets.items():
        if net.config.p != p:
            raise ValueError(f"the teacher given for p={p} has receptive field p={net.config.p}")
    return nets


def _names(items: Sequence[Any]) -> list[str]:
    """Distinct names for the split: the path of a file, ``image_<i>`` for in-memory images."""
    names = [
        str(x) if isinstance(x, str | os.PathLike) else f"image_{i:05d}"
        for i, x in enumerate(items)
    ]
    if len(set(names)) != len(names):
        raise ValueError("the good images contain the same file twice")
    return names


def _load(items: Sequence[Any], desc: str, size: int, progress: bool):
    """Zoomed (N, 3, size, size) tensor and original sizes; one image in memory at a time."""
    zoomed, sizes = [], []
    for item in tqdm(items, desc=desc, disable=not progress, leave=False):
        image = as_image(item)
        sizes += sizes_of([image])
        zoomed.append(zoom([image], size))
    return torch.cat(zoomed), sizes


def load_fit_data(good_images: Any, config: DetectorConfig, progress: bool) -> FitData:
    """Split ``good_images`` (any input :meth:`Detector.predict` accepts; ≥ 2 images) and load them."""
    items = as_items(good_images)
    if len(items) < 2:
        raise ValueError(
            f"found {len(items)} good image(s); fitting needs at least 2 (1 is held out for "
            "validation)"
        )
    names = _names(items)
    index = {n: i for i, n in enumerate(names)}
    train_names, val_names = split_train_val(names, config.val_fraction, config.seed)
    size = config.image_size
    train, _ = _load([items[index[n]] for n in train_names], "train images", size, progress)
    val, val_sizes = _load(
        [items[index[n]] for n in val_names], "validation images", size, progress
    )
    h = hashlib.sha256(train.numpy().tobytes())
    h.update(val.numpy().tobytes())
    short = [Path(n).name for n in train_names], [Path(n).name for n in val_names]
    return FitData(train, val, val_sizes, short[0], short[1], h.hexdigest())


def scale_run_config(p: int, teacher: PatchNet, data: FitData, config: DetectorConfig) -> dict:
    """What the ensemble of scale p depends on (``<work_dir>/p<p>/run_config.json``)."""
    return jsonable(
        {
            "format": "ust.detector-scale/1",
            "p": p,
            "teacher_sha256": teacher_fingerprint(teacher),
            "images_sha256": data.digest,
            "students": config.students,
            "image_size": config.image_size,
            "training": asdict(config.training),
            "val_fraction": config.val_fraction,
            "seed": config.seed,
            "train_images": data.train_names,
            "val_images": data.val_names,
        }
    )


def fit_scale(
    teacher: PatchNet,
    data: FitData,
    config: DetectorConfig,
    work: Path | None,
    *,
    progress: bool,
) -> tuple[StudentTeacher, ScoreStats]:
    """The trained ensemble of ``teacher``'s scale and its validation e/v statistics; resumes
    from (or reuses) the files in ``work`` when given (see the module docstring)."""
    device = next(teacher.parameters()).device
    batch = config.inference_batch_size
    run_config = scale_run_config(teacher.config.p, teacher, data, config)
    if work is not None:
        prepare_run_dir(work, run_config)
        if (work / ENSEMBLE).is_file():
            model, state = load_ensemble(work / ENSEMBLE, device)
            return model, ScoreStats(**state["score_stats"])
    model = StudentTeacher(teacher, make_students(teacher, config.students, seed=config.seed))
    model.to(device)
    fit_target_statistics(model, data.train, batch_size=batch, progress=progress)
    ckpt = work / CHECKPOINT if work is not None else None
    train_students(model, data.train, config.training, checkpoint=ckpt, progress=progress)
    stats = fit_validation_stats(model, data.val, batch_size=batch)
    if work is not None:
        save_ensemble(model, work / ENSEMBLE, score_stats=stats.to_dict(), run_config=run_config)
        ckpt.unlink(missing_ok=True)
    return model, stats


def fit_detector(
    good_images: Any,
    teachers: Any,
    config: DetectorConfig = DetectorConfig(),
    *,
    work_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Detector:
    """Fit a fused detector on anomaly-free images (see the module docstring for the protocol).

    Args:
        good_images: a folder (searched recursively), file paths, PIL images, or a float tensor
            (N, 3, H, W) in [0, 1]; at least 2 images, of any sizes. No anomalies among them.
        teachers: see :func:`resolve_teachers` (mapping p → teacher, folder, or one teacher).
        config: see :class:`DetectorConfig`.
        work_dir: folder for per-scale checkpoints (resumable); ``None``: nothing is written.
        device: torch device for training and scoring.
        progress: tqdm progress bars.

    Returns:
        The calibrated :class:`Detector` (on ``device``).
    """
    device = torch.device(device)
    teacher_nets = resolve_teachers(teachers, config.patch_sizes, device)
    data = load_fit_data(good_images, config, progress)
    models, stats = {}, {}
    for p in config.patch_sizes:
        work = Path(work_dir) / f"p{p}" if work_dir is not None else None
        models[p], stats[p] = fit_scale(teacher_nets[p], data, config, work, progress=progress)
    detector = Detector(models, stats, config)
    fused = detector.network_maps(data.val)
    val_maps = [upsample_map(m, size) for m, size in zip(fused, data.val_sizes)]
    detector.calibration = Calibration.from_maps(val_maps, data.val_names)
    return detector
