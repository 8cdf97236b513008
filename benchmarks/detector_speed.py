"""Speed of the fused 3-scale detector on the CPU: eager PyTorch, TorchScript and ONNX Runtime.

Builds a detector from randomly initialised d = 128 teachers (p = 17, 33, 65) and untrained
students (speed does not depend on the weights, so no data is needed), exports it with
:func:`ust.detector.export.export_detector`, then times every (backend, batch) in its own
subprocess so that each peak memory is its own: images/s of one call on a (B, 3, S, S) batch after
one warm-up call at batch 1, and the peak resident memory of that process (``VmHWM``), which
includes the loaded model. Prints one JSON object.

    python benchmarks/detector_speed.py [--size 256] [--batches 1 8] [--threads 2] [--d 128]
        [--students 3] [--backends eager torchscript onnx] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BACKENDS = ("eager", "torchscript", "onnx")
PATCH_SIZES = (17, 33, 65)


def random_detector(d: int, students: int, size: int):
    """A calibrated-looking detector with random teachers and untrained students."""
    from ust.detector import Calibration, Detector, DetectorConfig
    from ust.method.networks import patch_net
    from ust.method.scoring import ScoreStats
    from ust.method.students import StudentTeacher, make_students

    models = {}
    for p in PATCH_SIZES:
        torch.manual_seed(p)
        teacher = patch_net(p, d=d)
        models[p] = StudentTeacher(teacher, make_students(teacher, students, seed=p))
        models[p].set_score_stats(ScoreStats(0.0, 1.0, 0.0, 1.0))
    config = DetectorConfig(patch_sizes=PATCH_SIZES, image_size=size, students=students)
    thresholds = {"max": 3.0, "quantile": 2.0, "k_sigma": 2.0, "max_area": 2.5}
    return Detector(models, config, Calibration(thresholds, 0.0, 3.0))


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB: ``VmHWM`` of /proc/self/status
    (``ru_maxrss`` would carry over the parent's peak across fork and exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_runner(backend: str, folder: Path, threads: int):
    """A function images → maps for ``backend``, with the model loaded."""
    torch.set_num_threads(threads)
    if backend == "eager":
        from ust.detector import Detector

        detector = Detector.load(folder / "detector.pt")
        return lambda x: detector.predict(x, batch_size=len(x)).maps
    if backend == "torchscript":
        module = torch.jit.load(str(folder / "detector.torchscript"))

        def run(x):
            with torch.no_grad():
                return module(x)[0]

        return run
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(folder / "detector.onnx"), options, providers=["CPUExecutionProvider"]
    )
    return lambda x: session.run(["anomaly_map"], {"images": x.numpy()})[0]


def worker(args: argparse.Namespace) -> None:
    """One (backend, batch) measurement; prints one JSON line."""
    folder = Path(args.model_dir)
    run = load_runner(args.worker, folder, args.threads)
    model_mb = rss_mb()
    size = args.size
    run(torch.rand(1, 3, size, size))  # warm-up: graph optimisation, allocator pools
    x = torch.rand(args.batch, 3, size, size)
    best = float("inf")
    for _ in range(args.reps):
        t = time.perf_counter()
        run(x)
        best = min(best, time.perf_counter() - t)
    result = {
        "backend": args.worker,
        "batch": args.batch,
        "seconds_per_batch": round(best, 3),
        "images_per_s": round(args.batch / best, 4),
        "rss_after_load_mb": round(model_mb, 1),
        "peak_rss_mb": round(rss_mb(), 1),
    }
    print(json.dumps(result))


def export_all(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Save the random detector and export it; returns seconds per export."""
    from ust.detector.export import export_detector

    torch.set_num_threads(args.threads)
    detector = random_detector(args.d, args.students, args.size)
    detector.save(folder / "detector.pt")
    seconds = {}
    for fmt in ("torchscript", "onnx"):
        t = time.perf_counter()
        export_detector(detector, folder / f"detector.{fmt}", fmt)
        seconds[fmt] = round(time.perf_counter() - t, 2)
    return seconds


def measure(folder: Path, args: argparse.Namespace, backend: str, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, "--model-dir", str(folder)]
    cmd += ["--batch", str(batch), "--size", str(args.size), "--threads", str(args.threads)]
    cmd += ["--reps", str(args.reps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"backend": backend, "batch": batch, "error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="network input side (pixels)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--d", type=int, default=128, help="descriptor dimension")
    parser.add_argument("--students", type=int, default=3, help="students per scale")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--reps", type=int, default=1, help="timed calls per measurement (best)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_seconds = export_all(folder, args)
        results = [measure(folder, args, b, n) for b in args.backends for n in args.batches]
    report = {
        "benchmark": "fused detector, CPU",
        "image_size": args.size,
        "patch_sizes": list(PATCH_SIZES),
        "d": args.d,
        "students_per_scale": args.students,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "export_seconds": export_seconds,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
