"""The teacher pretraining loop (paper §3.1): :func:`pretrain` minimises λ_k L_k + λ_m L_m + λ_c L_c.

Adam with L2 weight decay and a constant learning rate. Triplet ``i`` of the sampler is a pure
function of ``(seed, i)`` and step ``t`` uses triplets ``t·B … (t+1)·B − 1``, so a run resumed from its
checkpoint (model, optimizer, RNG states, step, loss log) gives bit-identical weights to an
uninterrupted run on CPU.

Files written by :func:`pretrain` for ``out = teacher.pt``:
``teacher.pt`` (final), ``teacher.ckpt`` (resume state), ``teacher_loss.csv`` (step, loss, loss_k,
loss_m, loss_c; empty where a term is off); all written atomically (temp file + ``os.replace``).
With ``live_dir`` the same rows also go to dvclive (``<live_dir>/metrics.json``,
``<live_dir>/plots/metrics/<column>.tsv``, see :mod:`ust.train.live`). The model and its losses
live in :mod:`ust.method.teacher`.

The steps of :func:`pretrain`: place the process (device, ranks), build the inputs (target,
triplets, held-out set), restore the checkpoint or start afresh, wrap for DDP, run the step loop
(optimise, log, checkpoint), summarise, save the teacher.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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
    weighted_terms,
)
from ust.train import distributed as ddp
from ust.train.device import resolve_device
from ust.train.live import log_step, log_summary, replay

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


@dataclass(frozen=True)
class _Placement:
    """Where this process trains: its device, its rank and world size (``info``; ``None`` for a
    plain process) and whether :func:`pretrain` set the process group up (and so tears it down)."""

    device: torch.device
    info: ddp.DistInfo | None
    owns_group: bool

    @property
    def rank(self) -> int:
        return self.info.rank if self.info is not None else 0

    @property
    def world(self) -> int:
        return self.info.world_size if self.info is not None else 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class _Files(NamedTuple):
    out: Path
    ckpt: Path
    log: Path


def _resolve_files(out, checkpoint_path, log_path) -> _Files:
    out, default_ckpt, default_log = default_paths(out)
    return _Files(
        out,
        Path(checkpoint_path) if checkpoint_path is not None else default_ckpt,
        Path(log_path) if log_path is not None else default_log,
    )


@dataclass
class _Run:
    """One pretraining run in progress: network, optimiser and the resumable ``state`` (``step``,
    loss ``log``, ``accuracy_init``, ``train_seconds``), plus what only rank 0 writes to."""

    cfg: TeacherConfig
    files: _Files
    place: _Placement
    net: nn.Module
    target: nn.Module | None
    optimizer: torch.optim.Optimizer
    state: dict = field(
        default_factory=lambda: {"step": 0, "log": [], "accuracy_init": None, "train_seconds": 0.0}
    )
    ddp_net: nn.Module | None = None
    live: Any = None  # a dvclive.Live on rank 0 when asked for, else None
    t0: float = 0.0  # start of the time not yet added to state["train_seconds"]

    @property
    def device(self) -> torch.device:
        return self.place.device

    def optimizer_step(self, batch) -> tuple[float, dict]:
        """One Adam step on a batch of triplets; returns (loss, loss terms) of the batch."""
        batch = tuple(x.to(self.device, non_blocking=True) for x in batch)
        if self.ddp_net is not None:
            loss, terms = self.ddp_net(batch)
        else:
            loss, terms = compute_losses(self.net, self.target, batch, self.cfg, self.cfg.bf16)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item(), terms

    def log(self, step: int, window: list[tuple[float, dict]]) -> dict:
        """Append the mean loss row of the steps in ``window`` (over ranks too) to the log."""
        row = {"step": step, "loss": sum(v for v, _ in window) / len(window)}
        for key in LOG_COLUMNS[2:]:
            row[key] = sum(t[key] for _, t in window) / len(window)
        if self.ddp_net is not None:  # every rank logs at the same steps: average their rows
            keys = LOG_COLUMNS[1:]
            values = torch.tensor([row[k] for k in keys], dtype=torch.float64, device=self.device)
            row.update(zip(keys, ddp.all_reduce_mean(values).tolist()))
        self.state["log"].append(row)
        log_step(self.live, step, _metrics(row))
        return row

    def checkpoint(self) -> None:
        """Add the elapsed training time to the state and save the checkpoint."""
        self.state["train_seconds"] += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        self.save_checkpoint()

    def save_checkpoint(self) -> None:
        if self.place.main:
            atomic_torch_save(
                {
                    "format": FILE_FORMAT,
                    "config": asdict(self.cfg),
                    "model": self.net.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "rng": _rng_states(),
                    **self.state,
                },
                self.files.ckpt,
            )
            _write_csv(self.state["log"], self.files.log)
        if self.ddp_net is not None:
            ddp.barrier()  # the others wait until rank 0's files are complete


def _metrics(row: dict) -> dict:
    """A loss-log row as dvclive metrics (terms that are off, NaN, are skipped by log_step)."""
    return {k: row[k] for k in LOG_COLUMNS[1:]}


def _logs_at(step: int, cfg: TeacherConfig) -> bool:
    return step == 1 or step % cfg.log_every == 0 or step == cfg.iterations


def _checkpoints_at(step: int, cfg: TeacherConfig) -> bool:
    return step % cfg.checkpoint_every == 0 or step == cfg.iterations


def _place(cfg: TeacherConfig, distributed: ddp.DistInfo | None) -> _Placement:
    """Resolve the device and the distributed setup of this process.

    Under torchrun the process group is set up here, so `torchrun … -m ust.cli teacher` just works;
    the backend follows the device (NCCL needs GPU tensors, gloo serves the CPU).
    """
    device = resolve_device(cfg.device)
    owns_group = distributed is None and ddp.launched_by_torchrun() and not ddp.is_initialized()
    info = distributed
    if info is None and ddp.launched_by_torchrun():
        info = ddp.init_from_env("nccl" if device.type == "cuda" else "gloo")
    elif info is None and ddp.is_initialized() and ddp.current().world_size > 1:
        info = ddp.current()
    if info is not None and info.device.type == "cuda":
        device = info.device  # this rank's GPU
    return _Placement(device, info, owns_group)


def _build_inputs(cfg: TeacherConfig, target: nn.Module | None, world: int):
    """(distillation target, training triplets, held-out triplets or ``None``).

    Everything that can fail for a missing input fails here, before a file is written.
    """
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
    return target, triplets, eval_set


def _new_run(cfg: TeacherConfig, files: _Files, place: _Placement, target) -> _Run:
    """The seeded initial network (and the target) on this process' device, with its optimiser."""
    net = init_teacher(cfg).to(place.device)
    if target is not None:
        target.to(place.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Run(cfg, files, place, net, target, optimizer)


def _restore_or_start(run: _Run, resume: bool, eval_set) -> None:
    """Continue from the checkpoint (``resume`` and one exists) or measure the initial accuracy."""
    cfg, ckpt = run.cfg, run.files.ckpt
    if resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        _check_resume(saved["config"], cfg, ckpt)
        if saved["step"] > cfg.iterations:
            raise ValueError(
                f"checkpoint {str(ckpt)!r} is at step {saved['step']} > iterations={cfg.iterations}; "
                "raise --iterations or start over with --no-resume"
            )
        run.net.load_state_dict(saved["model"])
        run.optimizer.load_state_dict(saved["optimizer"])
        _set_rng_states(saved["rng"])
        run.state = {k: saved[k] for k in run.state}
    elif eval_set is not None:
        run.state["accuracy_init"] = triplet_accuracy(run.net, eval_set, device=run.device)


def _wrap_ddp(run: _Run) -> None:
    """Train through DistributedDataParallel when there is a process group.

    With a process group DDP is used even for one rank, so that is the path the tests check. The
    loss computation runs inside DDP's forward (its gradient hooks need that); the distillation
    target stays out of it (frozen, never synchronised). A decoder that λ_k = 0 never uses gets no
    gradient either way (Adam skips it); freezing it keeps DDP from waiting for its gradients.
    """
    cfg, net, target, info = run.cfg, run.net, run.target, run.place.info
    if info is None or not (info.world_size > 1 or ddp.is_initialized()):
        return
    if cfg.lambda_k == 0 and net.decoder is not None:
        net.decoder.requires_grad_(False)
    run.ddp_net = ddp.wrap_ddp(
        ddp.ForwardFn(net, lambda b: compute_losses(net, target, b, cfg, cfg.bf16)),
        info,
        force=True,
    )


def _loader(run: _Run, triplets: PatchTriplets) -> torch.utils.data.DataLoader:
    """Triplets of steps ``state["step"] + 1 … iterations`` (this rank's block of each step)."""
    cfg, start, place = run.cfg, run.state["step"], run.place
    if run.ddp_net is not None:
        sampler = ddp.StepIndices(start, cfg.iterations, cfg.batch_size, place.rank, place.world)
    else:
        sampler = range(start * cfg.batch_size, cfg.iterations * cfg.batch_size)
    return torch.utils.data.DataLoader(
        triplets,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=run.device.type == "cuda",
    )


@contextlib.contextmanager
def _tf32(device: torch.device, allow: bool):
    """Allow TF32 matmuls/convolutions on CUDA while training (``cfg.tf32``); restored afterwards."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.type == "cuda" and allow:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _train_steps(run: _Run, loader, progress: bool) -> None:
    """The step loop: optimise, log the mean losses every ``log_every`` steps, checkpoint."""
    from tqdm.auto import tqdm

    cfg, start = run.cfg, run.state["step"]
    window: list[tuple[float, dict]] = []
    run.net.train()
    run.t0 = time.perf_counter()
    with tqdm(
        total=cfg.iterations,
        initial=start,
        desc=f"teacher p={cfg.patch_size}",
        disable=not (progress and run.place.main),
    ) as bar:
        for step, batch in enumerate(loader, start=start + 1):
            window.append(run.optimizer_step(batch))
            if _logs_at(step, cfg):
                row = run.log(step, window)
                window = []
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in row.items() if k != "step" and not _isnan(v)}
                )
            bar.update(1)
            run.state["step"] = step
            if _checkpoints_at(step, cfg):
                run.checkpoint()


def _train(run: _Run, triplets: PatchTriplets, progress: bool) -> float:
    """Train from ``state["step"]`` to ``iterations``; returns the wall-clock seconds it took."""
    loader = _loader(run, triplets)
    t_call = time.perf_counter()
    with _tf32(run.device, run.cfg.tf32):
        _train_steps(run, loader, progress)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t_call


def _summary(run: _Run, accuracy_final, steps_done: int, call_seconds: float) -> dict:
    log, cfg = run.state["log"], run.cfg
    return {
        "steps": run.state["step"],
        "steps_this_call": steps_done,
        "train_seconds": run.state["train_seconds"],
        "iterations_per_s": steps_done / call_seconds if steps_done else None,
        "device": str(run.device),
        "loss_init": _json_row(log[0]) if log else None,
        "loss_final": _json_row(log[-1]) if log else None,
        "loss_weighted_init": weighted_terms(log[0], cfg) if log else None,
        "loss_weighted_final": weighted_terms(log[-1], cfg) if log else None,
        "decorrelation_normalized": cfg.normalizes_decorrelation(),
        "triplet_accuracy_init": run.state["accuracy_init"],
        "triplet_accuracy_final": accuracy_final,
        "out": str(run.files.out),
        "checkpoint": str(run.files.ckpt),
        "log": str(run.files.log),
        "world_size": run.place.world,
    }


def _summary_metrics(summary: dict) -> dict:
    """What goes into dvclive's metrics.json at the end: the accuracies and the loss balance
    ``weighted_loss_<k|m|c>_<init|final>`` (λ·L of each term that is on)."""
    out = {k: summary[k] for k in ("triplet_accuracy_init", "triplet_accuracy_final")}
    for when in ("init", "final"):
        for term, value in (summary[f"loss_weighted_{when}"] or {}).items():
            out[f"weighted_loss_{term}_{when}"] = value
    return out


def _save_teacher(run: _Run, summary: dict) -> None:
    """Rank 0 writes the final teacher file; every rank returns only once it exists."""
    if run.place.main:
        net = run.net
        atomic_torch_save(
            {
                "format": FILE_FORMAT,
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "net_config": asdict(net.config),
                "loss_config": run.cfg.loss_config(),
                "teacher_config": asdict(run.cfg),
                "summary": summary,
            },
            run.files.out,
        )
    if run.ddp_net is not None:
        ddp.barrier()


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
    live_dir: str | os.PathLike | None = None,
) -> dict:
    """Pretrain a teacher for ``config.iterations`` steps and write it to ``out``; return a summary.

    ``target``: the distillation target module ((B, 3, p, p) in [0, 1] → (B, 512)); by default a
    :class:`DistillationTarget` built from ``config.resnet_weights`` / the torch hub cache. It is only
    needed when λ_k > 0, and missing ResNet weights raise FileNotFoundError before anything is
    trained or written. With ``resume`` an existing checkpoint continues the same run (its settings
    must match, except those in :data:`RESUMABLE_FIELDS`).

    ``live_dir``: also log to dvclive there (:mod:`ust.train.live`): every logged step ``loss`` and
    the terms that are on (``loss_k``, ``loss_m``, ``loss_c``, the values of the loss CSV), at the
    end ``triplet_accuracy_init`` / ``triplet_accuracy_final`` and the weighted terms into
    ``metrics.json``. A resumed run
    rewrites the folder from the checkpoint's log first. ``None`` (default): no dvclive.

    Summary keys: ``steps``, ``iterations_per_s`` (this call), ``device``, ``loss_init`` /
    ``loss_final`` (dicts of the first / last logged loss row, unweighted terms),
    ``loss_weighted_init`` / ``loss_weighted_final`` (λ·L of each term, ``{"k", "m", "c"}``, ``None``
    when off: the balance of the loss, also in dvclive's metrics.json as
    ``weighted_loss_<term>_<init|final>``), ``decorrelation_normalized`` (the L_c form as run),
    ``triplet_accuracy_init`` /
    ``triplet_accuracy_final`` (held-out images, ``None`` when ``eval_triplets = 0``), file paths,
    ``world_size``.

    Data parallel (see :mod:`ust.train.distributed`): launched by ``torchrun`` (or given ``distributed``),
    every rank trains a DistributedDataParallel copy of the network; global step ``s`` consumes
    triplets ``s·B·W … (s+1)·B·W − 1`` of the index stream and rank ``r`` reads its block ``r·B …``
    of them, so ``batch_size`` is **per rank** (a step sees B·W triplets). Logged losses are
    averaged over ranks; only rank 0 writes the checkpoint, the loss CSV, the dvclive files and
    ``out`` while the others wait at a barrier. When ``pretrain`` initialised the process group
    itself (``torchrun`` without ``distributed``) it also destroys it before returning. A single
    process is unaffected.
    """
    cfg = config
    cfg.validate()
    files = _resolve_files(out, checkpoint_path, log_path)
    place = _place(cfg, distributed)
    target, triplets, eval_set = _build_inputs(cfg, target, place.world)

    run = _new_run(cfg, files, place, target)
    _restore_or_start(run, resume, eval_set)
    _wrap_ddp(run)
    run.live = replay(
        live_dir if place.main else None, ((r["step"], _metrics(r)) for r in run.state["log"])
    )

    start = run.state["step"]
    call_seconds = _train(run, triplets, progress)
    if start == cfg.iterations:  # nothing to do (already complete): make sure the files exist
        run.save_checkpoint()

    accuracy_final = None
    if eval_set is not None:
        accuracy_final = triplet_accuracy(run.net, eval_set, device=place.device)
    summary = _summary(run, accuracy_final, cfg.iterations - start, call_seconds)
    log_summary(run.live, _summary_metrics(summary))
    _save_teacher(run, summary)
    if place.owns_group:
        ddp.cleanup()
    return summary
