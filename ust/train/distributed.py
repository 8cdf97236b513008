"""Data-parallel training over several processes (``torchrun``), a no-op in a plain process.

Teacher pretraining (:func:`ust.train.teacher.pretrain`) and student training
(:func:`ust.train.students.train_students`) scale to several GPUs with DistributedDataParallel: every
process (rank) holds a full copy of the network, reads its own share of the data and the gradients
are averaged across ranks after each backward pass. Without ``torchrun`` nothing here initialises a
process group and the training code runs exactly as before (bit-identical results), so the same
commands and notebooks work on a laptop and on a multi-GPU node.

Launch on one node with 4 GPUs (``--standalone`` picks a free local port; every rank runs the same
command, only rank 0 writes the teacher file, its checkpoint and the loss CSV)::

    torchrun --standalone --nproc_per_node 4 -m ust.cli teacher \\
        --images embedded --patch-size 33 --out results/teacher/p33.pt

``pretrain`` initialises the process group itself from the ``torchrun`` environment. Batch sizes
are **per rank**: with 4 ranks and ``--batch-size 64`` one optimiser step sees 256 triplets, so keep
the global batch of a single-GPU run by dividing ``--batch-size`` by the number of GPUs. For
students, call :func:`init_from_env` in your own ``torchrun`` script and pass the result as
``train_students(..., distributed=info)``. All ranks must see the same filesystem (one node, or a
shared disk): checkpoints written by rank 0 are read back by every rank when a run resumes.

Everything here degrades gracefully: ``rank = 0``, ``world_size = 1``, :func:`barrier` and
:func:`all_reduce_mean` do nothing and :func:`wrap_ddp` returns the module unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, how many ranks there are and the device it should use.

    ``device`` is ``cuda:<local_rank>`` under the NCCL backend, the CPU under gloo, and for a plain
    process the first GPU when there is one (the device the training code would pick anyway).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """More than one rank: data must be sharded and gradients averaged."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints; the others only compute."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or ``python -m torch.distributed.run``) started this process."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def current() -> DistInfo:
    """The :class:`DistInfo` of the already initialised process group, or the single-process one.

    Lets library functions find out that they run distributed without every caller threading the
    information through.
    """
    if not is_initialized():
        return DistInfo(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def init_from_env(backend: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` when launched by ``torchrun``; a no-op otherwise.

    ``backend``: ``None`` picks NCCL when CUDA is available (one GPU per rank, ``cuda:LOCAL_RANK``
    becomes the current device) and gloo otherwise (CPU); pass ``"gloo"`` to force CPU ranks on a
    machine with GPUs. Calling it again once the group exists just returns the current
    :class:`DistInfo`, so nested library calls can each call it safely.
    """
    if is_initialized():
        return current()
    if not launched_by_torchrun():
        return current()
    if not dist.is_available():
        raise RuntimeError("launched by torchrun, but this PyTorch build has no torch.distributed")
    backend = backend or _default_backend()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, device)


def is_main() -> bool:
    """True on rank 0 and in a plain (non-distributed) process."""
    return not is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint); no-op without a group."""
    if is_initialized():
        dist.barrier()


def shard(indices, rank: int, world: int):
    """Rank ``rank``'s share of ``indices`` (one permutation shared by all ranks).

    Every rank gets ``ceil(n / world)`` items, so all ranks take the same number of optimiser steps
    (a rank with fewer batches would leave the others waiting forever in the gradient all-reduce).
    The permutation is padded by wrapping around to a multiple of ``world`` and dealt out strided:
    rank r gets items r, r + world, r + 2·world, … . Hence the j-th batches of all ranks together
    are one contiguous window of the permutation, and with ``world = 1`` the result is ``indices``
    itself. Accepts a tensor, a NumPy array or any sequence and returns the same kind (a list for
    plain sequences).
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    n = len(indices)
    if n == 0:
        return indices[:0] if isinstance(indices, (torch.Tensor, np.ndarray)) else []
    total = math.ceil(n / world) * world
    reps = math.ceil(total / n)
    if isinstance(indices, torch.Tensor):
        padded = indices.repeat(reps, *([1] * (indices.dim() - 1)))[:total] if reps > 1 else indices
    elif isinstance(indices, np.ndarray):
        padded = np.concatenate([indices] * reps)[:total]
    else:
        padded = (list(indices) * reps)[:total]
    return padded[rank:total:world]


class StepIndices(Sequence[int]):
    """Dataset indices that rank ``rank`` reads for optimiser steps ``start … stop − 1``.

    For an index stream (item ``i`` a pure function of ``i``, like the teacher's triplets), global
    step ``s`` consumes items ``s·B·W … (s+1)·B·W − 1`` and rank ``r`` reads its slice
    ``s·B·W + r·B … s·B·W + r·B + B − 1``. With ``world = 1`` this is ``range(start·B, stop·B)``, the
    single-process order, and a run resumed at any step reads exactly what it would have read.
    Lazy (a DataLoader ``sampler``): millions of steps cost no memory.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1):
        if world < 1 or not 0 <= rank < world or batch_size < 1 or start < 0:
            raise ValueError(
                f"need 0 <= rank < world, batch_size >= 1, start >= 0; got rank={rank}, "
                f"world={world}, batch_size={batch_size}, start={start}"
            )
        self.start, self.stop = start, max(start, stop)
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch_size

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"index {k} out of range for {len(self)} indices")
        step, j = divmod(k, self.batch_size)
        b = self.batch_size
        return ((self.start + step) * self.world + self.rank) * b + j

    def __iter__(self):
        b, w, r = self.batch_size, self.world, self.rank
        for step in range(self.start, self.stop):
            base = (step * w + r) * b
            yield from range(base, base + b)


class ForwardFn(nn.Module):
    """A module whose forward is ``fn(*args)`` and whose parameters are those of ``owner``.

    DistributedDataParallel only averages the gradients of a backward pass that follows a forward
    through the DDP wrapper, and it expects every one of its parameters to get a gradient. Wrapping
    a whole loss computation (e.g. descriptors and decoder, or a student's dense prediction) lets
    the existing code run unchanged inside that forward; ``owner`` decides which parameters DDP
    synchronises (frozen networks that ``fn`` also uses stay out).
    """

    def __init__(self, owner: nn.Module, fn):
        super().__init__()
        self.owner = owner
        object.__setattr__(self, "_fn", fn)  # not a submodule: DDP must not see its modules

    def forward(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (a new tensor; the input is left alone).

    Integer tensors are averaged in float64. Without a process group the value comes back
    unchanged. Under NCCL the tensor must live on this rank's GPU.
    """
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.double()
    if is_initialized():
        world = dist.get_world_size()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        if world > 1:
            out /= world
    return out


def wrap_ddp(module: nn.Module, info: DistInfo, *, force: bool = False, **kwargs) -> nn.Module:
    """``module`` in DistributedDataParallel when ``info`` has several ranks (or ``force``).

    ``force`` wraps even with one rank: a world-size-1 run then goes through exactly the code path of
    a multi-GPU run, which is how the tests check that DDP leaves the arithmetic untouched. The
    module must already sit on ``info.device``; on CUDA it is pinned there with ``device_ids``.
    ``kwargs`` go to :class:`~torch.nn.parallel.DistributedDataParallel`.
    """
    if not (info.world_size > 1 or force):
        return module
    if not is_initialized():
        raise RuntimeError(
            "wrap_ddp needs an initialised process group: launch with torchrun and call "
            "ust.train.distributed.init_from_env() first"
        )
    if info.device.type == "cuda":
        kwargs.setdefault("device_ids", [info.device.index])
        kwargs.setdefault("output_device", info.device.index)
    return nn.parallel.DistributedDataParallel(module, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (state dicts keep their usual keys)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def cleanup() -> None:
    """Destroy the process group if there is one (safe to call twice or without torchrun)."""
    if is_initialized():
        dist.destroy_process_group()


__all__: Sequence[str] = (
    "DistInfo",
    "ForwardFn",
    "StepIndices",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "current",
    "init_from_env",
    "is_initialized",
    "is_main",
    "launched_by_torchrun",
    "shard",
    "unwrap",
    "wrap_ddp",
)
