"""Speed and memory of the MVTec student-teacher models (random weights: speed does not depend on them).

For each receptive field p and each device (CPU, plus CUDA when available) it prints one JSON line:

* ``train_images_per_s``: optimisation steps per second of ONE student at batch 1 (forward,
  backward, Adam step; targets precomputed, as in :func:`ust.train.students.train_students`). An epoch of
  an M-student ensemble on N images takes N·M / this value seconds.
* ``inference_images_per_s``: images per second through the teacher + M students (raw e and v maps,
  :meth:`ust.method.students.StudentTeacher.raw_scores`) at batch 1 under ``torch.inference_mode()``.

Then one line per device with the peak memory of 3-scale inference (3 teachers + 3 × M students,
p = 17, 33, 65, one image, maps normalised and fused): ``peak_rss_mb`` is the resident-set peak
(``resource.getrusage``) of a fresh subprocess that only does this, ``cuda_max_allocated_mb`` the
``torch.cuda.max_memory_allocated`` peak.

    python benchmarks/mvtec_speed.py                     # 256 px, as in the paper
    python benchmarks/mvtec_speed.py --image-size 128    # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time

import torch

from ust.method.networks import PATCH_SIZES, macs_per_pixel, patch_net
from ust.method.scoring import ScoreStats, fuse_multiscale, normalized_score
from ust.method.students import StudentTeacher, make_students, student_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(p: int, students: int, device: torch.device) -> StudentTeacher:
    torch.manual_seed(p)
    teacher = patch_net(p)
    return StudentTeacher(teacher, make_students(teacher, students, seed=p)).to(device)


def _timed(fn, n: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (mean over ``n`` calls after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / n


def bench_scale(p: int, args, device: torch.device) -> dict:
    model = _model(p, args.students, device)
    image = torch.rand(1, 3, args.image_size, args.image_size, device=device)
    with torch.inference_mode():
        target = model.targets(image)
    target = target.clone()  # inference tensors cannot enter autograd
    student = model.students[0]
    opt = torch.optim.Adam(student.parameters(), lr=1e-4, weight_decay=1e-5)
    model.train()

    def train_step() -> None:
        loss = student_loss(model.student_prediction(0, image), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_train = _timed(train_step, args.iters, args.warmup, device)
    model.eval()

    def infer() -> None:
        with torch.inference_mode():
            model.raw_scores(image)

    t_infer = _timed(infer, args.iters, args.warmup, device)
    return {
        "benchmark": "mvtec_speed",
        "device": str(device),
        "p": p,
        "image_size": args.image_size,
        "students": args.students,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "gmacs_per_network_image": macs_per_pixel(model.teacher) * args.image_size**2 / 1e9,
        "train_images_per_s": 1.0 / t_train,
        "inference_images_per_s": 1.0 / t_infer,
    }


def _three_scale_inference(image_size: int, students: int, device_name: str, queue) -> None:
    """Child process: 3 teachers + 3·M students on one image; reports its own memory peaks."""
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    models = [_model(p, students, device) for p in PATCH_SIZES]
    stats = ScoreStats(0.0, 1.0, 0.0, 1.0)
    image = torch.rand(1, 3, image_size, image_size, device=device)
    with torch.inference_mode():
        fused = fuse_multiscale([normalized_score(*m.raw_scores(image), stats) for m in models])
        _sync(device)
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mb = ru / 2**20 if sys.platform == "darwin" else ru / 1024
    queue.put(
        {
            "benchmark": "mvtec_speed_memory",
            "device": str(device),
            "image_size": image_size,
            "networks": 3 * (1 + students),
            "map_shape": list(fused.shape),
            "peak_rss_mb": rss_mb,
            "cuda_max_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda"
            else None,
        }
    )


def bench_memory(args, device: torch.device) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process: its RSS peak holds only this measurement
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_three_scale_inference, args=(args.image_size, args.students, str(device), queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--students", type=int, default=3, help="students per scale (M)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--p", type=int, nargs="*", default=list(PATCH_SIZES), help="patch sizes")
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(
        json.dumps(
            {
                "benchmark": "mvtec_speed_env",
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            }
        ),
        flush=True,
    )
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        for p in args.p:
            print(json.dumps(bench_scale(p, args, device)), flush=True)
        print(json.dumps(bench_memory(args, device)), flush=True)


if __name__ == "__main__":
    main()
