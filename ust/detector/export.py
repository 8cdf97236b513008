"""One graph for deployment: float32 images (B, 3, H, W) in [0, 1] → fused anomaly map and scores.

:class:`DetectorGraph` computes exactly what :meth:`ust.detector.Detector.predict` computes, with
operations that ``torch.jit.trace`` and the TorchScript-based ``torch.onnx.export`` record faithfully:

1. zoom to S × S (S = the detector's ``image_size``): bilinear, antialiased when shrinking, written
   as two matrix products whose weights are built in the graph from H and W (neither exporter
   supports antialiased resizing; ONNX Resize's ``antialias`` differs from torch's by up to 0.02),
   then clamped to [0, 1] and ImageNet-normalised;
2. per scale, Student–Teacher (``method="st"``): the dense teacher and students at the fixed size
   S (multi-pooling as in :mod:`ust.method.dense`, with max-pool + reshape instead of the eager
   strided views and the batch left dynamic), e, v and ẽ + ṽ with the stored statistics;
   GCAD (``method="gcad"``): the dense E_loc (μ/σ folded into its last layer) in the same way,
   R_loc, E_glo with its final skip weights (its bottleneck kernel is built for S, which the zoom
   guarantees) and R_glo as they are, A_loc and A_glo and Ã_loc + Ã_glo with the stored
   statistics (U only serves the training loss L_kd and is not in the graph);
3. the mean over scales, upsampled bilinearly (``align_corners=False``) back to H × W.

Outputs: ``anomaly_map`` (B, H, W) float32 (score units) and ``image_score`` (B,) = its maximum.

Input sizes. The graph is exported with dynamic batch, height and width: any B ≥ 1 and H, W ≥ 1
work, because the networks always run at S × S and only the two zooms depend on H and W (for
TorchScript the sizes are traced symbolically; for ONNX they are ``dynamic_axes`` ``batch``,
``height`` and ``width``). ``fixed_size=(H, W)`` exports an ONNX graph with static input and output
shapes instead (some runtimes and accelerators need them); its batch stays dynamic. Runtime cost is
dominated by the networks at S × S, whatever H and W are.

Thresholds stay outside the graph: ``<FILE>.thresholds.json`` beside it holds the rule, the
threshold, every stored rule's threshold and the fixed colour range, so they can be recalibrated
without exporting again.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ust.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ust.io import atomic_write, atomic_write_text
from ust.method.dense import dense_net
from ust.method.gcad import GCAD
from ust.method.networks import PatchNet
from ust.method.scoring import ScoreStats

FORMATS = ("torchscript", "onnx")
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "image_score")
ONNX_OPSET = 17


def zoom_weights(n_in: torch.Tensor | int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float32 weights of a 1-D antialiased bilinear zoom, ``align_corners=False``.

    Row i is the triangle filter centred at (i + ½)·n_in/n_out, widened by the scale when
    shrinking, normalised over the input samples: the weights ``F.interpolate(..., antialias=True)``
    uses (and, when enlarging, plain bilinear interpolation with border clamping).
    """
    n = torch.as_tensor(n_in).to(torch.float32)
    scale = n / n_out
    support = torch.clamp(scale, min=1.0)
    src = torch.arange(n_in, dtype=torch.float32) + 0.5
    centre = (torch.arange(n_out, dtype=torch.float32) + 0.5) * scale
    w = torch.clamp(1.0 - (src[None, :] - centre[:, None]).abs() / support, min=0.0)
    return w / w.sum(1, keepdim=True)


