"""Triplets per second that teacher pretraining's DataLoader delivers from an ImageNet-layout JPEG folder.

Is pretraining input-bound on a GPU? A step at batch B consumes B triplets, so a GPU that runs
``N`` iterations/s needs ``B · N`` triplets/s (64 · N at the paper's batch 64) from the loader;
``benchmarks/gpu_speed.py`` measures N (``teacher_step``: the GPU alone, batches already on the
device). This script measures the other side on this machine.

1. It writes an ImageNet-layout folder ``<tmp>/train/<wnid>/<wnid>_<k>.JPEG`` (``--classes`` ×
   ``--per-class`` images, ImageNet-like sizes such as 500×375 and 375×500, JPEG quality 90), each a
   random crop (50–100 % of each side), rescale and mirror of a photograph of the offline pool:
   ``data/photo_pool`` when it exists (``python -m ust.stages.photo_pool``), else the bundled
   training photographs (:meth:`ust.data.patches.ImageSource.embedded`).
2. For every p of ``--p`` and worker count of ``--workers`` it builds the triplets and the loader
   with pretraining's own functions (``ust.train.teacher._build_inputs`` and ``_loader``: the same
   :class:`~ust.data.patches.PatchTriplets`, sampler, ``num_workers`` and ``pin_memory``; λ_m = λ_c
   = 1, λ_k = 0, batch ``--batch``), creates the iterator (worker start-up), draws a warm-up of
   ``--warmup`` batches per worker and then times ``--batches`` batches: triplets/s = batches ·
   batch / seconds. ``workers = 0`` samples in this process, often far slower (below), so it draws
   one warm-up batch and times ``--main-batches``. The loop does nothing with a batch, so this is
   the most the loader can deliver; a training step on the CPU would compete with the workers for
   the same cores.

Two cache modes (``--cache``), both the pretraining's own behaviour:

* ``auto``: a folder of at most ``AUTO_CACHE_MAX_IMAGES`` (2000) images is cached in memory as
  uint8, lazily, *in each loader process* (the workers fork before anything is read), so every
  worker decodes each image once, mostly during the warm-up; the timed batches are (almost) free of
  JPEG decoding. This is the photo pool's case.
* ``off``: the cache is off, as pretraining has it for a folder of more than 2000 images (ImageNet:
  1.28 M); every triplet decodes its two JPEGs (anchor/positive image and negative image), and the
  timed rate includes decoding. Simulated on the small folder by setting the threshold to 0.

Prints JSON lines (an ``environment`` line, a ``machine`` line, the folder, one ``triplet_rate``
line per (cache, p, workers), the CPU seconds used) and appends them to ``--out`` (the
``environment`` line is only printed: ``machine`` repeats it with the date and the cores). Worker
processes run with one torch thread (DataLoader's default); ``workers = 0`` samples in this process
with ``--threads`` threads, as pretraining does with ``teacher.num_workers: 0``. With more than one
thread the small batched matrix products of :func:`~ust.data.patches.zoomed_crop` go through the
intra-op thread pool, which on a busy machine costs milliseconds per crop; compare ``--threads 1``.

    python benchmarks/triplet_rate.py [--p 17 33 65] [--workers 0 1 2] [--cache auto off]
    python benchmarks/triplet_rate.py --tiny    # seconds; prints only, unless --out is given
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from student_ensemble import emit, start  # benchmarks/ is on sys.path when run as a script

import ust.data.patches as patches
from ust.method.teacher import TeacherConfig
from ust.paths import resolve
from ust.train.teacher import _build_inputs, _loader, _Placement, _Run

RESULTS = Path(__file__).resolve().parent / "results" / "triplet_rate.jsonl"
PHOTO_POOL = "data/photo_pool"
# (width, height) of typical ILSVRC2012 training images (most are 500 px on the long side).
IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 400), (500, 500))


def record(out: Path | None, **row) -> None:
    """Print the JSON line and append it to ``out`` (when given)."""
    emit(**row)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def photographs() -> tuple[str, list[np.ndarray]]:
    """(origin, HxWx3 uint8 photographs): the photo pool folder if built, else the bundled ones."""
    pool = resolve(PHOTO_POOL)
    if pool.is_dir() and patches.find_image_files(pool):
        source = patches.ImageSource.folder(pool, "all", cache=False)
    else:
        source = patches.ImageSource.embedded("train")
    return source.origin, [source[i].permute(1, 2, 0).numpy() for i in range(len(source))]


def write_imagenet_folder(root: Path, classes: int, per_class: int, seed: int) -> dict:
    """``root/train/<wnid>/<wnid>_<k>.JPEG``: random crops, rescales and mirrors of the photographs."""
    from PIL import Image

    origin, photos = photographs()
    rng = np.random.default_rng(seed)
    wnids = sorted({f"n{int(v):08d}" for v in rng.choice(10**8 - 10**7, classes, False) + 10**7})
    n_bytes = 0
    for wnid in wnids:
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for k in range(per_class):
            photo = photos[int(rng.integers(len(photos)))]
            h, w = photo.shape[:2]
            ch, cw = (int(rng.integers(s // 2, s + 1)) for s in (h, w))
            y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            image = Image.fromarray(photo[y : y + ch, x : x + cw])
            size = IMAGENET_SIZES[int(rng.integers(len(IMAGENET_SIZES)))]
            image = image.resize(size, Image.BICUBIC)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            path = folder / f"{wnid}_{k}.JPEG"
            image.save(path, format="JPEG", quality=90)
            n_bytes += path.stat().st_size
    return {
        "photographs": origin,
        "n_photographs": len(photos),
        "classes": len(wnids),
        "images": len(wnids) * per_class,
        "mean_kb": round(n_bytes / (len(wnids) * per_class) / 1024, 1),
    }


@contextlib.contextmanager
def cache_mode(mode: str):
    """``auto``: pretraining's threshold; ``off``: as for a folder above it (threshold 0)."""
    before = patches.AUTO_CACHE_MAX_IMAGES
    if mode == "off":
        patches.AUTO_CACHE_MAX_IMAGES = 0
    try:
        yield
    finally:
        patches.AUTO_CACHE_MAX_IMAGES = before


