"""The steps of :meth:`ust.detector.Detector.fit` on anomaly-free images (paper §3.2 and §4.2).

Steps: hold out a seeded validation split of the good images (docs/decisions.md#validation-split),
zoom every image to ``image_size``², then fit each scale p with the method's recipe:
:func:`ust.train.fit.fit_student_teacher` for ``method="st"``, the recipe the MVTec protocol uses
too (μ/σ, students, e/v statistics stored in the model), or :func:`ust.train.gcad.fit_gcad` for
``method="gcad"``, the recipe of the MVTec LOCO AD experiment (μ/σ folded into E_loc, the four
trained networks, A_loc/A_glo statistics stored in the model; docs/decisions.md#gcad-detector).
Finally the fused maps of the validation images at their original sizes give the thresholds
(docs/decisions.md#segmentation-thresholds).

With ``work_dir`` each scale works in ``<work_dir>/p<p>/`` (see :mod:`ust.train.fit` and
:mod:`ust.train.gcad`): an interrupted fit resumes from its last epoch and a finished scale is
reused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ust.data.mvtec import split_train_val
from ust.detector.config import DetectorConfig
from ust.detector.images import as_image, as_items, sizes_of, zoom
from ust.method.gcad import GCAD
from ust.method.networks import PatchNet
from ust.method.students import StudentTeacher
from ust.method.teacher import find_teacher, resolve_teacher
from ust.train.fit import FitData, fit_student_teacher
from ust.train.gcad import fit_gcad


def resolve_teachers(
    teachers: Any, patch_sizes: Sequence[int], device: torch.device
) -> dict[int, PatchNet]:
    """Private copies of the teachers, one per p: ``teachers`` is a mapping p → :class:`PatchNet`
    or teacher file, a folder (see :func:`ust.method.teacher.find_teacher`), or a single network /
    file when there is one scale. Raises ValueError when a p does not match."""
    if isinstance(teachers, str | os.PathLike) and Path(teachers).is_dir():
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
    nets = {p: resolve_teacher(teachers[p], device) for p in patch_sizes}
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


def load_fit_data(
    good_images: Any, config: DetectorConfig, progress: bool, val_images: Any = None
) -> FitData:
    """Split ``good_images`` (any input :meth:`Detector.predict` accepts; ≥ 2 images) and load them;
    with ``val_images`` (likewise) every good image trains and those validate."""
    items = as_items(good_images)
    if val_images is None and len(items) < 2:
        raise ValueError(
            f"found {len(items)} good image(s); fitting needs at least 2 (1 is held out for "
            "validation)"
        )
    names = _names(items)
    index = {n: i for i, n in enumerate(names)}
    if val_images is None:
        train_names, val_names = split_train_val(names, config.val_fraction, config.seed)
        train_items = [items[index[n]] for n in train_names]
        val_items = [items[index[n]] for n in val_names]
    else:
        train_names, train_items = names, items
        val_items = as_items(val_images)
        val_names = _names(val_items)
        if not train_items or not val_items:
            raise ValueError("fitting needs at least 1 good training and 1 validation image")
    size = config.image_size
    train, _ = _load(train_items, "train images", size, progress)
    val, val_sizes = _load(val_items, "validation images", size, progress)
    return FitData(train, val, train_names, val_names, val_sizes)


def fit_scale(
    teacher: PatchNet,
    data: FitData,
    config: DetectorConfig,
    work: Path | None,
    progress: bool,
) -> StudentTeacher | GCAD:
    """The calibrated model of one scale by ``config.method``'s recipe (resumable in ``work``)."""
    if config.method == "gcad":
        return fit_gcad(teacher, data, config.gcad, work, progress=progress)
    return fit_student_teacher(teacher, data, config, work, progress=progress).model


def fit_scales(
    good_images: Any,
    teachers: Any,
    config: DetectorConfig,
    *,
    work_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    val_images: Any = None,
) -> tuple[dict[int, StudentTeacher | GCAD], FitData]:
    """The calibrated scale of every p of ``config`` (:func:`fit_scale`) and the data they were
    fitted on (the validation part calibrates the detector's thresholds). Arguments as
    :meth:`ust.detector.Detector.fit`."""
    device = torch.device(device)
    teacher_nets = resolve_teachers(teachers, config.patch_sizes, device)
    data = load_fit_data(good_images, config, progress, val_images)
    models = {}
    for p in config.patch_sizes:
        work = Path(work_dir) / f"p{p}" if work_dir is not None else None
        models[p] = fit_scale(teacher_nets[p], data, config, work, progress)
    return models, data