def zoom(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, size, size) as :func:`ust.data.transforms.resize` (within 1e-6)."""
    wh = zoom_weights(images.shape[2], size)
    ww = zoom_weights(images.shape[3], size)
    return torch.matmul(torch.matmul(wh, images), ww.t())


class _DenseGraph(nn.Module):
    """Dense network of one patch network at a fixed input side S: (B, 3, S, S) → (B, d, S, S).

    Same result as :class:`ust.method.dense.DenseNet` (same padding, same multi-pooling order),
    with every shape but the batch fixed at construction.
    """

    def __init__(self, patch: PatchNet, size: int):
        super().__init__()
        self.features = copy.deepcopy(patch.features).eval().requires_grad_(False)
        # the eager network's own zero padding (left, right, top, bottom) for a size × size input
        self.pad = dense_net(patch).padding(size, size)
        self.size = size
        # (stride, channels, side after pooling) of every pooling layer, in order
        self.pools: list[tuple[int, int, int]] = []
        n, channels = size + self.pad[2] + self.pad[3], 3
        for kind, *args in patch.layers_spec:
            if kind == "conv":
                channels, n = args[0], n - args[1] + 1
            else:
                n = (n - args[0] + 1) // args[0]
                self.pools.append((args[0], channels, n))
        self.final = (channels, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pad)
        pools = iter(self.pools)
        for module in self.features:
            if isinstance(module, nn.MaxPool2d):
                s, c, h = next(pools)
                # stride-1 pool; offset (i, j) of the s×s grid goes to batch block i·s + j
                y = F.max_pool2d(x, s, 1)[:, :, : s * h, : s * h]
                y = y.reshape(-1, c, h, s, h, s).permute(3, 5, 0, 1, 2, 4)
                x = y.reshape(-1, c, h, h)
            else:
                x = module(x)
        return self._unwarp(x)[:, :, : self.size, : self.size]

    def _unwarp(self, x: torch.Tensor) -> torch.Tensor:
        """Interleave the pooled sub-grids back: (Π s²·B, d, h, h) → (B, d, Π s·h, Π s·h)."""
        if not self.pools:
            return x
        strides = [s for s, _, _ in self.pools]
        c, h = self.final
        total = 1
        for s in strides:
            total *= s
        levels = len(strides)
        dims = [d for s in reversed(strides) for d in (s, s)]
        x = x.permute(0, 2, 3, 1).reshape(*dims, -1, h, h, c)
        i_axes = [2 * k for k in range(levels)]
        j_axes = [2 * k + 1 for k in range(levels)]
        nb, hb, wb, cb = 2 * levels, 2 * levels + 1, 2 * levels + 2, 2 * levels + 3
        x = x.permute(nb, hb, *i_axes, wb, *j_axes, cb).reshape(-1, h * total, h * total, c)
        return x.permute(0, 3, 1, 2)


class _ScaleGraph(nn.Module):
    """ẽ + ṽ of one scale: normalised images (B, 3, S, S) → (B, S, S)."""

    def __init__(self, model, stats: ScoreStats, size: int):
        super().__init__()
        self.teacher = _DenseGraph(model.teacher, size)
        self.students = nn.ModuleList(_DenseGraph(s, size) for s in model.students)
        self.register_buffer("mean", model.target_mean.detach().cpu().clone()[None, :, None, None])
        self.register_buffer("std", model.target_std.detach().cpu().clone()[None, :, None, None])
        self.stats = (stats.e_mean, stats.e_std, stats.v_mean, stats.v_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = (self.teacher(x) - self.mean) / self.std
        preds = torch.stack([s(x) for s in self.students])  # (M, B, d, S, S)
        mean = preds.mean(0)
        e = (mean - target).pow(2).sum(1)  # ust.method.scoring.regression_error
        v = (preds - mean[None]).pow(2).sum(2).mean(0)  # ust.method.scoring.predictive_variance
        e_mean, e_std, v_mean, v_std = self.stats
        return (e - e_mean) / e_std + (v - v_mean) / v_std


class _GCADScaleGraph(nn.Module):
    """Ã_loc + Ã_glo of one GCAD model (:meth:`ust.method.gcad.GCAD.anomaly_maps`): normalised
    images (B, 3, S, S) → (B, S, S)."""

    def __init__(self, model: GCAD, size: int):
        super().__init__()
        if model.config.image_size != size:
            raise ValueError(
                f"the GCAD model of p={model.p} takes {model.config.image_size}² images, the "
                f"detector zooms to {size}²"
            )
        self.e_loc = _DenseGraph(model.e_loc, size)  # μ/σ folded into its last convolution
        self.r_loc, self.e_glo, self.r_glo = (
            copy.deepcopy(net).eval().requires_grad_(False)
            for net in (model.r_loc, model.e_glo, model.r_glo)
        )  # E_glo keeps its skip_weights buffer: the weights training ended with
        st = model.score_stats
        self.stats = (st.loc_mean, st.loc_std, st.glo_mean, st.glo_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_loc = (self.e_loc(x) - self.r_loc(x)).pow(2).sum(1)
        a_glo = (self.e_glo(x) - self.r_glo(x)).pow(2).sum(1)
        loc_mean, loc_std, glo_mean, glo_std = self.stats
        return (a_loc - loc_mean) / loc_std + (a_glo - glo_mean) / glo_std


def scale_graph(model, size: int) -> nn.Module:
    """The graph of one calibrated scale (a StudentTeacher or a GCAD model) at input side ``size``:
    normalised images (B, 3, S, S) → its normalised map (B, S, S)."""
    if isinstance(model, GCAD):
        return _GCADScaleGraph(model, size)
    if model.padding != "zero":
        raise ValueError(
            f"the p = {model.p} scale reads {model.padding!r} padding at the image border; the "
            "exported graph implements zero padding only (fit the detector with the default "
            "training padding, docs/decisions.md#border-padding)"
        )
    return _ScaleGraph(model, model.score_stats, size)


class DetectorGraph(nn.Module):
    """The fused detector as one traceable module: images (B, 3, H, W) float32 in [0, 1] →
    (anomaly_map (B, H, W), image_score (B,)); see the module docstring."""

    def __init__(self, detector):
        super().__init__()
        self.size = detector.image_size
        self.scales = nn.ModuleList(
            scale_graph(detector.models[p], self.size) for p in detector.patch_sizes
        )
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = zoom(images, self.size).clamp(0.0, 1.0)
        x = (x - self.rgb_mean) / self.rgb_std
        fused = torch.stack([scale(x) for scale in self.scales]).mean(0)
        maps = F.interpolate(
            fused[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        return maps, maps.amax(dim=(1, 2))


def _example(size: tuple[int, int] | None, detector) -> torch.Tensor:
    h, w = size if size is not None else (detector.image_size, detector.image_size)
    return torch.rand(1, 3, int(h), int(w), generator=torch.Generator().manual_seed(0))


def torchscript_bytes(graph: DetectorGraph, example: torch.Tensor) -> bytes:
    """The traced graph serialised with ``torch.jit.save`` (sizes traced symbolically)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices: the result is tested
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def onnx_bytes(graph: DetectorGraph, example: torch.Tensor, *, dynamic: bool = True) -> bytes:
    """The graph as an ONNX model (opset :data:`ONNX_OPSET`, TorchScript-based exporter).

    ``dynamic=False`` fixes H and W to ``example``'s (the batch stays dynamic).
    """
    import onnx

    spatial = {2: "height", 3: "width"} if dynamic else {}
    axes = {
        INPUT_NAME: {0: "batch", **spatial},
        OUTPUT_NAMES[0]: {0: "batch", **{k - 1: v for k, v in spatial.items()}},
        OUTPUT_NAMES[1]: {0: "batch"},
    }
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            buf,
            dynamo=False,  # torch.export + onnxscript is not needed for this graph
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
        )
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def thresholds_json(detector, fmt: str, fixed_size: tuple[int, int] | None) -> dict:
    """The content of ``<FILE>.thresholds.json``: how to read the graph's outputs."""
    cal = detector.calibration
    vmin, vmax = detector.display_range()
    shape = ["batch", 3, *(fixed_size or ("height", "width"))]
    return {
        "format": "ust.detector-export/1",
        "graph_format": fmt,
        "detector_sha256": detector.sha256,
        "input": {"name": INPUT_NAME, "shape": shape, "dtype": "float32", "range": [0.0, 1.0]},
        "outputs": {OUTPUT_NAMES[0]: ["batch", *shape[2:]], OUTPUT_NAMES[1]: ["batch"]},
        "decision": (
            "pixel anomalous if anomaly_map > threshold; image if image_score > image_threshold"
        ),
        "rule": detector.threshold_rule,
        "threshold": detector.threshold,
        "thresholds": dict(cal.thresholds),
        "image_threshold": detector.image_threshold,
        "false_alarm_rate": detector.false_alarm_rate,
        "supported_false_alarm_rate": detector.image_calibration.supported_rate,
        "colour_range": [vmin, vmax],
        "image_size": detector.image_size,
        "method": detector.method,
        "patch_sizes": list(detector.patch_sizes),
    }


