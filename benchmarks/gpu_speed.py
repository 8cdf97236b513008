"""GPU speed of the method: fused 3-scale inference, teacher and student training, against the
GPU's own bf16 matrix-product rate measured in the same process.

Prints one JSON line per measurement, each guarded so that one failure is recorded (``"error"``)
and the next measurement still runs; measurements that would start after ``--budget`` seconds are
recorded as ``"skipped"``:

* ``environment``: torch, CUDA, the GPU, the TF32 flags as found.
* ``bf16_matmul``: the rate of an N×N×N bf16 matrix product (TFLOP/s, median of timed products on
  random data after warm-ups): the peak that ``achieved_over_bf16_peak`` divides by.
* ``detector_inference``: the fused 3-scale detector (p = 17, 33, 65, one teacher and M students
  each, d = 128, random weights: speed does not depend on them) on S×S images already zoomed, ẽ + ṽ
  of every scale and their mean, all on the device. Per (precision, batch, mode): images/s, ms per
  batch, achieved TFLOP/s (useful work: 2 · MACs per pixel · S² · B over the 3·(M + 1) networks),
  achieved/bf16 peak and the peak GPU memory of the variant. Precisions: ``fp32`` (TF32 off),
  ``tf32`` (TF32 convolutions and matmuls), ``bf16`` (autocast); the dense networks run
  channels-last (their default). Modes: ``eager``, ``cuda_graph`` (one captured replay; CUDA only)
  and ``compile`` (``torch.compile``, default mode; last, as it is the slowest to prepare).
  ``rel_l2_vs_fp32``: ‖map − map_fp32‖ / ‖map_fp32‖ of the same input (the bf16 tolerance of
  docs/decisions.md is checked on trained models by tests/test_cuda.py).
* ``teacher_step``: optimiser steps/s of one teacher per p at batch 64 triplets (L_m + L_c, Adam),
  batches already on the device (the GPU's side of pretraining), fp32 and bf16 autocast.
* ``triplet_sampling``: ms per batch of 64 triplets drawn on one CPU core (the host's side of
  pretraining; the loader's workers divide it).
* ``teacher_pretrain``: iterations/s of :func:`ust.train.teacher.pretrain` itself (sampling in
  ``--workers`` loader processes, the optimiser on the device).
* ``student_training``: images/s of :func:`ust.train.students.train_students` for M students of one
  scale at batch 1 (the paper's), per p and image side; ``ms_per_student_step`` = 1000 / (M ·
  images/s), the unit of the evidence run's cost model (benchmarks/gpu_evidence.py).

``--tiny`` runs the same code on the CPU at tiny sizes (seconds), to exercise it without a GPU.

    python benchmarks/gpu_speed.py [--tiny] [--device cuda|cpu] [--budget 90] [--workers 12]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `ust` without an install

from ust.data.transforms import imagenet_normalize  # noqa: E402
from ust.method.dense import dense_net  # noqa: E402
from ust.method.networks import macs_per_pixel, patch_net  # noqa: E402
from ust.method.scoring import (  # noqa: E402
    ScoreStats,
    normalized_score,
    predictive_variance,
    regression_error,
)
from ust.method.students import StudentTeacher, fit_target_statistics, make_students  # noqa: E402

PATCH_SIZES = (17, 33, 65)


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (full on the GPU, tiny on the CPU)."""

    image: int  # detector inference side S, pixels
    batches: tuple[int, ...]  # detector inference batch sizes
    d: int  # descriptor dimension
    students: int  # M per scale
    matmul: int  # side N of the bf16 matrix product
    teacher_batch: int  # triplets per teacher step
    teacher_steps: int  # timed teacher steps
    pretrain_iterations: int  # iterations of the real pretraining loop
    train_images: tuple[int, ...]  # student training image sides
    train_count: int  # images per timed student epoch
    reps: int  # timed repetitions (median)
    warmup: int  # untimed calls first
    compile_backend: str  # torch.compile backend ("inductor"; "eager" only traces: tiny runs)
    train_patch_sizes: tuple[int, ...]  # p of the training measurements
    compile_need_s: float  # budget left that a compiled variant needs to start (compile time)


