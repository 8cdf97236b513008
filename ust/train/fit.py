"""Fitting one calibrated Student-Teacher scale (paper §3.2): the one recipe the MVTec protocol and
the product's :class:`~ust.detector.Detector` share.

Given a frozen teacher and zoomed anomaly-free images split into a training and a validation part
(:class:`FitData`): the teacher's μ/σ over all training pixels
(docs/decisions.md#student-target-normalisation), M students trained with
:func:`ust.train.students.train_students` (docs/decisions.md#mvtec-student-training), and the e/v
statistics over all validation pixels (docs/decisions.md#score-normalisation), stored in the model
(:meth:`ust.method.students.StudentTeacher.calibrate`).

With a work folder the fit is resumable; the folder holds::

    run_config.json   what the scale depends on (another configuration there is refused)
    students.ckpt     the training state after every epoch (a new call resumes from it)
    ensemble.pt       the calibrated model when the scale is done (a new call reuses it)
    dvclive/          training loss per epoch (only when ``live`` is set)

A truncated or corrupt ``ensemble.pt`` or ``students.ckpt`` (a disk that filled up, a half-copied
folder) is moved aside to ``<name>.corrupt`` with a warning naming it, and that part starts again.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ust.io import CorruptFileError, jsonable, read_json, set_aside, write_json
from ust.method.networks import PatchNet
from ust.method.students import (
    StudentTeacher,
    fit_target_statistics,
    load_ensemble,
    make_students,
    save_ensemble,
)
from ust.method.teacher import teacher_fingerprint
from ust.train.students import StudentTrainingConfig, train_students

RUN_CONFIG = "run_config.json"
ENSEMBLE = "ensemble.pt"
CHECKPOINT = "students.ckpt"
LIVE_DIR = "dvclive"
#: identifies the content of ``run_config.json``
RUN_FORMAT = "ust.scale/1"


@dataclass(frozen=True)
class FitSettings:
    """How one scale is fitted: everything besides the teacher and the images.

    Attributes:
        image_size: side in pixels the images are zoomed to for the networks (paper: 256).
        students: ensemble size M (paper: 3, docs/decisions.md#mvtec-student-training).
        training: student optimisation (paper: 100 epochs, batch 1, Adam 1e-4, wd 1e-5).
        val_fraction: share of the good images held out for the e/v statistics and the thresholds
            (docs/decisions.md#validation-split).
        seed: seed of the validation split and of the students' initialisation.
        inference_batch_size: images per forward pass for statistics and scoring.
    """

    image_size: int = 256
    students: int = 3
    training: StudentTrainingConfig = field(default_factory=StudentTrainingConfig)
    val_fraction: float = 0.1
    seed: int = 0
    inference_batch_size: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.training, dict):  # read back from a file
            object.__setattr__(self, "training", StudentTrainingConfig(**self.training))


@dataclass
class FitData:
    """The zoomed good images of one fit, split into a training and a validation part.

    ``train``/``val``: (N, 3, S, S) float32 in [0, 1]; ``train_names``/``val_names``: the images'
    names (recorded in ``run_config.json``); ``val_sizes``: original (H, W) of each validation
    image; ``digest``: SHA-256 of both tensors (identifies the data when names do not).
    """

    train: torch.Tensor
    val: torch.Tensor
    train_names: list[str]
    val_names: list[str]
    val_sizes: list[tuple[int, int]]
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.sha256(self.train.numpy().tobytes())
            h.update(self.val.numpy().tobytes())
            self.digest = h.hexdigest()


def run_config(teacher: PatchNet, data: FitData, settings: FitSettings) -> dict:
    """What the calibrated scale depends on: the content of ``run_config.json``."""
    return jsonable(
        {
            "format": RUN_FORMAT,
            "p": teacher.config.p,
            "teacher_sha256": teacher_fingerprint(teacher),
            "images_sha256": data.digest,
            "students": settings.students,
            "image_size": settings.image_size,
            "training": asdict(settings.training),
            "val_fraction": settings.val_fraction,
            "seed": settings.seed,
            "train_images": [Path(n).name for n in data.train_names],
            "val_images": [Path(n).name for n in data.val_names],
        }
    )


def prepare_run_dir(out: Path, config: dict) -> None:
    """Create ``out`` and write ``run_config.json``; refuse a folder that holds another run."""
    config_path = out / RUN_CONFIG
    if config_path.is_file() and read_json(config_path) != config:
        raise ValueError(
            f"{out} holds a run with a different configuration ({config_path}); delete the folder "
            "or choose another output folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(config, config_path, sort_keys=False)


def _finished(work: Path, device: torch.device) -> StudentTeacher | None:
    """The calibrated model of a finished fit in ``work``; ``None`` when there is none or its file
    is unreadable (then moved aside with a warning, so the scale is fitted again)."""
    path = work / ENSEMBLE
    if not path.is_file():
        return None
    try:
        model, _ = load_ensemble(path, device)
    except CorruptFileError as err:
        warnings.warn(
            f"{err}; moved it to {set_aside(path).name} and fitting this scale again",
            stacklevel=3,
        )
        return None
    return model if model.calibrated else None


@dataclass
class FitResult:
    """A calibrated scale, whether it was trained by this call, and the seconds it took."""

    model: StudentTeacher
    trained_now: bool
    train_seconds: float
    calibrate_seconds: float


def fit_student_teacher(
    teacher: PatchNet,
    data: FitData,
    settings: FitSettings,
    work: Path | None = None,
    *,
    progress: bool = False,
    on_epoch: Callable[[int, list[float]], None] | None = None,
    live: bool = False,
) -> FitResult:
    """Fit one calibrated scale on ``teacher``'s device (see the module docstring).

    Args:
        teacher: the frozen teacher (used as given: pass a private copy).
        data: training and validation images (:class:`FitData`).
        settings: see :class:`FitSettings`.
        work: folder for ``run_config.json``, the per-epoch checkpoint and ``ensemble.pt``
            (resumable; ``None``: nothing is written).
        progress: tqdm progress bars.
        on_epoch: called as ``on_epoch(epoch, losses)`` after every training epoch.
        live: log the training loss with dvclive under ``<work>/dvclive``.

    Returns:
        A :class:`FitResult` whose model holds μ/σ and the e/v statistics.

    Raises:
        ValueError: ``work`` holds a run with another configuration (delete it to start afresh).
    """
    device = next(teacher.parameters()).device
    config = run_config(teacher, data, settings)
    t0 = time.perf_counter()
    if work is not None:
        prepare_run_dir(work, config)
        model = _finished(work, device)
        if model is not None:
            return FitResult(model, False, 0.0, 0.0)
    model = StudentTeacher(teacher, make_students(teacher, settings.students, seed=settings.seed))
    model.to(device)
    model.padding = settings.training.padding  # targets standardised over what training reads
    batch = settings.inference_batch_size
    fit_target_statistics(model, data.train, batch_size=batch, progress=progress)
    train_students(
        model,
        data.train,
        settings.training,
        checkpoint=work / CHECKPOINT if work is not None else None,
        progress=progress,
        on_epoch=on_epoch,
        live_dir=work / LIVE_DIR if work is not None and live else None,
    )
    t1 = time.perf_counter()
    model.calibrate(data.val, batch_size=batch)
    if work is not None:
        save_ensemble(model, work / ENSEMBLE, run_config=config)
        (work / CHECKPOINT).unlink(missing_ok=True)
    return FitResult(model, True, t1 - t0, time.perf_counter() - t1)