def pretraining_loader(cfg: TeacherConfig, device: torch.device):
    """(triplets, DataLoader) exactly as :func:`ust.train.teacher.pretrain` builds them for one
    process (no DDP) at step 0; the loader only reads the run's config, step, placement and DDP
    wrapper, so the network and optimiser are left out."""
    _, triplets, _ = _build_inputs(cfg, None, world=1)
    run = _Run(cfg, None, _Placement(device, None, False), None, None, None)
    return triplets, _loader(run, triplets)


def measure(folder: Path, args, p: int, workers: int, cache: str, device) -> dict:
    warmup = args.warmup * workers if workers else 1
    timed = args.batches if workers else args.main_batches
    cfg = TeacherConfig(
        patch_size=p,
        images=str(folder),
        lambda_k=0.0,
        lambda_m=1.0,
        lambda_c=1.0,
        iterations=warmup + timed,
        batch_size=args.batch,
        num_workers=workers,
        eval_triplets=0,
        device=device.type,
        seed=args.seed,
    )
    with cache_mode(cache):
        triplets, loader = pretraining_loader(cfg, device)
    cached = triplets.source._cache is not None
    t0 = time.perf_counter()
    batches = iter(loader)
    next(batches)
    t_first = time.perf_counter()
    for _ in range(warmup - 1):
        next(batches)
    t1 = time.perf_counter()
    for _ in range(timed):
        next(batches)
    seconds = time.perf_counter() - t1
    del batches  # shuts the workers down
    rate = timed * args.batch / seconds
    return {
        "benchmark": "triplet_rate",
        "device": str(device),
        "p": p,
        "batch": args.batch,
        "workers": workers,
        "cache": cache,
        "cached_in_memory": cached,
        "decoding_in_timed_batches": not cached,
        "train_images": len(triplets.source),
        "warmup_batches": warmup,
        "timed_batches": timed,
        "first_batch_s": round(t_first - t0, 2),
        "warmup_s": round(t1 - t0, 2),
        "seconds": round(seconds, 2),
        "triplets_per_s": round(rate, 1),
        "triplets_per_s_per_process": round(rate / max(1, workers), 1),
        "ms_per_batch": round(1e3 * seconds / timed, 1),
        "max_iterations_per_s": round(rate / args.batch, 2),
        "gpu_needs_triplets_per_s": f"{args.batch} * iterations_per_s",
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the loader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    args = parse_args()
    out = None if args.out == "" else Path(args.out)
    start(args.threads)  # prints the environment line (not appended: it has no date or cores)
    machine = {
        "benchmark": "machine",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "worker_threads": 1,
        "python": platform.python_version(),
        "start_method": torch.multiprocessing.get_start_method(),
        "cpu": platform.processor() or platform.machine(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "tiny": args.tiny,
    }
    record(out, **machine)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        info = write_imagenet_folder(Path(tmp), args.classes, args.per_class, args.seed)
        record(
            out,
            benchmark="triplet_rate_folder",
            layout="<tmp>/train/<wnid>/<wnid>_<k>.JPEG",
            jpeg_quality=90,
            seconds=round(time.perf_counter() - t, 1),
            **info,
        )
        for cache in args.cache:
            for p in args.p:
                for workers in args.workers:
                    row = measure(Path(tmp) / "train", args, p, workers, cache, device)
                    record(out, **row)
    record(out, benchmark="triplet_rate_cpu", cpu_seconds=round(cpu_seconds(), 1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", nargs="+", choices=["auto", "off"], default=["auto", "off"])
    parser.add_argument("--batch", type=int, default=64, help="triplets per batch (per GPU)")
    parser.add_argument("--batches", type=int, default=16, help="timed batches")
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches per worker")
    parser.add_argument(
        "--main-batches", type=int, default=4, help="timed batches for workers = 0 (warm-up: 1)"
    )
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--device", default="cpu", help="cuda: pinned memory, as pretraining")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=None, help=f"JSONL to append to (default {RESULTS}; '' for none)"
    )
    parser.add_argument("--tiny", action="store_true", help="seconds: p 17, tiny folder, no file")
    args = parser.parse_args()
    if args.tiny:
        args.p, args.workers, args.batch, args.batches, args.warmup = [17], [0, 1], 8, 2, 1
        args.main_batches = 1
        args.classes, args.per_class = 2, 4
        args.out = "" if args.out is None else args.out
    elif args.out is None:
        args.out = str(RESULTS)
    if min(args.warmup, args.batches, args.main_batches) < 1 or args.batch < 2:
        parser.error("need --warmup, --batches, --main-batches >= 1 and --batch >= 2")
    return args


if __name__ == "__main__":
    main()