FULL = Sizes(
    256, (1, 16), 128, 3, 8192, 64, 20, 300, (128, 256), 8, 5, 2, "inductor", PATCH_SIZES, 45.0
)
TINY = Sizes(16, (1,), 8, 2, 128, 4, 1, 2, (16,), 1, 1, 1, "eager", (17,), 0.0)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds: CUDA events on the GPU, the host clock on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last :func:`reset_peak`, MiB (None on the CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def precision(name: str, device: torch.device):
    """``fp32``: TF32 off; ``tf32``: TF32 on; ``bf16``: TF32 on and bf16 autocast. Restores the
    flags afterwards."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = name != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ------------------------------------------------------------------------------------- peak
def bf16_matmul(device: torch.device, n: int, reps: int) -> dict:
    """TFLOP/s of an n×n×n bf16 product on fresh random data (never zeros, which run faster)."""
    a = torch.randn(n, n, device=device).to(torch.bfloat16)
    b = torch.randn(n, n, device=device).to(torch.bfloat16)
    seconds = median_seconds(lambda: a @ b, device, reps, warmup=3)
    return {"n": n, "seconds": round(seconds, 6), "tflops": round(2 * n**3 / seconds / 1e12, 2)}


# --------------------------------------------------------------------------- detector inference
@dataclass
class Scale:
    """One scale of the fused detector: the model (μ/σ), its e/v statistics, and the dense
    networks of its teacher and students (sharing the model's parameters)."""

    model: StudentTeacher
    stats: ScoreStats
    teacher: torch.nn.Module
    students: list[torch.nn.Module]


def random_scales(sizes: Sizes, device: torch.device) -> dict[int, Scale]:
    """Per p a random teacher with μ/σ fitted on one random image and M untrained students."""
    scales = {}
    for p in PATCH_SIZES:
        torch.manual_seed(p)
        teacher = patch_net(p, d=sizes.d)
        model = StudentTeacher(teacher, make_students(teacher, sizes.students, seed=p)).to(device)
        fit_target_statistics(model, torch.rand(1, 3, sizes.image, sizes.image), batch_size=1)
        model.eval()
        students = [dense_net(s) for s in model.students]
        scales[p] = Scale(model, ScoreStats(0.0, 1.0, 0.0, 1.0), dense_net(model.teacher), students)
    return scales


def fused_normalized(scales: dict[int, Scale], x: torch.Tensor) -> torch.Tensor:
    """Mean over scales of ẽ + ṽ for ImageNet-normalised images (B, 3, S, S) → (B, S, S), all on
    x's device with no host transfer (so that it can be captured as a CUDA graph; the model's own
    ``raw_scores`` normalises with tensors built from Python lists, a host-to-device copy)."""
    maps = []
    with torch.no_grad():
        for scale in scales.values():
            target = scale.model.normalize_features(scale.teacher(x))
            preds = torch.stack([s(x) for s in scale.students])
            e, v = regression_error(preds, target), predictive_variance(preds)
            maps.append(normalized_score(e, v, scale.stats).float())
    return torch.stack(maps).mean(0)


def fused_maps(scales: dict[int, Scale], x: torch.Tensor) -> torch.Tensor:
    """:func:`fused_normalized` of images (B, 3, S, S) in [0, 1]."""
    return fused_normalized(scales, imagenet_normalize(x))


def graphed(fn, x: torch.Tensor):
    """``fn`` captured once as a CUDA graph on the static input ``x``; returns a replay function
    whose result is the graph's static output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the capture (cuDNN picks its algorithms here)
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(x)

    def replay():
        graph.replay()
        return out

    return replay


def inference_runner(mode: str, scales, x: torch.Tensor, prec: str, backend: str):
    """A zero-argument function computing the fused maps of ``x`` in ``mode`` under ``prec``
    (the graph's input is normalised once before the capture; eager and compiled runs normalise
    on every call)."""

    def eager(inp):
        with torch.inference_mode(), precision(prec, x.device):
            return fused_maps(scales, inp)

    if mode == "eager":
        return lambda: eager(x)
    if mode == "cuda_graph":
        if x.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        with precision(prec, x.device):
            return graphed(lambda inp: fused_normalized(scales, inp), imagenet_normalize(x))
    compiled = torch.compile(lambda inp: fused_maps(scales, inp), dynamic=False, backend=backend)

    def run():
        with torch.inference_mode(), precision(prec, x.device):
            return compiled(x)

    return run


def inference_record(scales, sizes, device, prec, batch, mode, peak_tflops, ref) -> dict:
    """One ``detector_inference`` line; ``ref`` maps batch → fp32 eager maps (filled here)."""
    torch.manual_seed(batch)
    x = torch.rand(batch, 3, sizes.image, sizes.image, device=device)
    reset_peak(device)
    run = inference_runner(mode, scales, x, prec, sizes.compile_backend)
    out = run().float().clone()
    if prec == "fp32" and mode == "eager":
        ref[batch] = out
    seconds = median_seconds(run, device, sizes.reps, sizes.warmup)
    macs = sum(macs_per_pixel(sc.model.teacher) * (sc.model.m + 1) for sc in scales.values())
    flops = 2 * macs * sizes.image**2 * batch
    record = {
        "benchmark": "detector_inference",
        "device": str(device),
        "precision": prec,
        "mode": mode,
        "batch": batch,
        "image": sizes.image,
        "students": sizes.students,
        "channels_last": True,
        **({"compile_backend": sizes.compile_backend} if mode == "compile" else {}),
        "ms_per_batch": round(seconds * 1e3, 3),
        "images_per_s": round(batch / seconds, 2),
        "achieved_tflops": round(flops / seconds / 1e12, 3),
        "peak_gpu_mb": peak_mb(device),
    }
    if peak_tflops:
        record["achieved_over_bf16_peak"] = round(flops / seconds / 1e12 / peak_tflops, 4)
    if batch in ref:
        diff = torch.linalg.vector_norm(out - ref[batch]) / torch.linalg.vector_norm(ref[batch])
        record["rel_l2_vs_fp32"] = float(f"{float(diff):.3g}")
    return record


# ------------------------------------------------------------------------------------ teachers
def teacher_step_rate(p: int, sizes: Sizes, device: torch.device, bf16: bool) -> dict:
    """Steps/s of one teacher (L_m + L_c, Adam) on batches already on the device."""
    from ust.method.teacher import TeacherConfig, compute_losses

    torch.manual_seed(p)
    cfg = TeacherConfig(patch_size=p, lambda_k=0.0, lambda_m=1.0, lambda_c=1.0, device=device.type)
    net = patch_net(p).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = tuple(torch.rand(sizes.teacher_batch, 3, p, p, device=device) for _ in range(3))

    def step():
        loss, _ = compute_losses(net, None, batch, cfg, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak(device)
    seconds = median_seconds(step, device, sizes.teacher_steps, sizes.warmup)
    return {
        "benchmark": "teacher_step",
        "device": str(device),
        "p": p,
        "batch": sizes.teacher_batch,
        "precision": "bf16" if bf16 else "default",
        "iterations_per_s": round(1 / seconds, 2),
        "peak_gpu_mb": peak_mb(device),
    }


def teacher_images(tiny: bool) -> str:
    """The carried photo pool when there is one (no bundled file is read on the GPU machine),
    else the bundled photographs."""
    pool = Path(__file__).resolve().parents[1] / "build" / "gpu_data" / "photo_pool"
    return str(pool) if pool.is_dir() and not tiny else "embedded"


def triplet_sampling(p: int, sizes: Sizes, tiny: bool) -> dict:
    """ms per batch of triplets drawn in this process (one core), images already decoded."""
    from ust.data.patches import PatchTriplets
    from ust.method.teacher import TeacherConfig, sampler_kwargs

    cfg = TeacherConfig(patch_size=p, images=teacher_images(tiny))
    b = sizes.teacher_batch
    triplets = PatchTriplets(cfg.images, p, 4 * b, split="train", seed=0, **sampler_kwargs(cfg))
    for i in range(b):  # decodes every image once
        triplets[i]
    t = time.perf_counter()
    for i in range(b, 3 * b):
        triplets[i]
    ms = (time.perf_counter() - t) / 2 * 1e3
    return {"benchmark": "triplet_sampling", "p": p, "batch": b, "ms_per_batch": round(ms, 1)}


def teacher_pretrain(p: int, sizes: Sizes, device: torch.device, workers: int, tiny: bool) -> dict:
    """Iterations/s of the real pretraining loop (:func:`ust.train.teacher.pretrain`)."""
    from ust.method.teacher import TeacherConfig
    from ust.train.teacher import pretrain

    n = sizes.pretrain_iterations
    cfg = TeacherConfig(
        patch_size=p,
        images=teacher_images(tiny),
        lambda_k=0.0,
        lambda_m=1.0,
        lambda_c=1.0,
        iterations=n,
        batch_size=sizes.teacher_batch,
        device=device.type,
        num_workers=workers,
        eval_triplets=0,
        checkpoint_every=n,
        log_every=n,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = pretrain(cfg, Path(tmp) / "teacher.pt", progress=False)
        total = time.perf_counter() - t
    return {
        "benchmark": "teacher_pretrain",
        "device": str(device),
        "p": p,
        "batch": sizes.teacher_batch,
        "iterations": n,
        "workers": workers,
        "images": "photo_pool" if cfg.images != "embedded" else "embedded",
        "iterations_per_s": round(summary["iterations_per_s"], 2),
        "call_seconds": round(total, 2),
    }


# ------------------------------------------------------------------------------------ students
def student_training(p: int, side: int, sizes: Sizes, device: torch.device) -> dict:
    """Images/s of one timed epoch of :func:`train_students` (M students, batch 1), after a
    warm-up epoch on the same images."""
    from ust.train.students import StudentTrainingConfig, train_students

    torch.manual_seed(p)
    teacher = patch_net(p, d=sizes.d)
    model = StudentTeacher(teacher, make_students(teacher, sizes.students, seed=p)).to(device)
    images = torch.rand(sizes.train_count, 3, side, side)
    fit_target_statistics(model, images, batch_size=4)
    config = StudentTrainingConfig(epochs=1, batch_size=1)
    train_students(model, images[:1], config, progress=False)  # warm-up: kernels, allocator
    reset_peak(device)
    sync(device)
    t = time.perf_counter()
    train_students(model, images, config, progress=False)
    sync(device)
    seconds = time.perf_counter() - t
    rate = sizes.train_count / seconds
    return {
        "benchmark": "student_training",
        "device": str(device),
        "p": p,
        "image": side,
        "students": sizes.students,
        "batch": 1,
        "images_per_s": round(rate, 3),
        "ms_per_student_step": round(1e3 / (rate * sizes.students), 3),
        "peak_gpu_mb": peak_mb(device),
    }


# ------------------------------------------------------------------------------------- driver
class Guard:
    """Runs measurements in order: a failure prints an ``error`` line, a measurement that would
    start after the budget prints a ``skipped`` line; either way the next one runs."""

    def __init__(self, budget: float):
        self.t0, self.budget = time.perf_counter(), budget

    def value(self, label: dict, fn, need: float = 0.0):
        """``fn()``, or ``None`` after printing why it did not run (fewer than ``need`` seconds
        of the budget left) or failed."""
        elapsed = time.perf_counter() - self.t0
        if elapsed + need > self.budget:
            emit({**label, "skipped": f"budget of {self.budget:.0f} s spent ({elapsed:.0f} s)"})
            return None
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - recorded, the next measurement still runs
            last = traceback.format_exc().strip().splitlines()[-1]
            emit({**label, "error": f"{type(err).__name__}: {err}"[:400], "where": last[:200]})
            return None

    def __call__(self, label: dict, fn, need: float = 0.0) -> dict | None:
        """Run a measurement and print its record."""
        record = self.value(label, fn, need)
        if record is not None:
            emit(record)
        return record


def environment(device: torch.device, args) -> dict:
    """The first line: versions, the device, the TF32 flags as found, the budget."""
    cuda = device.type == "cuda"
    return {
        "benchmark": "environment",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul_default": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn_default": torch.backends.cudnn.allow_tf32,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "tiny": args.tiny,
        "budget_s": args.budget,
    }


def inference(guard: Guard, scales, sizes: Sizes, device, modes, peak, ref) -> None:
    """``detector_inference`` lines for every precision and batch in each of ``modes``
    (``compile`` in bf16 only: it is the slowest to prepare)."""
    for mode in modes:
        precisions = ("bf16",) if mode == "compile" else ("fp32", "tf32", "bf16")
        for batch in sizes.batches:
            for prec in precisions:
                label = {"benchmark": "detector_inference", "precision": prec, "batch": batch}
                guard(
                    {**label, "mode": mode},
                    lambda b=batch, pr=prec, m=mode: inference_record(
                        scales, sizes, device, pr, b, m, peak, ref
                    ),
                    need=sizes.compile_need_s if mode == "compile" else 0.0,
                )
        if device.type == "cuda":
            torch.cuda.empty_cache()  # captured graphs and compiled kernels keep pools


def training(guard: Guard, sizes: Sizes, device, workers: int, tiny: bool) -> None:
    """Student and teacher training lines (the rates the evidence run's cost model reads)."""
    for p in sizes.train_patch_sizes:
        for side in sizes.train_images:
            label = {"benchmark": "student_training", "p": p, "image": side}
            guard(label, lambda p=p, s=side: student_training(p, s, sizes, device))
    for p in sizes.train_patch_sizes:
        for bf16 in (False, True):
            label = {"benchmark": "teacher_step", "p": p, "bf16": bf16}
            guard(label, lambda p=p, b=bf16: teacher_step_rate(p, sizes, device, b))
        label = {"benchmark": "triplet_sampling", "p": p}
        guard(label, lambda p=p: triplet_sampling(p, sizes, tiny))
        label = {"benchmark": "teacher_pretrain", "p": p}
        guard(label, lambda p=p: teacher_pretrain(p, sizes, device, workers, tiny))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (seconds)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--budget", type=float, default=110.0, help="seconds; later parts skip")
    parser.add_argument("--workers", type=int, default=min(12, max(0, (os.cpu_count() or 1) - 2)))
    args = parser.parse_args()
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    sizes = TINY if args.tiny else FULL
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    emit(environment(device, args))
    guard = Guard(args.budget)
    peak = guard(
        {"benchmark": "bf16_matmul"},
        lambda: {
            "benchmark": "bf16_matmul",
            "device": str(device),
            **bf16_matmul(device, sizes.matmul, sizes.reps),
        },
    )
    peak_tflops = peak["tflops"] if peak else None
    scales = guard.value({"benchmark": "detector_setup"}, lambda: random_scales(sizes, device))
    ref: dict[int, torch.Tensor] = {}
    if scales is not None:  # eager first: the headline numbers, and the fp32 reference maps
        inference(guard, scales, sizes, device, ["eager"], peak_tflops, ref)
    training(guard, sizes, device, 0 if args.tiny else args.workers, args.tiny)
    if scales is not None:
        later = (["cuda_graph"] if device.type == "cuda" else []) + ["compile"]
        inference(guard, scales, sizes, device, later, peak_tflops, ref)
    emit({"benchmark": "done", "seconds": round(time.perf_counter() - guard.t0, 1)})


if __name__ == "__main__":
    main()
