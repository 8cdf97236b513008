"""``ust export``: the fitted detector as one TorchScript or ONNX graph, thresholds beside it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPORT_HELP = (
    "Writes one graph from a float32 tensor 'images' (B, 3, H, W) in [0, 1] (RGB; the input "
    "Detector.predict takes) to 'anomaly_map' (B, H, W), the fused anomaly map at the input "
    "resolution (first output), and 'image_score' (B,), its maximum. Inside the graph the images "
    "are zoomed to the detector's image size (antialiased bilinear), scored at every receptive "
    "field, fused and zoomed back. Input sizes: batch, height and width are dynamic by default "
    "(any H, W >= 1; the networks always run at the fixed image size); --fixed-size H W exports an "
    "ONNX graph with a static H x W instead (batch stays dynamic). Thresholds stay outside the "
    "graph, in <out>.thresholds.json (rule, threshold, all thresholds, colour range), so they can "
    "be recalibrated without exporting again: a pixel is anomalous if anomaly_map > threshold, an "
    "image if image_score > threshold. ONNX uses opset 17 and runs on onnxruntime; TorchScript "
    "loads with torch.jit.load. --check runs the exported graph once on CPU and prints its largest "
    "difference to Detector.predict."
)


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a detector as a TorchScript or ONNX graph (thresholds in a JSON beside it)",
        description=EXPORT_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help="detector file from `ust fit`")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx"], dest="fmt")
    p.add_argument(
        "--out", required=True, type=Path, help="graph file to write (e.g. detector.onnx)"
    )
    p.add_argument(
        "--fixed-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="ONNX only: static input height and width (default: dynamic)",
    )
    p.add_argument("--check", action="store_true", help="run the graph once and compare")
    p.set_defaults(func=run_export)


def _check(detector, path: Path, fmt: str, fixed) -> dict[str, float]:
    """Largest |exported − Detector.predict| over the maps of a random batch: absolute (score
    units) and relative to the largest |score| (float32 rounding, amplified by 1/v_σ)."""
    import numpy as np
    import torch

    from ust.detector.export import run_exported

    h, w = fixed or (detector.image_size + 7, detector.image_size - 5)
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    maps, _ = run_exported(path, fmt, x)
    ref = detector.predict(x)
    diff = max(float(np.abs(m - r).max()) for m, r in zip(maps, ref.maps))
    scale = max(1.0, max(float(np.abs(r).max()) for r in ref.maps))
    return {"max_abs_difference": diff, "max_relative_difference": diff / scale}


def run_export(args: argparse.Namespace) -> int:
    from ust.detector import Detector
    from ust.detector.export import export_detector
    from ust.detector.outputs import check_output_file, os_error_message

    try:
        detector = Detector.load(args.model)
        out = check_output_file(args.out)
        fixed = tuple(args.fixed_size) if args.fixed_size else None
        if fixed is not None and min(fixed) < 1:
            raise ValueError(f"--fixed-size must be positive, got {list(fixed)}")
        graph, side = export_detector(detector, out, args.fmt, fixed_size=fixed)
        summary = {"graph": str(graph), "thresholds": str(side), "format": args.fmt}
        summary["input"] = ["batch", 3, *(fixed or ("height", "width"))]
        if args.check:
            summary.update(_check(detector, graph, args.fmt, fixed))
    except OSError as e:  # a one-line message instead of a traceback (ust.cli.main)
        raise ValueError(os_error_message(e)) from e
    print(json.dumps(summary, indent=2))
    return 0
