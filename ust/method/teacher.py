"""Teacher pretraining T̂ (SPEC §1.4-1.6): L = λ_k L_k + λ_m L_m + λ_c L_c on patch triplets.

* L_k: the anchor's decoded descriptor D(T̂(P)) against the frozen ResNet-18 feature F(P).
* L_m: triplet loss with anchor swap on the descriptors of (anchor, positive, negative).
* L_c: decorrelation of the **anchor** descriptors of the batch (B×d; positives and negatives are
  left out so L_c sees B independent crops, as in the paper's "descriptors in the minibatch").

Every network input is the [0, 1] patch, ImageNet-normalised. Adam (L2 weight decay, register §1.6)
with a constant learning rate. Triplet ``i`` of the sampler is a pure function of ``(seed, i)`` and
step ``t`` uses triplets ``t·B … (t+1)·B − 1``, so a run resumed from its checkpoint (model, optimizer,
RNG states, step, loss log) gives bit-identical weights to an uninterrupted run on CPU.

Files written by :func:`pretrain` for ``out = teacher.pt``:
``teacher.pt`` (final), ``teacher.ckpt`` (resume state), ``teacher_loss.csv`` (step, loss, loss_k,
loss_m, loss_c; empty where a term is off); all written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ust.data.patches import PatchTriplets
from ust.data.transforms import imagenet_normalize
from ust.io import atomic_torch_save, atomic_write_text
from ust.method.distillation import DistillationTarget
from ust.method.losses import decorrelation_loss, distillation_loss, triplet_loss
from ust.method.networks import NetConfig, PatchNet
from ust.train import distributed as ddp

FILE_FORMAT = "ust.method.teacher/1"
LOG_COLUMNS = ("step", "loss", "loss_k", "loss_m", "loss_c")
EVAL_SEED_OFFSET = 1_000_003  # held-out triplets use their own stream, never the training one
# Changing these between a run and its resumption does not change the result.
RESUMABLE_FIELDS = {"iterations", "device", "num_workers", "checkpoint_every", "log_every"}


@dataclass
class TeacherConfig:
    """The whole pretraining recipe; defaults are the paper's (MVTec setting λ_k = λ_c = 1, λ_m = 0).

    ``decorrelation_normalized=True`` (our default, see :mod:`ust.method.losses`) divides L_c by d(d − 1);
    ``False`` with ``decorrelation_squared=True`` is the thesis' raw Σ_{k≠l} C_kl² and with
    ``decorrelation_squared=False`` the paper's unsquared Σ C_kl.
    """

    # network (SPEC §1.2-1.3)
    patch_size: int = 33
    d: int = 128
    variant: str = "default"
    slope: float = 0.005
    act_on_descriptor: bool = False
    # data (SPEC §1.5): "embedded" or a folder of images
    images: str = "embedded"
    heldout_fraction: float = 0.1
    zoom_min: int = 4
    zoom_max: int = 16
    max_shift: int | None = None  # None: (p − 1) // 4
    luminance_min: float = 0.8
    luminance_max: float = 1.2
    noise_std: float = 0.1
    grayscale_prob: float = 0.1
    # optimisation (SPEC §1.6)
    iterations: int = 50_000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 1e-5
    # losses (SPEC §1.4)
    lambda_k: float = 1.0
    lambda_m: float = 0.0
    lambda_c: float = 1.0
    margin: float = 1.0
    decorrelation_squared: bool = True
    decorrelation_normalized: bool = True
    decorrelation_eps: float = 1e-8
    # distillation target (register A8)
    resnet_weights: str | None = None
    resnet_input_size: int | None = 224
    allow_download: bool = False
    # run
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    tf32: bool = False
    num_workers: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    eval_triplets: int = 1000

    def __post_init__(self) -> None:
        # Paths compare (resume check) and serialise as plain strings.
        self.images = str(self.images)
        if self.resnet_weights is not None:
            self.resnet_weights = str(self.resnet_weights)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work, before anything is computed."""
        lambdas = (self.lambda_k, self.lambda_m, self.lambda_c)
        if min(lambdas) < 0 or max(lambdas) <= 0:
            raise ValueError(
                f"loss weights must be >= 0 with at least one > 0, got lambda_k={self.lambda_k}, "
                f"lambda_m={self.lambda_m}, lambda_c={self.lambda_c}"
            )
        if self.iterations < 0 or self.batch_size < 2:
            raise ValueError(
                f"need iterations >= 0 and batch_size >= 2 (L_c needs a batch), got "
                f"{self.iterations} and {self.batch_size}"
            )
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.eval_triplets < 0:
            raise ValueError(f"eval_triplets must be >= 0, got {self.eval_triplets}")

    def net_config(self) -> NetConfig:
        return NetConfig(
            self.patch_size, self.d, self.variant, self.slope, self.act_on_descriptor, True
        )

    def loss_config(self) -> dict:
        return {
            "lambda_k": self.lambda_k,
            "lambda_m": self.lambda_m,
            "lambda_c": self.lambda_c,
            "margin": self.margin,
            "decorrelation_squared": self.decorrelation_squared,
            "decorrelation_normalized": self.decorrelation_normalized,
            "decorrelation_eps": self.decorrelation_eps,
            "decorrelation_on": "anchor descriptors",
            "resnet_input_size": self.resnet_input_size,
        }

    @classmethod
    def from_dict(cls, values: dict) -> TeacherConfig:
        """Build from a params.yaml section; unknown keys raise ValueError naming the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown teacher settings {unknown}; valid keys: {sorted(names)}")
        return cls(**values)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without a GPU raises ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} requested but CUDA is not available; use 'cpu' or 'auto'"
        )
    return torch.device(device)


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


@torch.no_grad()
def triplet_accuracy(
    net: PatchNet,
    triplets: PatchTriplets | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Fraction of triplets with ‖T̂(a) − T̂(p)‖² < ‖T̂(a) − T̂(n)‖² (strict), in [0, 1].

    ``triplets``: a :class:`PatchTriplets` (all its items) or three (N, 3, p, p) tensors in [0, 1].
    The network sees ImageNet-normalised input; its train/eval mode is restored afterwards.
    """
    if isinstance(triplets, PatchTriplets):
        n = len(triplets)
        get = lambda lo, hi: triplets.batch(range(lo, hi))  # noqa: E731
    else:
        a, p, neg = triplets
        if not (a.shape == p.shape == neg.shape) or a.dim() != 4:
            raise ValueError(
                "expected three (N, 3, p, p) tensors of equal shape, got "
                f"{tuple(a.shape)}, {tuple(p.shape)}, {tuple(neg.shape)}"
            )
        n = a.shape[0]
        get = lambda lo, hi: (a[lo:hi], p[lo:hi], neg[lo:hi])  # noqa: E731
    if n == 0:
        raise ValueError("triplet_accuracy needs at least one triplet")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    try:
        for lo in range(0, n, batch_size):
            xa, xp, xn = (x.to(device) for x in get(lo, min(lo + batch_size, n)))
            da, dp, dn = net(imagenet_normalize(torch.cat([xa, xp, xn]))).float().chunk(3)
            d_pos = (da - dp).pow(2).sum(1)
            d_neg = (da - dn).pow(2).sum(1)
            correct += int((d_pos < d_neg).sum())
    finally:
        net.train(was_training)
    return correct / n


