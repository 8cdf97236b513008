"""The student training loop (paper §3.2): every student of an ensemble regresses the normalised
teacher descriptors of the training images, with its own Adam optimiser and its own data order.

Checkpoints after every epoch make :func:`train_students` resumable (same weights as an uninterrupted
run on CPU); under ``torchrun`` the same loop runs data parallel. The ensemble itself lives in
:mod:`ust.method.students`.
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


def train_students(
    model: StudentTeacher,
    images: torch.Tensor,
    config: StudentTrainingConfig = StudentTrainingConfig(),
    *,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
    distributed: ddp.DistInfo | None = None,
) -> list[list[float]]:
    """Train every student of ``model`` on ``images`` (N, C, H, W) in [0, 1]; returns the mean loss
    per epoch for each student (M lists). ``fit_target_statistics`` must have been called.

    Students are trained independently: each has its own Adam optimiser and its own data order
    (seeded from ``config.seed`` and its index). With ``checkpoint`` the state after every epoch is
    written atomically and a later call resumes from it, giving the same weights as an uninterrupted
    run on CPU.

    Data parallel (``torchrun``, see :mod:`ust.train.distributed`): pass ``distributed=init_from_env()``
    (or run inside an initialised process group with several ranks). Every rank draws the same
    seeded permutation per student and epoch and trains on its :func:`~ust.train.distributed.shard` of it;
    each student is wrapped in DistributedDataParallel so gradients are averaged across ranks.
    ``config.batch_size`` is then **per rank** (a step sees ``batch_size × world_size`` images), the
    returned / reported epoch losses are averaged over ranks, and only rank 0 writes the checkpoint
    (the other ranks wait for it at a barrier). ``model`` must already be on the rank's device.
    Without a process group (``distributed=None``) nothing of this happens.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no training images for the students")
    info = _resolve_distributed(distributed)
    device = model.target_mean.device
    opts = [
        torch.optim.Adam(s.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        for s in model.students
    ]
    gens = [
        torch.Generator().manual_seed(derive_seed(config.seed, 1000 + i)) for i in range(model.m)
    ]
    history: list[list[float]] = [[] for _ in range(model.m)]
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state["config"] != asdict(config) or state["m"] != model.m:
            raise ValueError(
                f"checkpoint {ckpt} was written with a different configuration "
                f"({state['config']}, M={state['m']}); delete it to start afresh"
            )
        model.students.load_state_dict(state["students"])
        for opt, s in zip(opts, state["optimizers"]):
            opt.load_state_dict(s)
        for g, s in zip(gens, state["generators"]):
            g.set_state(s)
        history, start = state["history"], state["epoch"]

    shape = (
        (n, model.teacher.config.d, *images.shape[-2:])
        if model.dense
        else (n, model.teacher.config.d, 1, 1)
    )
    cached = None
    if int(np.prod(shape)) * 4 <= config.cache_bytes:
        cached = torch.empty(shape, device=device)
        with torch.no_grad():
            for idx in batch_indices(n, 16):
                cached[idx] = model.targets(images[idx].to(device))

    # A one-rank DistInfo without a process group (init_from_env() outside torchrun) trains as one
    # process; with a group, DDP is forced even for one rank so that path is what gets tested. The
    # DDP constructor is collective, so no rank can write a checkpoint before all have loaded it.
    nets = None
    if info is not None and (info.world_size > 1 or ddp.is_initialized()):
        nets = [
            ddp.wrap_ddp(
                # Only student i's parameters are synchronised; the frozen teacher stays out.
                ddp.ForwardFn(model.students[i], partial(model.student_prediction, i)),
                info,
                force=True,
            )
            for i in range(model.m)
        ]
    main = info is None or info.is_main

    model.train()
    bar = tqdm(
        range(start, config.epochs),
        desc=f"students p={model.p}",
        disable=not (progress and main),
        initial=start,
        total=config.epochs,
    )
    for epoch in bar:
        epoch_losses = []
        for i in range(model.m):
            order = torch.randperm(n, generator=gens[i])
            if info is not None:  # same permutation on every rank (same generator state)
                order = ddp.shard(order, info.rank, info.world_size)
            total, count = 0.0, 0
            for idx in batch_indices(len(order), config.batch_size, order):
                x = images[idx].to(device)
                target = cached[idx.to(device)] if cached is not None else model.targets(x)
                pred = nets[i](x) if nets is not None else model.student_prediction(i, x)
                loss = student_loss(pred, target)
                opts[i].zero_grad(set_to_none=True)
                loss.backward()
                opts[i].step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            mean_loss = total / count
            if nets is not None:  # equal shard lengths: the mean of rank means is the global mean
                mean_loss = float(
                    ddp.all_reduce_mean(torch.tensor(mean_loss, dtype=torch.float64, device=device))
                )
            history[i].append(mean_loss)
            epoch_losses.append(mean_loss)
        bar.set_postfix(loss=f"{np.mean(epoch_losses):.4f}")
        if ckpt is not None and main:
            atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "config": asdict(config),
                    "m": model.m,
                    "students": model.students.state_dict(),
                    "optimizers": [o.state_dict() for o in opts],
                    "generators": [g.get_state() for g in gens],
                    "history": history,
                },
                ckpt,
            )
        if ckpt is not None and nets is not None:
            ddp.barrier()  # no rank runs ahead of (or returns before) rank 0's checkpoint
        if on_epoch is not None:
            on_epoch(epoch, epoch_losses)
    model.eval()
    return history