def thresholds_path(path: str | os.PathLike) -> Path:
    """``<FILE>.thresholds.json`` beside the exported ``FILE``."""
    path = Path(path)
    return path.with_name(path.name + ".thresholds.json")


def export_detector(
    detector,
    path: str | os.PathLike,
    fmt: str,
    *,
    fixed_size: tuple[int, int] | None = None,
) -> tuple[Path, Path]:
    """Write ``detector`` as a TorchScript (``fmt="torchscript"``) or ONNX graph to ``path`` and
    its thresholds to ``<path>.thresholds.json``, each atomically; returns both paths.

    ``fixed_size=(H, W)``: static input size (ONNX only; TorchScript traces sizes symbolically).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    if fixed_size is not None and fmt != "onnx":
        raise ValueError("a fixed input size applies to ONNX only (TorchScript takes any size)")
    graph = DetectorGraph(detector)
    example = _example(fixed_size, detector)
    if fmt == "torchscript":
        data = torchscript_bytes(graph, example)
    else:
        data = onnx_bytes(graph, example, dynamic=fixed_size is None)
    info = thresholds_json(detector, fmt, fixed_size)
    path = Path(path)
    atomic_write(path, lambda fh: fh.write(data))
    try:
        side = atomic_write_text(thresholds_path(path), json.dumps(info, indent=2) + "\n")
    except BaseException:
        path.unlink(missing_ok=True)  # a graph without its thresholds is half an export
        raise
    return path, side


def run_exported(path: str | os.PathLike, fmt: str, images: torch.Tensor):
    """Run an exported graph on CPU: images (B, 3, H, W) float32 → (maps, scores) numpy arrays.

    ONNX runs on onnxruntime's CPU provider, TorchScript on ``torch.jit.load``.
    """
    x = images.detach().float().cpu().contiguous()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        maps, scores = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        return maps, scores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        maps, scores = module(x)
    return maps.numpy(), scores.numpy()
