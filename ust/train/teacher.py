"""The teacher pretraining loop (paper §3.1): :func:`pretrain` minimises λ_k L_k + λ_m L_m + λ_c L_c.

Adam with L2 weight decay and a constant learning rate. Triplet ``i`` of the sampler is a pure
function of ``(seed, i)`` and step ``t`` uses triplets ``t·B … (t+1)·B − 1``, so a run resumed from its
checkpoint (model, optimizer, RNG states, step, loss log) gives bit-identical weights to an
uninterrupted run on CPU.

Files written by :func:`pretrain` for ``out = teacher.pt``:
``teacher.pt`` (final), ``teacher.ckpt`` (resume state), ``teacher_loss.csv`` (step, loss, loss_k,
loss_m, loss_c; empty where a term is off); all written atomically (temp file + ``os.replace``).
The model and its losses live in :mod:`ust.method.teacher`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ust.data.patches import PatchTriplets
from ust.io import atomic_torch_save, atomic_write_text
from ust.method.distillation import DistillationTarget
from ust.method.teacher import (
    FILE_FORMAT,
    TeacherConfig,
    compute_losses,
    heldout_triplets,
    init_teacher,
    sampler_kwargs,
    triplet_accuracy,
)
from ust.train import distributed as ddp
from ust.train.device import resolve_device

LOG_COLUMNS = ("step", "loss", "loss_k", "loss_m", "loss_c")


# Changing these between a run and its resumption does not change the result.
RESUMABLE_FIELDS = {"iterations", "device", "num_workers", "checkpoint_every", "log_every"}


def default_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(final file, checkpoint, loss CSV) for ``out``: ``x.pt`` → ``x.pt``, ``x.ckpt``, ``x_loss.csv``."""
    out = Path(out)
    return out, out.with_suffix(".ckpt"), out.with_name(out.stem + "_loss.csv")


def _write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if _isnan(row[k]) else row[k]) for k in LOG_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _json_row(row: dict) -> dict:
    return {k: (None if _isnan(v) else v) for k, v in row.items()}


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _check_resume(saved: dict, cfg: TeacherConfig, ckpt: Path) -> None:
    current = asdict(cfg)
    diff = {
        k: (saved.get(k), current[k])
        for k in current
        if k not in RESUMABLE_FIELDS and saved.get(k) != current[k]
    }
    if diff:
        raise ValueError(
            f"checkpoint {str(ckpt)!r} was written with different settings {diff} (saved, now); "
            "delete it, choose another --out, or pass resume=False (--no-resume) to start over"
        )


