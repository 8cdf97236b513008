"""Speed of the dense networks T (multi-pooling) against patch-wise evaluation and a conv peak.

Prints one JSON line per (device, p): seconds per image for the dense network and for patch-wise
evaluation of all H·W windows (extrapolated from one batch of windows), the speed-up, the achieved
GFLOP/s of the dense network (useful work: 2 · MACs per pixel · H · W; "executed" also counts the
receptive-field overhang of the intermediate maps, which exact border outputs need), a convolution peak measured
in the same process (the best GFLOP/s of the network's own wide convolutions run alone on a large
regular map), and achieved/peak. Peak and dense timings are interleaved over several rounds and the
best of each is kept, so a busy machine affects both alike. A last line per device times a teacher
and M students on one shared input.

    python benchmarks/dense_speed.py [--size 256] [--rounds 3] [--threads 2] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import time

import torch

from ust.method.dense import dense_net
from ust.method.networks import macs_per_pixel, patch_net


def tune_malloc() -> bool:
    """Keep large buffers in glibc's heap instead of fresh mmaps (page faults on every forward)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, 1 << 31))
    except OSError:
        return False


def timed(fn, device: torch.device, reps: int = 2) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def conv_peak(net, device, map_side: int) -> tuple[float, float]:
    """Best GFLOP/s over the network's convolutions with ≥ 64 input channels, run alone."""
    best = 0.0
    fn_time = 0.0
    for m in net.features:
        if isinstance(m, torch.nn.Conv2d) and m.in_channels >= 64 and m.kernel_size[0] > 1:
            k = m.kernel_size[0]
            x = torch.randn(4, m.in_channels, map_side + k - 1, map_side + k - 1, device=device)
            x = x.contiguous(memory_format=torch.channels_last)
            t = timed(lambda m=m, x=x: m(x), device)
            flops = 2 * m.in_channels * m.out_channels * k * k * 4 * map_side**2
            if flops / t > best:
                best, fn_time = flops / t, t
    return best / 1e9, fn_time


def executed_macs(net, dense, image) -> int:
    """Multiply-accumulates the dense pass really executes (its maps overhang the image by the
    receptive field: border outputs need features of the padding)."""
    total = 0

    def hook(module, _inputs, out):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += out.numel() * module.in_channels * k

    handles = [
        m.register_forward_hook(hook) for m in net.features if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.inference_mode():
        dense(image)
    for h in handles:
        h.remove()
    return total


def run(device: torch.device, size: int, rounds: int, window_batch: int, students: int) -> None:
    for p in (17, 33, 65):
        torch.manual_seed(0)
        net = patch_net(p).to(device).eval()
        dense = dense_net(net)
        image = torch.randn(1, 3, size, size, device=device)
        windows = torch.randn(window_batch, 3, p, p, device=device)
        flops = 2 * macs_per_pixel(net) * size * size
        peak, t_dense = 0.0, float("inf")
        with torch.inference_mode():
            for _ in range(rounds):
                peak = max(peak, conv_peak(net, device, map_side=64)[0])
                t_dense = min(t_dense, timed(lambda d=dense, x=image: d(x), device))
            t_win = timed(lambda m=net, x=windows: m(x), device)
        t_patch = t_win / window_batch * size * size
        achieved = flops / t_dense / 1e9
        executed = 2 * executed_macs(net, dense, image) / t_dense / 1e9
        print(
            json.dumps(
                {
                    "benchmark": "dense_speed",
                    "device": str(device),
                    "p": p,
                    "image": size,
                    "dense_s_per_image": round(t_dense, 4),
                    "patchwise_s_per_image": round(t_patch, 2),
                    "speedup": round(t_patch / t_dense, 1),
                    "achieved_gflops": round(achieved, 1),
                    "conv_peak_gflops": round(peak, 1),
                    "achieved_over_peak": round(achieved / peak, 3),
                    "executed_gflops": round(executed, 1),
                    "executed_over_peak": round(executed / peak, 3),
                    "macs_per_pixel": macs_per_pixel(net),
                }
            ),
            flush=True,
        )

    # A teacher and its M students read the same image: one input preparation, M + 1 passes.
    torch.manual_seed(0)
    nets = [dense_net(patch_net(65).to(device).eval()) for _ in range(students + 1)]
    image = torch.randn(1, 3, size, size, device=device)
    with torch.inference_mode():
        t_all = min(timed(lambda: [n(image) for n in nets], device) for _ in range(rounds))
    print(
        json.dumps(
            {
                "benchmark": "dense_ensemble",
                "device": str(device),
                "p": 65,
                "image": size,
                "networks": students + 1,
                "s_per_image": round(t_all, 3),
                "images_per_s": round(1 / t_all, 3),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--window-batch", type=int, default=512, help="windows per patch-wise batch"
    )
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    parser.add_argument(
        "--no-malloc-tune", action="store_true", help="keep glibc's default mmap threshold"
    )
    args = parser.parse_args()
    tuned = False if args.no_malloc_tune else tune_malloc()
    torch.set_num_threads(args.threads)
    print(
        json.dumps(
            {
                "benchmark": "environment",
                "torch": torch.__version__,
                "threads": args.threads,
                "cpu": platform.processor() or platform.machine(),
                "malloc_tuned": tuned,
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            }
        ),
        flush=True,
    )
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        devices.append(torch.device("cuda"))
    for device in devices:
        run(device, args.size, args.rounds, args.window_batch, args.students)


if __name__ == "__main__":
    main()
