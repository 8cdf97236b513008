"""Speed and memory of the exact AU-sPRO (ust.eval.spro) on a synthetic MVTec LOCO AD category.

The default category has the size of *pushpins* (310 test images of 1700×1000 pixels: 138 good,
81 structural, 91 logical; 5.3·10⁸ pixels), the smallest-to-largest LOCO test sets being 275–341
images of 1.3–2.0 megapixels. Maps are smooth float32 noise (bilinearly upsampled from a 1/32 grid)
plus a bump on part of every region. Structural images get 1-3 elliptical regions with ``s = |C|``;
logical images get a "missing object" rectangle with ``s`` = 10-40 % of its area or an "additional
object" pair of disjoint ellipses (one region) with ``s = |C| / 2``.

Timed, each on the same data:

* ``au_spro`` (limit 0.05: one sort, the sweep stops at FPR 0.05);
* ``spro_curve`` (one sort, the full sweep: what ``au_spro_limits`` integrates for all five limits;
  its length gives the number of distinct scores = thresholds);
* with ``--loco``, ``evaluate_loco`` (two subsets, two sorts);
* the literal reference: ``P = {score > t}`` for a few thresholds ``t`` with plain numpy over all
  images and regions; its time per threshold is extrapolated (labelled ``extrapolated``) to the
  number of distinct scores.

Memory is the ``tracemalloc`` peak during each call (inputs excluded), as in
``benchmarks/metrics_scale.py``; ``maxrss_mb`` is the process' resident-set peak (inputs included).
Prints one JSON object per line and writes them to ``--out``::

    python benchmarks/spro_speed.py                           # pushpins size: ~4.5 min, 8.3 GB RSS
    python benchmarks/spro_speed.py --height 500 --width 850 --loco --append  # half each side
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from metrics_scale import _measure  # benchmarks/ is on sys.path when run as a script
from scipy import ndimage

from ust.data.dataset import Region
from ust.eval.metrics import trapezoid
from ust.eval.spro import LIMITS, au_spro, evaluate_loco, spro_curve


def _ellipse(shape, rng, r_min: int, r_max: int) -> np.ndarray:
    """Bool mask of one axis-aligned ellipse, drawn only inside its bounding box."""
    h, w = shape
    ry, rx = rng.integers(r_min, r_max, 2)
    cy, cx = rng.integers(ry, h - ry), rng.integers(rx, w - rx)
    yy, xx = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    mask = np.zeros(shape, dtype=bool)
    mask[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1] = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
    return mask


def _regions(subset: str, shape, rng) -> list[Region]:
    h, w = shape
    if subset == "structural_anomalies":
        out = []
        for _ in range(rng.integers(1, 4)):
            mask = _ellipse(shape, rng, max(2, h // 100), max(3, h // 12))
            out.append(Region(mask, int(mask.sum()), "structural"))
        return out
    if rng.random() < 0.5:  # missing object: a whole compartment annotated, s = the object size
        mh, mw = rng.integers(h // 10, h // 3), rng.integers(w // 10, w // 3)
        y0, x0 = rng.integers(0, h - mh), rng.integers(0, w - mw)
        mask = np.zeros(shape, dtype=bool)
        mask[y0 : y0 + mh, x0 : x0 + mw] = True
        return [Region(mask, int(rng.uniform(0.1, 0.4) * mask.sum()), "missing")]
    mask = _ellipse(shape, rng, h // 40, h // 10) | _ellipse(shape, rng, h // 40, h // 10)
    return [Region(mask, int(mask.sum()) // 2, "additional")]


def synthetic_loco(counts: dict[str, int], height: int, width: int, seed: int):
    """(N, H, W) float32 maps, per-image region lists and subset names, good images first."""
    rng = np.random.default_rng(seed)
    subsets = [name for name, n in counts.items() for _ in range(n)]
    maps = np.empty((len(subsets), height, width), dtype=np.float32)
    regions: list[list[Region]] = []
    lh, lw = height // 32 + 2, width // 32 + 2
    for i, subset in enumerate(subsets):
        low = rng.random((lh, lw), dtype=np.float32)
        ndimage.zoom(low, (height / lh, width / lw), output=maps[i], order=1)
        image_regions = [] if subset == "good" else _regions(subset, (height, width), rng)
        for r in image_regions:
            # Raise the top rows of the region, about 1.5 times its saturation area.
            rows = np.cumsum(r.mask.sum(axis=1))
            part = r.mask.copy()
            part[int(np.searchsorted(rows, 1.5 * r.saturation)) + 1 :] = False
            maps[i][part] += np.float32(0.3)
        regions.append(image_regions)
    return maps, regions, subsets


def reference_seconds_per_threshold(maps, regions, thresholds) -> float:
    """Wall time per threshold of the literal definition: P = {score > t}, numpy counts."""
    unions = []
    for m, rs in zip(maps, regions, strict=True):
        union = np.zeros(m.shape, dtype=bool)
        for r in rs:
            union |= r.mask
        unions.append(union if rs else None)
    n_ok = sum(m.size - (0 if u is None else int(u.sum())) for m, u in zip(maps, unions))
    t0 = time.perf_counter()
    for t in thresholds:
        fp = 0
        spro_sum = 0.0
        k = 0
        for m, rs, union in zip(maps, regions, unions, strict=True):
            predicted = m > t
            fp += int(np.count_nonzero(predicted))
            if union is not None:
                fp -= int(np.count_nonzero(predicted & union))
            for r in rs:
                spro_sum += min(np.count_nonzero(predicted[r.mask]) / r.saturation, 1.0)
                k += 1
        _ = (fp / n_ok, spro_sum / k)
    return (time.perf_counter() - t0) / len(thresholds)


def _emit(result: dict, out) -> None:
    line = json.dumps(result)
    print(line, flush=True)
    out.write(line + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1000, help="image height (pushpins: 1000)")
    parser.add_argument("--width", type=int, default=1700, help="image width (pushpins: 1700)")
    parser.add_argument("--good", type=int, default=138)
    parser.add_argument("--structural", type=int, default=81)
    parser.add_argument("--logical", type=int, default=91)
    parser.add_argument("--ref-thresholds", type=int, default=3, help="thresholds the loop times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loco", action="store_true", help="also time evaluate_loco (2 sorts)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "spro_speed.json"
    )
    parser.add_argument("--append", action="store_true", help="append to --out, do not overwrite")
    args = parser.parse_args(argv)
    counts = {"good": args.good, "structural_anomalies": args.structural}
    counts["logical_anomalies"] = args.logical

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a" if args.append else "w") as out:
        _emit(
            {
                "benchmark": "environment",
                "numpy": np.__version__,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
            },
            out,
        )
        t0 = time.perf_counter()
        maps, regions, subsets = synthetic_loco(counts, args.height, args.width, args.seed)
        data = {
            "benchmark": "spro_data",
            "images": len(subsets),
            **{f"images_{k}": v for k, v in counts.items()},
            "height": args.height,
            "width": args.width,
            "pixels": int(maps.size),
            "regions": sum(len(rs) for rs in regions),
            "generate_seconds": round(time.perf_counter() - t0, 1),
            "maps_mb": round(maps.nbytes / 2**20, 1),
            "masks_mb": round(sum(r.mask.nbytes for rs in regions for r in rs) / 2**20, 1),
            "note": "pushpins test-set size and resolution (thesis Table 6.1) unless overridden",
        }
        _emit(data, out)
        memory = "tracemalloc peak during the call, inputs excluded"
        base = {"images": len(subsets), "pixels": int(maps.size)}

        main_value, seconds, peak = _measure(au_spro, maps, regions, integration_limit=0.05)
        _emit(
            {
                "benchmark": "au_spro",
                **base,
                "integration_limit": 0.05,
                "au_spro": round(main_value, 6),
                "seconds": round(seconds, 2),
                "peak_mb": round(peak, 1),
                "memory": memory,
            },
            out,
        )
        # The full curve (what au_spro_limits integrates) also gives the number of thresholds.
        (fpr, spro), seconds, peak = _measure(spro_curve, maps, regions)
        areas = {str(lim): trapezoid(fpr, spro, x_max=lim) / lim for lim in LIMITS}
        n_distinct = int(fpr.size) - 2
        _emit(
            {
                "benchmark": "spro_curve",
                **base,
                "distinct_scores": n_distinct,
                "curve_points": int(fpr.size),
                "au_spro": {k: round(v, 6) for k, v in areas.items()},
                "abs_diff_to_au_spro": abs(areas["0.05"] - main_value),
                "seconds": round(seconds, 2),
                "peak_mb": round(peak, 1),
                "memory": memory,
            },
            out,
        )
        del fpr, spro
        if args.loco:
            value, seconds, peak = _measure(evaluate_loco, maps, regions, subsets)
            _emit(
                {
                    "benchmark": "evaluate_loco",
                    **base,
                    "metrics": value,
                    "seconds": round(seconds, 2),
                    "peak_mb": round(peak, 1),
                    "memory": memory,
                },
                out,
            )

        # Thresholds in the FPR range that matters: upper quantiles of a fixed pixel sample.
        sample = maps.reshape(-1)[np.random.default_rng(args.seed).integers(0, maps.size, 10**6)]
        thresholds = np.quantile(sample, np.linspace(0.99, 0.999, args.ref_thresholds)).tolist()
        per_threshold = reference_seconds_per_threshold(maps, regions, thresholds)
        _emit(
            {
                "benchmark": "reference_loop",
                **base,
                "thresholds_timed": len(thresholds),
                "seconds_per_threshold": round(per_threshold, 3),
                "distinct_scores": n_distinct,
                "extrapolated": True,
                "extrapolated_seconds_all_thresholds": round(per_threshold * (n_distinct + 1)),
                "extrapolated_days_all_thresholds": round(per_threshold * (n_distinct + 1) / 86400),
            },
            out,
        )
        maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _emit({"benchmark": "process", "maxrss_mb": round(maxrss_kb / 1024, 1)}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
