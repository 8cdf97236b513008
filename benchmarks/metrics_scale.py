"""Scale benchmark of ust.eval.metrics on a synthetic "full MVTec category".

Builds N float32 anomaly maps of S×S pixels (default 100 × 1024², i.e. ~1e8 pixels, about the
size of the largest MVTec AD test sets at ground-truth resolution) with blob-shaped ground-truth
masks (30 % of the images anomaly-free), then times :func:`ust.eval.metrics.au_pro` and
:func:`ust.eval.metrics.pixel_roc_auc` (validation, labelling and flattening included).

Memory is the ``tracemalloc`` peak of the allocations made during each call (numpy registers its
buffers with tracemalloc, so the sort indices and temporaries are counted); the input arrays,
allocated before tracing starts, are not included. ``maxrss_mb`` is the process' resident-set peak
(``resource.getrusage``), which does include the inputs.

Prints one JSON line, e.g.::

    python benchmarks/metrics_scale.py --images 100 --size 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc

import numpy as np

from ust.eval.metrics import au_pro, pixel_roc_auc


def synthetic_category(n_images: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S) float32 maps and (N, S, S) uint8 masks with 1-3 elliptical blobs per defect image."""
    rng = np.random.default_rng(seed)
    maps = np.empty((n_images, size, size), dtype=np.float32)
    masks = np.zeros((n_images, size, size), dtype=np.uint8)
    yy, xx = np.ogrid[:size, :size]
    for i in range(n_images):
        if i >= int(0.3 * n_images):  # the first 30 % are anomaly-free
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(0, size, 2)
                ry, rx = rng.integers(max(2, size // 200), max(3, size // 12), 2)
                masks[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = 1
        rng.random((size, size), dtype=np.float32, out=maps[i])
        maps[i] += np.float32(0.4) * masks[i]
    return maps, masks


def _measure(fn, *args, **kwargs) -> tuple[float, float, float]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, seconds, peak / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="number of images (default 100)")
    parser.add_argument(
        "--size", type=int, default=1024, help="image side in pixels (default 1024)"
    )
    parser.add_argument("--limit", type=float, default=0.3, help="AU-PRO integration limit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pixel-auroc", action="store_true", help="only time au_pro")
    args = parser.parse_args(argv)

    maps, masks = synthetic_category(args.images, args.size, args.seed)
    value, seconds, peak_mb = _measure(au_pro, maps, masks, integration_limit=args.limit)
    result = {
        "benchmark": "au_pro",
        "images": args.images,
        "size": args.size,
        "pixels": int(maps.size),
        "integration_limit": args.limit,
        "au_pro": round(value, 6),
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_mb, 1),
        "input_mb": round((maps.nbytes + masks.nbytes) / 2**20, 1),
        "memory": "tracemalloc peak during the call, inputs excluded",
    }
    if not args.skip_pixel_auroc:
        value, seconds, peak_mb = _measure(pixel_roc_auc, maps, masks)
        result.update(
            pixel_auroc=round(value, 6),
            pixel_auroc_seconds=round(seconds, 2),
            pixel_auroc_peak_mb=round(peak_mb, 1),
        )
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["maxrss_mb"] = round(maxrss_kb / 1024, 1)  # Linux reports KiB
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
