"""The student training loop (paper §3.2): every student of an ensemble regresses the normalised
teacher descriptors of the training images, by default with its own Adam optimiser and its own data
order.

With ``batched=True`` the M students train as one :class:`~ust.method.ensemble.StudentEnsemble`
(grouped convolutions, one Adam over the stacked parameters, one shared data order); with
``crop=c`` every training sample is a random c×c window of output pixels whose receptive fields lie
inside the image (the per-pixel regression, sampled), regressed on the full-image targets.

Two options for short budgets and image borders, both off by default (the paper's recipe):
``schedule="warmup_cosine"`` (linear warm-up to ``lr``, then a cosine decay to 0 over the run;
docs/decisions.md#student-budget) and ``padding="reflect"`` / ``"replicate"`` (teacher targets and
student predictions both read the image padded that way instead of zeros;
docs/decisions.md#border-padding).

Checkpoints after every epoch make :func:`train_students` resumable (same weights as an uninterrupted
run on CPU); under ``torchrun`` the same loop runs data parallel. With ``live_dir`` every epoch's
losses also go to dvclive (``<live_dir>/metrics.json``, ``<live_dir>/plots/metrics/*.tsv``, see
:mod:`ust.train.live`). The ensemble itself lives in :mod:`ust.method.students`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ust.io import CorruptFileError, atomic_torch_save, set_aside, torch_load
from ust.method.dense import DenseNet, check_padding_mode, dense_net
from ust.method.ensemble import StudentEnsemble
from ust.method.students import (
    StudentTeacher,
    batch_indices,
    derive_seed,
    fit_target_statistics,
    student_loss,
)
from ust.train import distributed as ddp
from ust.train.live import log_step, replay


@dataclass(frozen=True)
class StudentTrainingConfig:
    """Optimisation of the students (MVTec: 100 epochs, batch 1, Adam 1e-4, weight decay 1e-5).

    ``batched``: the M students run as one :class:`~ust.method.ensemble.StudentEnsemble`
    with one Adam over the stacked parameters, minimising the sum of the M per-student losses.
    Adam and weight decay act element-wise and student i's parameters only receive the gradient of
    its own loss, so every student takes the steps it would take alone *on the same batches* (equal
    up to float rounding). What changes is the data: all students see one data order (and the same
    crops), drawn from the generator seeded like student 0's in separate mode, so batched student 0
    matches separate student 0 while students 1 … M − 1 no longer have orders of their own (their
    independence then rests on their initialisations alone). The ensemble's weights are copied
    back into ``model.students`` after every epoch.

    ``crop = c``: each training sample is a c×c window of output pixels whose rf×rf receptive
    fields lie fully inside the image (the window's corner uniformly among those positions, drawn
    per image and epoch from the unit's generator after its permutation: separate students draw
    their own windows). The network gets only the
    c + rf − 1 input rows and columns the window needs, evaluated with
    ``DenseNet.forward(..., valid=True)`` (no zero padding; a c that is a multiple of the total
    pooling stride, 1/4/8 for p = 17/33/65, wastes no computation), and regresses the full-image
    targets at those pixels. Epoch losses are then means over the windows' pixels. Needs a dense
    model and c ≤ min(H, W) − rf + 1.

    ``fused_adam``: torch's fused Adam kernel (see the field's comment); either mode.

    ``schedule``: ``"constant"`` (the paper's: ``lr`` at every step; the optimiser's rate is never
    touched) or ``"warmup_cosine"``: step k of K (:func:`optimizer_steps`, the whole run; k = 1 … K)
    uses :func:`learning_rate`, a linear warm-up from lr/W to ``lr`` over the first
    W = max(1, round(``warmup`` · K)) steps, then ``lr`` · ½(1 + cos(π (k − W)/(K − W + 1))), which
    ends just above 0 at the last step. It is made for short budgets: a run of K steps gets the
    whole schedule, so K = 54 and K = 810 are different schedules (docs/decisions.md#student-budget).
    The rate is a pure function of (k, K), so a resumed run continues it exactly.

    ``padding``: what the dense teacher and students read outside the image
    (:data:`ust.method.dense.PADDING_MODES`; docs/decisions.md#border-padding). ``"zero"`` (default)
    is the paper's reading. ``"reflect"`` / ``"replicate"`` are applied to ``model`` (teacher and
    students, :attr:`StudentTeacher.padding <ust.method.students.StudentTeacher.padding>`) by
    :func:`train_students`, so the students regress the targets of
    the padded image and are then scored with the padding they were trained with. Crop windows
    read no padding, so with ``crop`` the option changes only how the model scores.
    """

    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0
    # Cache the normalised training targets when they fit in this many bytes (else recompute them).
    cache_bytes: int = 2 * 1024**3
    # Train the M students as one grouped-convolution network with one Adam and one data order.
    batched: bool = False
    # Train on random crop×crop windows of output pixels (receptive fields inside the image).
    crop: int | None = None
    # torch's fused Adam kernel: the same update in one pass over memory (a several times faster
    # optimiser step on the CPU), equal to the default kernel up to float rounding.
    fused_adam: bool = False
    # Learning-rate schedule: "constant" (paper) or "warmup_cosine" (linear warm-up, cosine decay).
    schedule: str = "constant"
    # warmup_cosine: share of the run's steps spent warming up linearly to ``lr``.
    warmup: float = 0.1
    # What the dense networks read outside the image: "zero" (paper), "reflect" or "replicate".
    padding: str = "zero"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must lie in [0, 1), got {self.warmup}")
        check_padding_mode(self.padding)


#: Learning-rate schedules of :class:`StudentTrainingConfig` (docs/decisions.md#student-budget).
SCHEDULES: tuple[str, ...] = ("constant", "warmup_cosine")

# Fields added after checkpoints were first written: an older checkpoint had their defaults.
_ADDED_FIELDS = {
    "batched": False,
    "crop": None,
    "fused_adam": False,
    "schedule": "constant",
    "warmup": 0.1,
    "padding": "zero",
}


def learning_rate(config: StudentTrainingConfig, step: int, total: int) -> float:
    """The learning rate of optimiser step ``step`` (1 … ``total``) under ``config.schedule``.

    ``constant``: ``config.lr``. ``warmup_cosine``: lr·k/W for k ≤ W = max(1, round(warmup·K)),
    then lr·½(1 + cos(π (k − W)/(K − W + 1))); steps past ``total`` keep the last step's rate.
    """
    if config.schedule == "constant":
        return config.lr
    total = max(1, int(total))
    k = min(max(1, int(step)), total)
    warm = max(1, round(config.warmup * total))
    if k <= warm:
        return config.lr * k / warm
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * (k - warm) / (total - warm + 1)))


def _resolve_distributed(distributed: ddp.DistInfo | None) -> ddp.DistInfo | None:
    """``distributed`` itself, or the running process group's info when it has several ranks."""
    if distributed is not None:
        return distributed
    if ddp.is_initialized() and ddp.current().world_size > 1:
        return ddp.current()
    return None


def crop_windows(
    images: torch.Tensor, targets: torch.Tensor, corners: torch.Tensor, crop: int, rf: int, top: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-crop training samples: input windows (B, C, crop + rf − 1, crop + rf − 1) of
    ``images`` (B, C, H, W) and the matching target windows (B, d, crop, crop) of ``targets``
    (B, d, H, W, the full-image dense targets).

    ``corners`` (B, 2) are the top-left input rows/columns a, b: the window's valid dense outputs
    (``DenseNet.forward(..., valid=True)``) are the full-image outputs at rows a + ``top`` …
    a + ``top`` + crop − 1 (``top`` = ``DenseNet.pad_top``), likewise for columns.
    """
    n_in = crop + rf - 1
    xs, ts = [], []
    for x, t, (a, b) in zip(images, targets, corners.tolist(), strict=True):
        xs.append(x[:, a : a + n_in, b : b + n_in])
        ts.append(t[:, a + top : a + top + crop, b + top : b + top + crop])
    return torch.stack(xs), torch.stack(ts)


def check_crop(model: StudentTeacher, image_shape: tuple[int, ...], crop: int | None) -> None:
    """Raise a ValueError unless ``crop`` fits: dense mode and 1 ≤ crop ≤ side − rf + 1."""
    if crop is None:
        return
    if not model.dense:
        raise ValueError("crop training needs a dense model (dense=True), not vector mode")
    rf = model.students[0].rf
    h, w = image_shape[-2:]
    if not 1 <= crop <= min(h, w) - rf + 1:
        raise ValueError(
            f"crop={crop} must lie in [1, {min(h, w) - rf + 1}]: an {h}×{w} image has "
            f"{h - rf + 1}×{w - rf + 1} pixels whose {rf}×{rf} receptive field lies inside it"
        )


@dataclass
class _Ensemble:
    """The student ensemble being trained, as training *units*: one per student (separate mode) or
    one for all M (``config.batched``). Per unit an Adam optimiser, a seeded generator of its data
    order (and crop positions) and (under DDP) its wrapper; the cached training targets when they
    fit; in batched mode the :class:`StudentEnsemble` that holds the weights while training."""

    model: StudentTeacher
    images: torch.Tensor
    config: StudentTrainingConfig
    info: ddp.DistInfo | None
    opts: list[torch.optim.Optimizer]
    gens: list[torch.Generator]
    ens: StudentEnsemble | None = None
    dense: list[DenseNet] | None = None
    cached: torch.Tensor | None = None
    nets: list | None = None
    # Optimiser steps taken per unit (the schedule's k − 1) and the run's total K per unit.
    steps_done: list[int] | None = None
    total_steps: int = 0

    @property
    def units(self) -> int:
        return len(self.opts)

    @property
    def device(self) -> torch.device:
        return self.model.target_mean.device

    @property
    def main(self) -> bool:
        return self.info is None or self.info.is_main

    def restore(self, ckpt: Path | None) -> tuple[list[list[float]], int]:
        """(loss history, epochs done) from the checkpoint when there is one, else a fresh start."""
        model, config = self.model, self.config
        if ckpt is None or not ckpt.exists():
            return [[] for _ in range(model.m)], 0
        try:
            state = torch_load(ckpt, map_location=self.device)
        except CorruptFileError as err:  # a full disk or a half-copied run folder: start over
            warnings.warn(
                f"{err}; moved it to {set_aside(ckpt).name} and training the students from the "
                "first epoch",
                stacklevel=2,
            )
            return [[] for _ in range(model.m)], 0
        if {**_ADDED_FIELDS, **state["config"]} != asdict(config) or state["m"] != model.m:
            raise ValueError(
                f"checkpoint {ckpt} was written with a different configuration "
                f"({state['config']}, M={state['m']}); delete it to start afresh"
            )
        model.students.load_state_dict(state["students"])
        if self.ens is not None:
            self.ens.load_students(model.students)  # in place: the optimiser keeps its parameters
        for opt, s in zip(self.opts, state["optimizers"]):
            opt.load_state_dict(s)
        for g, s in zip(self.gens, state["generators"]):
            g.set_state(s)
        per_epoch = self.total_steps // max(1, config.epochs)
        self.steps_done = [state["epoch"] * per_epoch] * self.units
        return state["history"], state["epoch"]

    def cache_targets(self) -> None:
        """Keep the normalised teacher targets of all images when they fit ``config.cache_bytes``."""
        model, images, n = self.model, self.images, len(self.images)
        d = model.teacher.config.d
        shape = (n, d, *images.shape[-2:]) if model.dense else (n, d, 1, 1)
        if int(np.prod(shape)) * 4 > self.config.cache_bytes:
            return
        self.cached = torch.empty(shape, device=self.device)
        with torch.no_grad():
            for idx in batch_indices(n, 16):
                self.cached[idx] = model.targets(images[idx].to(self.device))

    def wrap_ddp(self) -> None:
        """One DDP wrapper per training unit when there is a process group.

        A one-rank DistInfo without a process group (init_from_env() outside torchrun) trains as one
        process; with a group, DDP is forced even for one rank so that path is what gets tested. The
        DDP constructor is collective, so no rank can write a checkpoint before all have loaded it.
        """
        model, info = self.model, self.info
        if info is None or not (info.world_size > 1 or ddp.is_initialized()):
            return
        owners = [self.ens] if self.ens is not None else list(model.students)
        self.nets = [
            # Only the unit's own parameters are synchronised; the frozen teacher stays out.
            ddp.wrap_ddp(ddp.ForwardFn(owner, partial(self.forward, u)), info, force=True)
            for u, owner in enumerate(owners)
        ]

    def forward(self, u: int, x: torch.Tensor) -> torch.Tensor:
        """Predictions of unit ``u`` for raw images ``x`` (B, C, h, w) in [0, 1]: (B, k, d, h', w')
        with k = M (batched) or 1; with ``config.crop`` only the valid outputs (h' = h − rf + 1)."""
        model, valid = self.model, self.config.crop is not None
        if self.ens is None and not valid:
            return model.student_prediction(u, x)[:, None]
        prep = model._prep(x)
        if not model.dense:
            return self.ens(prep)[..., None, None]
        y = self.dense[u](prep, valid=valid)
        return self.ens.split(y) if self.ens is not None else y[:, None]

    def batch(self, plan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of one batch; ``plan`` rows are (image index[, crop row, crop col])."""
        model, device = self.model, self.device
        idx = plan[:, 0]
        x = self.images[idx].to(device)
        target = self.cached[idx.to(device)] if self.cached is not None else model.targets(x)
        if self.config.crop is None:
            return x, target
        dense = self.dense[0]
        return crop_windows(x, target, plan[:, 1:], self.config.crop, dense.patch.rf, dense.pad_top)

    def plan(self, u: int) -> torch.Tensor:
        """This epoch's (image index[, crop row, crop col]) rows of unit ``u``, drawn from its
        generator (the permutation first, then the crop corners), this rank's shard under DDP."""
        n, crop, g = len(self.images), self.config.crop, self.gens[u]
        plan = torch.randperm(n, generator=g)[:, None]
        if crop is not None:
            rf = self.model.students[0].rf
            h, w = self.images.shape[-2:]
            rows = torch.randint(0, h - rf - crop + 2, (n,), generator=g)
            cols = torch.randint(0, w - rf - crop + 2, (n,), generator=g)
            plan = torch.cat([plan, rows[:, None], cols[:, None]], 1)
        if self.info is not None:  # same permutation on every rank (same generator state)
            plan = ddp.shard(plan, self.info.rank, self.info.world_size)
        return plan

    def step(self, u: int, rows: torch.Tensor) -> list[float]:
        """One optimiser step of unit ``u`` on the batch ``rows`` of a :meth:`plan`; the loss of
        each of its students. A batched step minimises the sum of the M students' losses."""
        x, target = self.batch(rows)
        pred = self.nets[u](x) if self.nets is not None else self.forward(u, x)
        losses = [student_loss(pred[:, k], target) for k in range(pred.shape[1])]
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        self.opts[u].zero_grad(set_to_none=True)
        loss.backward()
        self.steps_done[u] += 1
        if self.config.schedule != "constant":  # constant: the optimiser's rate is never touched
            lr = learning_rate(self.config, self.steps_done[u], self.total_steps)
            for group in self.opts[u].param_groups:
                group["lr"] = lr
        self.opts[u].step()
        return [float(v.detach()) for v in losses]

    def epoch_losses(self, u: int) -> list[float]:
        """One epoch of unit ``u`` in its own seeded order; the mean loss of each of its students
        (over all ranks)."""
        totals, count = None, 0
        plan = self.plan(u)
        for rows in batch_indices(len(plan), self.config.batch_size, plan):
            values = [v * len(rows) for v in self.step(u, rows)]
            totals = values if totals is None else [a + b for a, b in zip(totals, values)]
            count += len(rows)
        means = [t / count for t in totals]
        if self.nets is not None:  # equal shard lengths: the mean of rank means is the global mean
            means = ddp.all_reduce_mean(
                torch.tensor(means, dtype=torch.float64, device=self.device)
            )
            means = [float(v) for v in means]
        return means

    def sync(self) -> None:
        """Batched mode: copy the ensemble's weights into ``model.students`` (no-op otherwise)."""
        if self.ens is not None:
            self.ens.write_students(self.model.students)

    def save(self, ckpt: Path | None, epochs_done: int, history: list[list[float]]) -> None:
        """Rank 0 writes the checkpoint after an epoch; the other ranks wait for it."""
        if ckpt is not None and self.main:
            atomic_torch_save(
                {
                    "epoch": epochs_done,
                    "config": asdict(self.config),
                    "m": self.model.m,
                    "students": self.model.students.state_dict(),
                    "optimizers": [o.state_dict() for o in self.opts],
                    "generators": [g.get_state() for g in self.gens],
                    "history": history,
                },
                ckpt,
            )
        if ckpt is not None and self.nets is not None:
            ddp.barrier()  # no rank runs ahead of (or returns before) rank 0's checkpoint


def _epoch_metrics(losses: list[float]) -> dict[str, float]:
    """dvclive metrics of one epoch: ``loss`` (mean over students) and ``loss_student_<i>``."""
    return {
        "loss": float(np.mean(losses)),
        **{f"loss_student_{i}": v for i, v in enumerate(losses)},
    }


def _ensemble(
    model: StudentTeacher,
    images: torch.Tensor,
    config: StudentTrainingConfig,
    info: ddp.DistInfo | None,
) -> _Ensemble:
    """Training units: per student (separate) or one :class:`StudentEnsemble` (``batched``), whose
    generator is student 0's: batched student 0 sees the batches separate student 0 would see."""
    adam = partial(
        torch.optim.Adam,
        lr=config.lr,
        weight_decay=config.weight_decay,
        **({"fused": True} if config.fused_adam else {}),
    )
    units = 1 if config.batched else model.m
    gens = [torch.Generator().manual_seed(derive_seed(config.seed, 1000 + i)) for i in range(units)]
    total = optimizer_steps(len(images), config, info.world_size if info is not None else 1)
    pad = {"padding_mode": config.padding}
    if config.batched:
        ens = StudentEnsemble.from_students(model.students)
        dense = [dense_net(ens, **pad)] if model.dense else None
        opts = [adam(ens.parameters())]
        run = _Ensemble(model, images, config, info, opts, gens, ens, dense)
    else:
        opts = [adam(s.parameters()) for s in model.students]
        dense = [dense_net(s, **pad) for s in model.students] if model.dense else None
        run = _Ensemble(model, images, config, info, opts, gens, dense=dense)
    run.steps_done, run.total_steps = [0] * units, total
    return run


def _apply_padding(model: StudentTeacher, images: torch.Tensor, padding: str) -> None:
    """Switch ``model`` to ``padding`` when it reads another one, and then refit the target
    statistics on ``images`` so the targets are standardised over the pixels they are regressed on
    (nothing happens when the model already uses ``padding``)."""
    if model.padding == padding:
        return
    model.padding = padding
    fit_target_statistics(model, images)


def optimizer_steps(n_images: int, config: StudentTrainingConfig, world_size: int = 1) -> int:
    """Optimiser steps each student takes in :func:`train_students` on ``n_images`` images:
    ``epochs × ⌈⌈n_images / world_size⌉ / batch_size⌉`` (one crop per image and epoch with
    ``crop``; under ``torchrun`` every rank takes ⌈n / world_size⌉ images per epoch and all ranks
    step together). The same count in separate and batched mode."""
    per_rank = math.ceil(int(n_images) / max(1, int(world_size)))
    return int(config.epochs) * math.ceil(per_rank / int(config.batch_size))


def train_students(
    model: StudentTeacher,
    images: torch.Tensor,
    config: StudentTrainingConfig = StudentTrainingConfig(),
    *,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
    distributed: ddp.DistInfo | None = None,
    live_dir: str | os.PathLike | None = None,
) -> list[list[float]]:
    """Train every student of ``model`` on ``images`` (N, C, H, W) in [0, 1]; returns the mean loss
    per epoch for each student (M lists). ``fit_target_statistics`` must have been called.

    Students are trained independently: each has its own Adam optimiser and its own data order
    (seeded from ``config.seed`` and its index).

    ``config.batched`` (one grouped-convolution ensemble, one Adam, one shared data order),
    ``config.crop`` (random windows of valid output pixels), ``config.schedule`` and
    ``config.padding``: see :class:`StudentTrainingConfig`. A ``config.padding`` other than the one
    ``model`` reads switches the model to it (``model.padding``; it keeps it afterwards, so it is
    calibrated and scored as trained) and refits the target statistics on ``images`` first.

    With ``checkpoint`` the state after every epoch is
    written atomically and a later call resumes from it, giving the same weights as an uninterrupted
    run on CPU. ``live_dir``: also log to dvclive there (:mod:`ust.train.live`), at step ``epoch``
    (1, 2, …) ``loss`` (mean over the students) and ``loss_student_<i>``; a resumed run rewrites
    the folder from the checkpoint's history first. ``None`` (default): no dvclive.

    Data parallel (``torchrun``, see :mod:`ust.train.distributed`): pass ``distributed=init_from_env()``
    (or run inside an initialised process group with several ranks). Every rank draws the same
    seeded permutation per student and epoch and trains on its :func:`~ust.train.distributed.shard` of it;
    each student (batched: the whole ensemble) is wrapped in DistributedDataParallel so gradients
    are averaged across ranks.
    ``config.batch_size`` is then **per rank** (a step sees ``batch_size × world_size`` images), the
    returned / reported epoch losses are averaged over ranks, and only rank 0 writes the checkpoint
    and the dvclive files (the other ranks wait for it at a barrier). ``model`` must already be on the
    rank's device. Without a process group (``distributed=None``) nothing of this happens.
    """
    if len(images) == 0:
        raise ValueError("no training images for the students")
    check_crop(model, tuple(images.shape), config.crop)
    _apply_padding(model, images, config.padding)
    run = _ensemble(model, images, config, _resolve_distributed(distributed))
    ckpt = Path(checkpoint) if checkpoint is not None else None
    history, start = run.restore(ckpt)
    run.cache_targets()
    run.wrap_ddp()
    done = ((e + 1, _epoch_metrics([h[e] for h in history])) for e in range(start))
    live = replay(live_dir if run.main else None, done)

    model.train()
    bar = tqdm(
        range(start, config.epochs),
        desc=f"students p={model.p}",
        disable=not (progress and run.main),
        initial=start,
        total=config.epochs,
    )
    for epoch in bar:
        epoch_losses = [loss for u in range(run.units) for loss in run.epoch_losses(u)]
        run.sync()
        for h, loss in zip(history, epoch_losses):
            h.append(loss)
        bar.set_postfix(loss=f"{np.mean(epoch_losses):.4f}")
        log_step(live, epoch + 1, _epoch_metrics(epoch_losses))
        run.save(ckpt, epoch + 1, history)
        if on_epoch is not None:
            on_epoch(epoch, epoch_losses)
    model.eval()
    return history


def train_students_for(
    model: StudentTeacher,
    images: torch.Tensor,
    config: StudentTrainingConfig,
    seconds: float,
) -> dict[str, float]:
    """Train ``model``'s students like :func:`train_students` (same config, seeds and modes) for a
    wall-clock budget instead of ``config.epochs``: each training unit (a student, or the batched
    ensemble) gets ``seconds / units``, checked after every step. No checkpoint, DDP or dvclive.
    A ``warmup_cosine`` schedule still spans ``config.epochs`` epochs (later steps keep its last
    rate).

    Returns ``steps`` (per unit, summed), ``epochs`` (passes over the images per unit, fractional;
    a crop sample counts as an image), ``seconds`` spent and ``loss`` (mean over the students of
    their last epoch's running mean loss).
    """
    if len(images) == 0:
        raise ValueError("no training images for the students")
    check_crop(model, tuple(images.shape), config.crop)
    _apply_padding(model, images, config.padding)
    run = _ensemble(model, images, config, None)
    run.cache_targets()
    model.train()
    t0 = time.perf_counter()
    steps, samples, losses = 0, 0, []
    for u in range(run.units):
        deadline = t0 + seconds * (u + 1) / run.units
        done = False
        while not done:  # epochs; every unit takes at least one step
            plan = run.plan(u)
            totals, count = np.zeros(model.m // run.units), 0
            for rows in batch_indices(len(plan), config.batch_size, plan):
                totals += np.asarray(run.step(u, rows)) * len(rows)
                count, steps, samples = count + len(rows), steps + 1, samples + len(rows)
                done = time.perf_counter() >= deadline
                if done:
                    break
        losses.extend(totals / count)
    run.sync()
    model.eval()
    return {
        "steps": steps,
        "epochs": samples / (len(images) * run.units),
        "seconds": time.perf_counter() - t0,
        "loss": float(np.mean(losses)),
    }