def _sampler_kwargs(cfg: TeacherConfig) -> dict:
    return {
        "zoom": (cfg.zoom_min, cfg.zoom_max),
        "max_shift": cfg.max_shift,
        "luminance": (cfg.luminance_min, cfg.luminance_max),
        "noise_std": cfg.noise_std,
        "grayscale_prob": cfg.grayscale_prob,
        "heldout_fraction": cfg.heldout_fraction,
    }


def heldout_triplets(cfg: TeacherConfig, n: int | None = None) -> PatchTriplets:
    """The evaluation triplets of ``cfg``: ``n`` (default ``cfg.eval_triplets``) held-out triplets."""
    return PatchTriplets(
        cfg.images,
        cfg.patch_size,
        cfg.eval_triplets if n is None else n,
        split="heldout",
        seed=cfg.seed + EVAL_SEED_OFFSET,
        **_sampler_kwargs(cfg),
    )


def init_teacher(cfg: TeacherConfig) -> PatchNet:
    """The randomly initialised network of ``cfg`` (seeded; the caller's global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return PatchNet(cfg.net_config())


def compute_losses(
    net: PatchNet,
    target: nn.Module | None,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: TeacherConfig,
    autocast: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss (scalar tensor, differentiable) and its terms ``loss_k/m/c`` (NaN when off).

    ``batch``: anchor, positive, negative, each (B, 3, p, p) in [0, 1] on the network's device.
    Only the terms with λ > 0 are computed (positives/negatives are not even forwarded if λ_m = 0).
    """
    a, p, n = batch
    if cfg.lambda_k > 0 and target is None:
        raise ValueError(
            "lambda_k > 0 needs a distillation target (ust.method.distillation.DistillationTarget)"
        )
    nan = float("nan")
    with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=autocast):
        if cfg.lambda_m > 0:
            da, dp, dn = net(imagenet_normalize(torch.cat([a, p, n]))).float().chunk(3)
        else:  # positives and negatives are only needed by L_m
            da = net(imagenet_normalize(a)).float()
        total = da.new_zeros(())
        terms = {"loss_k": nan, "loss_m": nan, "loss_c": nan}
        if cfg.lambda_k > 0:
            lk = distillation_loss(net.decode(da).float(), target(a).float())
            total = total + cfg.lambda_k * lk
            terms["loss_k"] = lk.item()
        if cfg.lambda_m > 0:
            lm = triplet_loss(da, dp, dn, margin=cfg.margin)
            total = total + cfg.lambda_m * lm
            terms["loss_m"] = lm.item()
        if cfg.lambda_c > 0:
            lc = decorrelation_loss(
                da,
                squared=cfg.decorrelation_squared,
                eps=cfg.decorrelation_eps,
                normalized=cfg.decorrelation_normalized,
            )
            total = total + cfg.lambda_c * lc
            terms["loss_c"] = lc.item()
    return total, terms


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
        **_sampler_kwargs(cfg),
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


def load_teacher(path: str | os.PathLike, device: str | torch.device = "cpu") -> PatchNet:
    """Load a file written by :func:`pretrain` as a :class:`PatchNet` in eval mode on ``device``.

    The result is what :func:`ust.method.networks.dense_net` consumes; its ``decode`` head is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher file {str(path)!r} does not exist; train one with `ust teacher --out {path}`"
        )
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "state_dict" not in blob or "net_config" not in blob:
        raise ValueError(
            f"{str(path)!r} is not a teacher file (expected a dict with 'state_dict' and "
            "'net_config', as written by ust.method.teacher.pretrain); a .ckpt is a resume checkpoint"
        )
    net = PatchNet(NetConfig(**blob["net_config"]))
    net.load_state_dict(blob["state_dict"])
    return net.to(device).eval()
