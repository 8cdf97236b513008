"""The student training loop (paper §3.2): every student of an ensemble regresses the normalised
teacher descriptors of the training images, with its own Adam optimiser and its own data order.

Checkpoints after every epoch make :func:`train_students` resumable (same weights as an uninterrupted
run on CPU); under ``torchrun`` the same loop runs data parallel. With ``live_dir`` every epoch's
losses also go to dvclive (``<live_dir>/metrics.json``, ``<live_dir>/plots/metrics/*.tsv``, see
:mod:`ust.train.live`). The ensemble itself lives in :mod:`ust.method.students`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ust.io import atomic_torch_save
from ust.method.students import StudentTeacher, batch_indices, derive_seed, student_loss
from ust.train import distributed as ddp
from ust.train.live import log_step, replay


@dataclass(frozen=True)
class StudentTrainingConfig:
    """Optimisation of the students (MVTec: 100 epochs, batch 1, Adam 1e-4, weight decay 1e-5)."""

    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0
    # Cache the normalised training targets when they fit in this many bytes (else recompute them).
    cache_bytes: int = 2 * 1024**3


def _resolve_distributed(distributed: ddp.DistInfo | None) -> ddp.DistInfo | None:
    """``distributed`` itself, or the running process group's info when it has several ranks."""
    if distributed is not None:
        return distributed
    if ddp.is_initialized() and ddp.current().world_size > 1:
        return ddp.current()
    return None


@dataclass
class _Ensemble:
    """The student ensemble being trained: per student an Adam optimiser, a seeded generator of its
    data order and (under DDP) its wrapper; the cached training targets when they fit."""

    model: StudentTeacher
    images: torch.Tensor
    config: StudentTrainingConfig
    info: ddp.DistInfo | None
    opts: list[torch.optim.Optimizer]
    gens: list[torch.Generator]
    cached: torch.Tensor | None = None
    nets: list | None = None

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
        state = torch.load(ckpt, map_location=self.device, weights_only=False)
        if state["config"] != asdict(config) or state["m"] != model.m:
            raise ValueError(
                f"checkpoint {ckpt} was written with a different configuration "
                f"({state['config']}, M={state['m']}); delete it to start afresh"
            )
        model.students.load_state_dict(state["students"])
        for opt, s in zip(self.opts, state["optimizers"]):
            opt.load_state_dict(s)
        for g, s in zip(self.gens, state["generators"]):
            g.set_state(s)
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
        """One DDP wrapper per student when there is a process group.

        A one-rank DistInfo without a process group (init_from_env() outside torchrun) trains as one
        process; with a group, DDP is forced even for one rank so that path is what gets tested. The
        DDP constructor is collective, so no rank can write a checkpoint before all have loaded it.
        """
        model, info = self.model, self.info
        if info is None or not (info.world_size > 1 or ddp.is_initialized()):
            return
        self.nets = [
            ddp.wrap_ddp(
                # Only student i's parameters are synchronised; the frozen teacher stays out.
                ddp.ForwardFn(model.students[i], partial(model.student_prediction, i)),
                info,
                force=True,
            )
            for i in range(model.m)
        ]

    def epoch_loss(self, i: int) -> float:
        """One epoch of student ``i`` in its own seeded order; its mean loss (over all ranks)."""
        model, images, device, info = self.model, self.images, self.device, self.info
        order = torch.randperm(len(images), generator=self.gens[i])
        if info is not None:  # same permutation on every rank (same generator state)
            order = ddp.shard(order, info.rank, info.world_size)
        total, count = 0.0, 0
        for idx in batch_indices(len(order), self.config.batch_size, order):
            x = images[idx].to(device)
            target = self.cached[idx.to(device)] if self.cached is not None else model.targets(x)
            pred = self.nets[i](x) if self.nets is not None else model.student_prediction(i, x)
            loss = student_loss(pred, target)
            self.opts[i].zero_grad(set_to_none=True)
            loss.backward()
            self.opts[i].step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        mean_loss = total / count
        if self.nets is not None:  # equal shard lengths: the mean of rank means is the global mean
            mean_loss = float(
                ddp.all_reduce_mean(torch.tensor(mean_loss, dtype=torch.float64, device=device))
            )
        return mean_loss

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
    opts = [
        torch.optim.Adam(s.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        for s in model.students
    ]
    gens = [
        torch.Generator().manual_seed(derive_seed(config.seed, 1000 + i)) for i in range(model.m)
    ]
    return _Ensemble(model, images, config, info, opts, gens)


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
    (seeded from ``config.seed`` and its index). With ``checkpoint`` the state after every epoch is
    written atomically and a later call resumes from it, giving the same weights as an uninterrupted
    run on CPU. ``live_dir``: also log to dvclive there (:mod:`ust.train.live`), at step ``epoch``
    (1, 2, …) ``loss`` (mean over the students) and ``loss_student_<i>``; a resumed run rewrites
    the folder from the checkpoint's history first. ``None`` (default): no dvclive.

    Data parallel (``torchrun``, see :mod:`ust.train.distributed`): pass ``distributed=init_from_env()``
    (or run inside an initialised process group with several ranks). Every rank draws the same
    seeded permutation per student and epoch and trains on its :func:`~ust.train.distributed.shard` of it;
    each student is wrapped in DistributedDataParallel so gradients are averaged across ranks.
    ``config.batch_size`` is then **per rank** (a step sees ``batch_size × world_size`` images), the
    returned / reported epoch losses are averaged over ranks, and only rank 0 writes the checkpoint
    and the dvclive files (the other ranks wait for it at a barrier). ``model`` must already be on the
    rank's device. Without a process group (``distributed=None``) nothing of this happens.
    """
    if len(images) == 0:
        raise ValueError("no training images for the students")
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
        epoch_losses = [run.epoch_loss(i) for i in range(model.m)]
        for h, loss in zip(history, epoch_losses):
            h.append(loss)
        bar.set_postfix(loss=f"{np.mean(epoch_losses):.4f}")
        log_step(live, epoch + 1, _epoch_metrics(epoch_losses))
        run.save(ckpt, epoch + 1, history)
        if on_epoch is not None:
            on_epoch(epoch, epoch_losses)
    model.eval()
    return history