def pretrain(
    config: TeacherConfig,
    out: str | os.PathLike,
    *,
    target: nn.Module | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    distributed: ddp.DistInfo | None = None,
) -> dict:
    """Pretrain a teacher for ``config.iterations`` steps and write it to ``out``; return a summary.

    ``target``: the distillation target module ((B, 3, p, p) in [0, 1] → (B, 512)); by default a
    :class:`DistillationTarget` built from ``config.resnet_weights`` / the torch hub cache. It is only
    needed when λ_k > 0, and missing ResNet weights raise FileNotFoundError before anything is
    trained or written. With ``resume`` an existing checkpoint continues the same run (its settings
    must match, except those in :data:`RESUMABLE_FIELDS`).

    Summary keys: ``steps``, ``iterations_per_s`` (this call), ``device``, ``loss_init`` /
    ``loss_final`` (dicts of the first / last logged loss row), ``triplet_accuracy_init`` /
    ``triplet_accuracy_final`` (held-out images, ``None`` when ``eval_triplets = 0``), file paths,
    ``world_size``.

    Data parallel (see :mod:`ust.train.distributed`): launched by ``torchrun`` (or given ``distributed``),
    every rank trains a DistributedDataParallel copy of the network; global step ``s`` consumes
    triplets ``s·B·W … (s+1)·B·W − 1`` of the index stream and rank ``r`` reads its block ``r·B …``
    of them, so ``batch_size`` is **per rank** (a step sees B·W triplets). Logged losses are
    averaged over ranks; only rank 0 writes the checkpoint, the loss CSV and ``out`` while the
    others wait at a barrier. When ``pretrain`` initialised the process group itself (``torchrun``
    without ``distributed``) it also destroys it before returning. A single process is unaffected.
    """
    cfg = config
    cfg.validate()
    out, default_ckpt, default_log = default_paths(out)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else default_ckpt
    log_file = Path(log_path) if log_path is not None else default_log
    device = resolve_device(cfg.device)
    # Under torchrun the process group is set up here, so `torchrun … -m ust.cli teacher` just works;
    # the backend follows the device (NCCL needs GPU tensors, gloo serves the CPU).
    owns_group = distributed is None and ddp.launched_by_torchrun() and not ddp.is_initialized()
    info = distributed
    if info is None and ddp.launched_by_torchrun():
        info = ddp.init_from_env("nccl" if device.type == "cuda" else "gloo")
    elif info is None and ddp.is_initialized() and ddp.current().world_size > 1:
        info = ddp.current()
    if info is not None and info.device.type == "cuda":
        device = info.device  # this rank's GPU
    rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
    main = rank == 0

    # Everything that can fail for a missing input fails here, before a file is written.
    if cfg.lambda_k > 0 and target is None:
        target = DistillationTarget(
            weights_path=cfg.resnet_weights,
            allow_download=cfg.allow_download,
            input_size=cfg.resnet_input_size,
        )
    triplets = PatchTriplets(
        cfg.images,
        cfg.patch_size,
        cfg.iterations * cfg.batch_size * world,
        split="train",
        seed=cfg.seed,
        **sampler_kwargs(cfg),
    )
    eval_set = heldout_triplets(cfg) if cfg.eval_triplets > 0 else None

    net = init_teacher(cfg).to(device)
    if target is not None:
        target.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    state = {"step": 0, "log": [], "accuracy_init": None, "train_seconds": 0.0}
    if resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        _check_resume(saved["config"], cfg, ckpt)
        if saved["step"] > cfg.iterations:
            raise ValueError(
                f"checkpoint {str(ckpt)!r} is at step {saved['step']} > iterations={cfg.iterations}; "
                "raise --iterations or start over with --no-resume"
            )
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        _set_rng_states(saved["rng"])
        state = {k: saved[k] for k in state}
    elif eval_set is not None:
        state["accuracy_init"] = triplet_accuracy(net, eval_set, device=device)

    def save_checkpoint() -> None:
        if main:
            atomic_torch_save(
                {
                    "format": FILE_FORMAT,
                    "config": asdict(cfg),
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": _rng_states(),
                    **state,
                },
                ckpt,
            )
            _write_csv(state["log"], log_file)
        if ddp_net is not None:
            ddp.barrier()  # the others wait until rank 0's files are complete

    # With a process group DDP is used even for one rank, so that is the path the tests check. The
    # loss computation runs inside DDP's forward (its gradient hooks need that); the distillation
    # target stays out of it (frozen, never synchronised). A decoder that λ_k = 0 never uses gets no
    # gradient either way (Adam skips it); freezing it keeps DDP from waiting for its gradients.
    ddp_net = None
    if info is not None and (world > 1 or ddp.is_initialized()):
        if cfg.lambda_k == 0 and net.decoder is not None:
            net.decoder.requires_grad_(False)
        ddp_net = ddp.wrap_ddp(
            ddp.ForwardFn(net, lambda b: compute_losses(net, target, b, cfg, cfg.bf16)),
            info,
            force=True,
        )

    start = state["step"]
    loader = torch.utils.data.DataLoader(
        triplets,
        batch_size=cfg.batch_size,
        sampler=ddp.StepIndices(start, cfg.iterations, cfg.batch_size, rank, world)
        if ddp_net is not None
        else range(start * cfg.batch_size, cfg.iterations * cfg.batch_size),
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    tf32_before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.type == "cuda" and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    autocast = cfg.bf16
    window: list[tuple[float, dict]] = []
    net.train()
    t_call = t0 = time.perf_counter()
    bar = None
    try:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.iterations,
            initial=start,
            desc=f"teacher p={cfg.patch_size}",
            disable=not (progress and main),
        )
        for step, batch in enumerate(loader, start=start + 1):
            batch = tuple(x.to(device, non_blocking=True) for x in batch)
            if ddp_net is not None:
                loss, terms = ddp_net(batch)
            else:
                loss, terms = compute_losses(net, target, batch, cfg, autocast)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window.append((loss.item(), terms))
            if step == 1 or step % cfg.log_every == 0 or step == cfg.iterations:
                row = {"step": step, "loss": sum(v for v, _ in window) / len(window)}
                for key in LOG_COLUMNS[2:]:
                    row[key] = sum(t[key] for _, t in window) / len(window)
                if ddp_net is not None:  # every rank logs at the same steps: average their rows
                    keys = LOG_COLUMNS[1:]
                    values = torch.tensor(
                        [row[k] for k in keys], dtype=torch.float64, device=device
                    )
                    row.update(zip(keys, ddp.all_reduce_mean(values).tolist()))
                state["log"].append(row)
                window = []
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in row.items() if k != "step" and not _isnan(v)}
                )
            bar.update(1)
            state["step"] = step
            if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
                state["train_seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                save_checkpoint()
    finally:
        if bar is not None:
            bar.close()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
    if device.type == "cuda":
        torch.cuda.synchronize()
    call_seconds = time.perf_counter() - t_call
    steps_done = cfg.iterations - start
    if start == cfg.iterations:  # nothing to do (already complete): make sure the files exist
        save_checkpoint()

    accuracy_final = None
    if eval_set is not None:
        accuracy_final = triplet_accuracy(net, eval_set, device=device)
    log = state["log"]
    summary = {
        "steps": state["step"],
        "steps_this_call": steps_done,
        "train_seconds": state["train_seconds"],
        "iterations_per_s": steps_done / call_seconds if steps_done else None,
        "device": str(device),
        "loss_init": _json_row(log[0]) if log else None,
        "loss_final": _json_row(log[-1]) if log else None,
        "triplet_accuracy_init": state["accuracy_init"],
        "triplet_accuracy_final": accuracy_final,
        "out": str(out),
        "checkpoint": str(ckpt),
        "log": str(log_file),
        "world_size": world,
    }
    if main:
        atomic_torch_save(
            {
                "format": FILE_FORMAT,
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "net_config": asdict(net.config),
                "loss_config": cfg.loss_config(),
                "teacher_config": asdict(cfg),
                "summary": summary,
            },
            out,
        )
    if ddp_net is not None:
        ddp.barrier()  # `out` exists for every rank once pretrain returns
    if owns_group:
        ddp.cleanup()
    return summary
