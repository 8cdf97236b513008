"""Training GCAD (thesis §7.3.1): one Adam over R_loc, E_glo, U and R_glo minimising Eq. 7.4, the skip
weights of E_glo faded from 1 to 0 over the first 100 epochs (upper levels first), L_glo (and so
R_glo) switched on after epoch 50, 500 epochs at 256², Adam 10⁻⁴ with weight decay 10⁻⁵.

``GCADTrainingConfig.schedule_scale`` multiplies both epoch numbers (100 and 50), so a short
budget keeps the thesis' proportions: ``GCADTrainingConfig.for_budget(epochs)`` sets it to
epochs / 500 (docs/decisions.md#gcad-training).

:func:`train_gcad` writes a checkpoint after every epoch and a later call resumes from it, giving the
same weights as an uninterrupted run on CPU; a truncated checkpoint is moved aside with a warning
and training starts over. :func:`fit_gcad` is the whole recipe for one receptive field, like
:func:`ust.train.fit.fit_student_teacher`: μ/σ of E_loc on the training images, training, the
score statistics on the validation images, and (with a work folder)::

    run_config.json   what the model depends on (another configuration there is refused)
    gcad.ckpt         the training state after every epoch (a new call resumes from it)
    gcad.pt           the calibrated model when done (a new call reuses it)

The per-category augmentations of the thesis' Table 6.2 (MVTec LOCO AD) and Table 7.4 (MVTec AD)
are in :data:`LOCO_AUGMENTATIONS` and :data:`MVTEC_AD_AUGMENTATIONS`; pass one as
``GCADTrainingConfig(augment=...)``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ust.io import CorruptFileError, atomic_torch_save, jsonable, set_aside, torch_load
from ust.method.gcad import GCAD, GCADConfig, load_gcad, save_gcad
from ust.method.networks import PatchNet
from ust.method.students import batch_indices, derive_seed
from ust.method.teacher import teacher_fingerprint
from ust.train.fit import FitData, prepare_run_dir

#: the thesis' schedule: 500 epochs, skip weights 0 after epoch 100, L_glo from epoch 50 on
THESIS_EPOCHS = 500
SKIP_FADE_EPOCHS = 100
GLO_START_EPOCH = 50

GCAD_FILE = "gcad.pt"
GCAD_CHECKPOINT = "gcad.ckpt"
#: identifies the content of ``run_config.json``
RUN_FORMAT = "ust.gcad-run/1"

# --- augmentation (thesis §6.4.1) ----------------------------------------------------------------

#: flips with probability ½, rotation up to 3° about the centre, brightness/contrast/saturation jitter
AUGMENTATIONS = ("vflip", "hflip", "rotate", "color")
MAX_ROTATION_DEGREES = 3.0
#: jitter factors are uniform in [1 − COLOR_JITTER, 1 + COLOR_JITTER] (the thesis gives no range)
COLOR_JITTER = 0.1
_ALL = AUGMENTATIONS
_RC = ("rotate", "color")
#: thesis Table 6.2
LOCO_AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "breakfast_box": _RC,
    "screw_bag": _ALL,
    "pushpins": _ALL,
    "splicing_connectors": _ALL,
    "juice_bottle": _RC,
}
#: thesis Table 7.4
MVTEC_AD_AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    **{c: _ALL for c in ("bottle", "carpet", "grid", "hazelnut", "leather", "screw", "tile")},
    **{c: _ALL for c in ("wood", "zipper")},
    **{c: _RC for c in ("cable", "capsule", "metal_nut", "pill")},
    **{c: ("hflip", *_RC) for c in ("toothbrush", "transistor")},
}


def augment_batch(
    images: torch.Tensor, augment: tuple[str, ...], generator: torch.Generator
) -> torch.Tensor:
    """Randomly augmented copy of ``images`` (B, C, H, W) in [0, 1] (docs/decisions.md#gcad-training).

    Per image and in this order, each listed augmentation draws from ``generator`` (so a run is
    reproducible and resumable): vertical and horizontal flips with probability ½; a rotation by
    an angle uniform in ±3° about the image centre (bilinear, reflected border); brightness,
    contrast and saturation factors uniform in [0.9, 1.1], applied in that order as torchvision
    does (contrast and saturation blend with the grey image), clamped to [0, 1].
    """
    unknown = set(augment) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}: expected {AUGMENTATIONS}")
    x, b = images, len(images)

    def coin() -> torch.Tensor:
        return (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)

    if "vflip" in augment:
        x = torch.where(coin(), x.flip(-2), x)
    if "hflip" in augment:
        x = torch.where(coin(), x.flip(-1), x)
    if "rotate" in augment:
        angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(MAX_ROTATION_DEGREES)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([cos, -sin, torch.zeros(b), sin, cos, torch.zeros(b)], 1)
        grid = F.affine_grid(theta.view(b, 2, 3).to(x), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    if "color" in augment:
        f = 1 + (torch.rand(b, 3, generator=generator) * 2 - 1) * COLOR_JITTER
        brightness, contrast, saturation = f.to(x).view(b, 3, 1, 1, 1).unbind(1)
        x = (x * brightness).clamp(0, 1)
        mean_grey = _grey(x).mean((1, 2, 3), keepdim=True)
        x = (mean_grey * (1 - contrast) + x * contrast).clamp(0, 1)
        if x.shape[1] == 3:
            x = (_grey(x) * (1 - saturation) + x * saturation).clamp(0, 1)
    return x


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance (ITU-R 601 weights, as torchvision) of (B, 1 or 3, H, W) images."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


# --- configuration and schedule -----------------------------------------------------------------


@dataclass(frozen=True)
class GCADTrainingConfig:
    """Optimisation of GCAD (thesis §7.3.1: 500 epochs, Adam 10⁻⁴, weight decay 10⁻⁵; the image
    size, 256², is the model's :attr:`ust.method.gcad.GCADConfig.image_size`).

    Attributes:
        epochs: passes over the training images.
        batch_size: images per step (not printed; 16 like the chapter's autoencoders,
            docs/decisions.md#gcad-training).
        lr, weight_decay: Adam's learning rate and L2 weight decay.
        seed: seed of the data order and the augmentation draws.
        schedule_scale: multiplies the schedule's epoch numbers: skip weights reach 0 after
            100 · scale epochs, L_glo is on from epoch 50 · scale (epochs need not be integers).
        augment: names from :data:`AUGMENTATIONS` (Table 6.2 per category:
            :data:`LOCO_AUGMENTATIONS`); empty: no augmentation.
        cache_bytes: keep E_loc's outputs for all training images when they fit (never with
            augmentation, whose targets change every epoch).
    """

    epochs: int = THESIS_EPOCHS
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0
    schedule_scale: float = 1.0
    augment: tuple[str, ...] = ()
    cache_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}: expected {AUGMENTATIONS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}"
            )
        if not self.schedule_scale >= 0:
            raise ValueError(f"schedule_scale must be ≥ 0, got {self.schedule_scale}")

    @classmethod
    def for_budget(cls, epochs: int, **kwargs) -> GCADTrainingConfig:
        """``epochs`` epochs with the thesis' schedule scaled to them (schedule_scale = epochs/500)."""
        return cls(epochs=epochs, schedule_scale=epochs / THESIS_EPOCHS, **kwargs)

    @property
    def skip_fade_end(self) -> float:
        """Epoch from which all skip weights are 0 (thesis: 100)."""
        return SKIP_FADE_EPOCHS * self.schedule_scale

    @property
    def glo_start(self) -> float:
        """First epoch (0-based) trained with L_glo (thesis: 50)."""
        return GLO_START_EPOCH * self.schedule_scale


def skip_weights(epoch: float, fade_end: float = SKIP_FADE_EPOCHS, levels: int = 5) -> list[float]:
    """The skip weights (u, v, w, x, y: top level first) during 0-based ``epoch``.

    The fade is split into ``levels`` equal windows of ``fade_end / levels`` epochs, the upper
    level first: weight k falls linearly from 1 at the start of window k to 0 at its end, i.e.
    w_k = clip(k + 1 − epoch · levels / fade_end, 0, 1) (docs/decisions.md#gcad-training).
    Thesis schedule: epoch 0 → all 1, epoch 50 → (0, 0, 0.5, 1, 1), epoch ≥ 100 → all 0.
    """
    if fade_end <= 0:
        return [0.0] * levels
    t = epoch * levels / fade_end
    return [min(1.0, max(0.0, k + 1 - t)) for k in range(levels)]


# --- the loop ------------------------------------------------------------------------------------


def _restore(
    model: GCAD,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    config: GCADTrainingConfig,
    ckpt: Path | None,
) -> tuple[list[dict[str, float]], int]:
    """(loss history, epochs done) from the checkpoint when there is a readable one."""
    if ckpt is None or not ckpt.exists():
        return [], 0
    try:
        state = torch_load(ckpt, map_location=model.score_moments.device)
    except CorruptFileError as err:  # a full disk or a half-copied run folder: start over
        warnings.warn(
            f"{err}; moved it to {set_aside(ckpt).name} and training GCAD from the first epoch",
            stacklevel=3,
        )
        return [], 0
    if state["config"] != asdict(config) or state["model_config"] != asdict(model.config):
        raise ValueError(
            f"checkpoint {ckpt} was written with a different configuration ({state['config']}, "
            f"{state['model_config']}); delete it to start afresh"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"].cpu())  # a CPU generator, whatever map_location did
    return state["history"], state["epoch"]


def _cached_targets(model: GCAD, images: torch.Tensor, config: GCADTrainingConfig):
    """E_loc's output for every training image when it fits ``config.cache_bytes``, else None."""
    if config.augment or len(images) * model.d_loc * images[0, 0].numel() * 4 > config.cache_bytes:
        return None
    device = model.score_moments.device
    return torch.cat([model.targets(images[i].to(device)) for i in batch_indices(len(images), 8)])


def _epoch(
    model: GCAD,
    images: torch.Tensor,
    cached: torch.Tensor | None,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    config: GCADTrainingConfig,
    epoch: int,
) -> dict[str, float]:
    """One pass in a seeded order; mean losses over the images (``glo`` NaN while L_glo is off)."""
    levels = len(model.e_glo.skip_weights)
    model.e_glo.set_skip_weights(skip_weights(epoch, config.skip_fade_end, levels))
    glo = epoch >= config.glo_start
    device = model.score_moments.device
    sums = dict.fromkeys(("loss", "kd", "glo", "loc"), 0.0)
    order = torch.randperm(len(images), generator=gen)
    for idx in batch_indices(len(images), config.batch_size, order):
        x = images[idx].to(device)
        targets = cached[idx.to(device)] if cached is not None else None
        if config.augment:
            x = augment_batch(x, config.augment, gen)
        losses = model.losses(x, targets=targets, glo=glo)
        loss = model.total_loss(losses)
        # set_to_none: while L_glo is off R_glo has no gradient, so Adam leaves it (and its weight
        # decay) alone until epoch 50 (docs/decisions.md#gcad-training).
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for key, value in (("loss", loss), *losses.items()):
            sums[key] += float(value.detach()) * len(idx)
    means = {k: v / len(images) for k, v in sums.items()}
    return means if glo else {**means, "glo": float("nan")}


def train_gcad(
    model: GCAD,
    images: torch.Tensor,
    config: GCADTrainingConfig = GCADTrainingConfig(),
    checkpoint: str | os.PathLike | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` (E_loc normalised: :meth:`GCAD.fit_teacher_normalisation`) on ``images``
    (N, C, S, S) in [0, 1]; returns per epoch the mean ``loss`` (Eq. 7.4) and the unweighted
    ``kd``, ``glo`` (NaN before L_glo is on) and ``loc`` losses.

    One Adam optimises R_loc, E_glo, U and R_glo; the data order (and augmentation) comes from a
    generator seeded by ``config.seed``. With ``checkpoint`` the state after every epoch is written
    atomically and a later call resumes from it (same weights bit for bit as an uninterrupted run
    on CPU); an unreadable checkpoint is moved to ``<name>.corrupt`` with a warning and training
    starts over; one from another configuration raises a ValueError. ``on_epoch(epoch, losses)``
    runs after each epoch's checkpoint.
    """
    if len(images) == 0:
        raise ValueError("no training images for GCAD")
    if not model.teacher_normalised:
        raise ValueError("normalise E_loc first: GCAD.fit_teacher_normalisation(train_images)")
    params = [q for net in model.trainable() for q in net.parameters()]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(derive_seed(config.seed, 3000))
    ckpt = Path(checkpoint) if checkpoint is not None else None
    history, start = _restore(model, opt, gen, config, ckpt)
    cached = _cached_targets(model, images, config) if start < config.epochs else None
    model.train()
    bar = tqdm(
        range(start, config.epochs),
        desc=f"GCAD p={model.p}",
        disable=not progress,
        initial=start,
        total=config.epochs,
    )
    for epoch in bar:
        losses = _epoch(model, images, cached, opt, gen, config, epoch)
        history.append(losses)
        bar.set_postfix(loss=f"{losses['loss']:.4f}")
        if ckpt is not None:
            atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "config": asdict(config),
                    "model_config": asdict(model.config),
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "history": history,
                },
                ckpt,
            )
        if on_epoch is not None:
            on_epoch(epoch, losses)
    model.eval()
    return history


# --- the fit recipe -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GCADFitSettings:
    """How one GCAD model (one receptive field) is fitted besides the teacher and the images.

    Attributes:
        model: architecture (:class:`~ust.method.gcad.GCADConfig`; its ``image_size`` must be the
            images' side).
        training: optimisation (:class:`GCADTrainingConfig`).
        seed: seed of the networks' initialisation.
        inference_batch_size: images per forward pass for the statistics and the calibration.
    """

    model: GCADConfig = field(default_factory=GCADConfig)
    training: GCADTrainingConfig = field(default_factory=GCADTrainingConfig)
    seed: int = 0
    inference_batch_size: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # read back from a file
            object.__setattr__(self, "model", GCADConfig(**self.model))
        if isinstance(self.training, dict):
            object.__setattr__(self, "training", GCADTrainingConfig(**self.training))


def gcad_run_config(teacher: PatchNet, data: FitData, settings: GCADFitSettings) -> dict:
    """What the calibrated GCAD model depends on: the content of ``run_config.json``."""
    return jsonable(
        {
            "format": RUN_FORMAT,
            "p": teacher.config.p,
            "teacher_sha256": teacher_fingerprint(teacher),
            "images_sha256": data.digest,
            "model": asdict(settings.model),
            "training": asdict(settings.training),
            "seed": settings.seed,
            "train_images": [Path(n).name for n in data.train_names],
            "val_images": [Path(n).name for n in data.val_names],
        }
    )


def _finished(work: Path, device: torch.device) -> GCAD | None:
    """The calibrated model of a finished fit in ``work``, or None (an unreadable file is moved
    aside with a warning, so the model is fitted again)."""
    path = work / GCAD_FILE
    if not path.is_file():
        return None
    try:
        model, _ = load_gcad(path, device)
    except CorruptFileError as err:
        warnings.warn(
            f"{err}; moved it to {set_aside(path).name} and fitting GCAD again", stacklevel=3
        )
        return None
    return model if model.calibrated else None


def fit_gcad(
    teacher: PatchNet,
    data: FitData,
    settings: GCADFitSettings = GCADFitSettings(),
    work: Path | None = None,
    *,
    progress: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> GCAD:
    """Fit one calibrated GCAD model on ``teacher``'s device: E_loc's μ/σ over the training pixels,
    :func:`train_gcad` on ``data.train``, the A_loc/A_glo statistics on ``data.val``.

    ``work``: folder for ``run_config.json``, ``gcad.ckpt`` and ``gcad.pt`` (resumable; a finished
    model there is loaded instead of refitted; ``None``: nothing is written). A folder holding a
    run with another configuration raises a ValueError. Returns the calibrated model (eval mode).
    """
    device = next(teacher.parameters()).device
    config = gcad_run_config(teacher, data, settings)
    work = Path(work) if work is not None else None
    if work is not None:
        prepare_run_dir(work, config)
        model = _finished(work, device)
        if model is not None:
            return model
    model = GCAD(teacher, settings.model, seed=settings.seed).to(device)
    batch = settings.inference_batch_size
    # μ/σ over the training images as given, not augmented (docs/decisions.md#gcad-training).
    model.fit_teacher_normalisation(data.train, batch_size=batch, progress=progress)
    train_gcad(
        model,
        data.train,
        settings.training,
        checkpoint=work / GCAD_CHECKPOINT if work is not None else None,
        progress=progress,
        on_epoch=on_epoch,
    )
    model.calibrate(data.val, batch_size=batch)
    if work is not None:
        save_gcad(model, work / GCAD_FILE, run_config=config)
        (work / GCAD_CHECKPOINT).unlink(missing_ok=True)
    return model


def optimizer_steps(n_images: int, config: GCADTrainingConfig) -> int:
    """Optimiser steps of :func:`train_gcad`: epochs × ⌈n_images / batch_size⌉."""
    return int(config.epochs) * math.ceil(int(n_images) / int(config.batch_size))
