"""MVTec AD, one receptive field (paper §4.2): train M students, score, upsample, evaluate.

The category's folder tree is validated first (:func:`ust.data.mvtec.validate_category`) and the
training images are loaded before the first byte is written, so a bad layout leaves ``out_dir``
untouched. The scale is fitted by :func:`ust.train.fit.fit_student_teacher` (the very recipe the
product's :class:`~ust.detector.Detector` uses) and scored by the shared protocol
(:func:`ust.experiments.protocol.evaluate`), which writes every file atomically and
``metrics.json`` last: its presence marks a finished run.

Output layout of :func:`run_single_scale` (``<cat>`` = category, ``<defect>/<id>`` = a test image)::

    <out_dir>/run_config.json        what the run depends on (a different config in the same folder
                                     is refused instead of silently mixing two runs)
    <out_dir>/students.ckpt          per-epoch training state while training (deleted when done)
    <out_dir>/ensemble.pt            the calibrated model: teacher + students + μ/σ + e/v statistics
    <out_dir>/score_stats.json       e_mean, e_std, v_mean, v_std on the validation split
    <out_dir>/maps/<cat>/test/<defect>/<id>.tiff      float32 ẽ+ṽ at the ORIGINAL image size
    <out_dir>/val_maps/<cat>/train/good/<id>.tiff     the same for the validation images
    <out_dir>/thresholds.json        max / quantile / k_sigma / max_area on the validation maps
    <out_dir>/segmentation/<cat>/test/<defect>/<id>.png   0/255 masks at one threshold (A > t)
    <out_dir>/pro_curve.csv          fpr,pro resampled at 1001 FPRs in [0, 1] (DVC plots)
    <out_dir>/metrics.json           au_pro, pixel_auroc, image_auroc + counts, timings and
                                     optimizer_steps (per student, see below)

:func:`ust.experiments.mvtec_multiscale.run_multiscale` writes the same files for the fused map.

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

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ust.data.dataset import Sample, load_images
from ust.data.mvtec import validate_category
from ust.data.transforms import upsample_map
from ust.experiments.outputs import STEPS_KEY
from ust.experiments.protocol import EvaluationSettings, counts, evaluate
from ust.io import write_json
from ust.method.networks import PatchNet
from ust.method.students import StudentTeacher
from ust.method.teacher import resolve_teacher
from ust.train.fit import FitData, FitSettings, fit_student_teacher
from ust.train.students import optimizer_steps

__all__ = ["STEPS_KEY", "MVTecRunSettings", "ScaleMaps", "run_single_scale"]


def _world_size() -> int:
    """Ranks :func:`ust.train.students.train_students` shares each epoch among (1 outside a
    process group; it trains data parallel inside one with several ranks)."""
    from ust.train import distributed as ddp

    return ddp.current().world_size if ddp.is_initialized() else 1


@dataclass(frozen=True)
class MVTecRunSettings:
    """One single-scale run: how the scale is fitted and how its maps are scored."""

    fit: FitSettings = field(default_factory=FitSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)


@dataclass
class ScaleMaps:
    """A calibrated :class:`StudentTeacher` as a protocol method: images zoomed to ``image_size``,
    ẽ + ṽ in batches of ``batch_size``, upsampled bilinearly to each sample's original size."""

    model: StudentTeacher
    image_size: int
    batch_size: int = 8

    def anomaly_maps(
        self, samples: Sequence[Sample], *, progress: bool = False
    ) -> list[np.ndarray]:
        images = load_images([s.path for s in samples], self.image_size, progress=progress)
        scores = self.model.anomaly_maps(images, batch_size=self.batch_size, progress=progress)
        return [upsample_map(m, s.size) for m, s in zip(scores, samples)]


def fit_data(train: Sequence[Sample], val: Sequence[Sample], size: int, progress: bool) -> FitData:
    """The zoomed training and validation images of a split."""
    return FitData(
        train=load_images([s.path for s in train], size, desc="train images", progress=progress),
        val=load_images([s.path for s in val], size, desc="validation images", progress=progress),
        train_names=[s.path.name for s in train],
        val_names=[s.path.name for s in val],
        val_sizes=[s.size for s in val],
    )


def run_single_scale(
    data_root: str | os.PathLike,
    category: str,
    teacher: PatchNet | str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: MVTecRunSettings = MVTecRunSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> dict:
    """Train and evaluate one student-teacher ensemble on one category, at the teacher's receptive
    field p.

    Protocol (``docs/decisions.md``): ``train/good`` is split into a seeded 90 % training and 10 %
    validation part; images are zoomed to ``settings.fit.image_size``²; the scale is fitted and
    calibrated by :func:`ust.train.fit.fit_student_teacher` (checkpoint after every epoch, a later
    call resumes); test and validation maps ẽ+ṽ are upsampled to the original size and evaluated
    against the original masks by :func:`ust.experiments.protocol.evaluate`. See the module
    docstring for the files written.

    Args:
        data_root: folder holding ``<category>/train``, ``test`` and ``ground_truth``.
        category: category folder name.
        teacher: a :class:`PatchNet` (copied, never modified) or a teacher file from ``pretrain``;
            its receptive field is the run's p.
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
        ValueError: ``out_dir`` holds a run with another configuration (delete it to start afresh).
    """
    device = torch.device(device)
    fit = settings.fit
    index = validate_category(data_root, category)
    teacher_net = resolve_teacher(teacher, device)
    p = teacher_net.config.p
    train, val = index.train_validation(fit.val_fraction, fit.seed)
    data = fit_data(train, val, fit.image_size, progress)
    out = Path(out_dir)
    fitted = fit_student_teacher(
        teacher_net, data, fit, out, progress=progress, on_epoch=on_epoch, live=True
    )
    write_json(fitted.model.score_stats.to_dict(), out / "score_stats.json", sort_keys=False)
    extra = {
        "p": p,
        "students": fit.students,
        "image_size": fit.image_size,
        "epochs": fit.training.epochs,
        STEPS_KEY: optimizer_steps(len(train), fit.training, _world_size()),
        **counts(index, len(train), len(val)),
        "trained_now": fitted.trained_now,
        "train_seconds": fitted.train_seconds,
    }
    method = ScaleMaps(fitted.model, fit.image_size, fit.inference_batch_size)
    return evaluate(
        method, index, out, settings.evaluation, validation=val, extra=extra, progress=progress
    )
