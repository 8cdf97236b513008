"""MVTec AD figures per category and the Table 2 / Table 3-shaped tables with the paper's numbers.

Every measured number is read from the files the stages wrote (``metrics.json``, ``baselines.json``,
``ssim_ae.json``); the paper's numbers come from :mod:`ust.report.published`, labelled as published.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ust.data.mvtec import load_anomaly_map, load_image, load_mask, validate_category
from ust.paths import resolve
from ust.report.figures_mvtec import plot_figure1, plot_pro_curves, plot_receptive_fields
from ust.report.published import PAPER_TABLE2, PAPER_TABLE3, QUOTED_TABLE2, TABLE2_METHODS


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def category_summary(out_dir: str | os.PathLike) -> dict:
    """AU-PRO / pixel / image ROC-AUC of the multiscale fusion, each scale and each baseline."""
    out = resolve(out_dir)
    summary = {f"p{k}" if k.isdigit() else k: v for k, v in _read(out / "table.json").items()}
    for method, m in _read(out / "baselines.json").items():
        summary[method] = {k: m[k] for k in ("au_pro", "pixel_auroc", "image_auroc")}
    ssim = _read(out / "ssim_ae.json")
    if ssim:
        summary["ssim_ae"] = {k: ssim[k] for k in ("au_pro", "pixel_auroc", "image_auroc")}
    return summary


def category_figures(
    category: str, scale_dirs: dict[int, str], out_dir: str | os.PathLike, examples: int = 3
) -> list[Path]:
    """Figure 1 panel, Figure 5 scale comparison and PRO curves for the first ``examples``
    anomalous test images of ``category``."""
    from ust.stages.mvtec import mvtec_root

    root = mvtec_root()
    out = resolve(out_dir)
    index = validate_category(root, category)
    samples = [s for s in index.test if s.is_anomalous][:examples]
    images = [load_image(s.path).permute(1, 2, 0).numpy() for s in samples]
    masks = [load_mask(s.mask_path, s.size).numpy() for s in samples]

    def maps_of(base: Path) -> list[np.ndarray]:
        return [
            load_anomaly_map(base / "maps" / category / "test" / f"{s.image_id}.tiff")
            for s in samples
        ]

    fused = maps_of(out)
    by_scale = {int(p): maps_of(resolve(d)) for p, d in scale_dirs.items()}
    by_scale["multiscale"] = fused
    paths = [out / "figure1.png", out / "figure5_scales.png", out / "pro_curves.png"]
    plot_figure1(images, masks, fused, paths[0], titles=[s.image_id for s in samples])
    plot_receptive_fields(
        images, by_scale, paths[1], masks=masks, titles=[s.image_id for s in samples]
    )
    curves = {}
    for name, base in [
        *((f"p = {p}", resolve(d)) for p, d in scale_dirs.items()),
        ("multiscale", out),
    ]:
        csv = base / "pro_curve.csv"
        if csv.exists():
            data = np.loadtxt(csv, delimiter=",", skiprows=1)
            curves[name] = (data[:, 0], data[:, 1])
    plot_pro_curves(curves, paths[2])
    return paths


def mvtec_tables(
    results_dir: str | os.PathLike, categories: list[str], data_label: str, profile: str
) -> tuple[str, str]:
    """Markdown of Table 3 (AU-PRO by receptive field) and Table 2 (baselines at p = 65) for the
    categories run; paper columns only for the 15 MVTec AD categories."""
    res = resolve(results_dir)
    header = f"Data: {data_label}. Profile: `{profile}`. AU-PRO up to FPR 0.3."
    t3 = [
        header,
        "",
        "| category | p = 17 | p = 33 | p = 65 | multiscale | paper p=17 / 33 / 65 / multi |",
        "|---|---|---|---|---|---|",
    ]
    t2 = [
        header + " Baselines on the p = 65 teacher's descriptors; SSIM-AE on images.",
        "",
        "| category | ours p=65 | multiscale | "
        + " | ".join(TABLE2_METHODS)
        + " | paper (1-NN … SSIM-AE) | AnoGAN / CNN-FD (quoted from [P], not re-run) |",
        "|---|---|---|" + "---|" * len(TABLE2_METHODS) + "---|---|",
    ]
    cols3: dict[str, list[float]] = {}
    for cat in categories:
        scale = {p: _read(res / f"{cat}-p{p}" / "metrics.json").get("au_pro") for p in (17, 33, 65)}
        multi = _read(res / f"{cat}-multiscale" / "metrics.json").get("au_pro")
        paper = PAPER_TABLE3.get(cat)
        row = [scale[17], scale[33], scale[65], multi]
        for name, v in zip(("17", "33", "65", "multi"), row, strict=True):
            if v is not None:
                cols3.setdefault(name, []).append(v)
        t3.append(
            f"| {cat} | "
            + " | ".join(_f(v) for v in row)
            + " | "
            + (" / ".join(f"{v:.3f}" for v in paper) if paper else "– (not in the paper)")
            + " |"
        )
        summary = category_summary(res / f"{cat}-multiscale")
        base = [summary.get(m, {}).get("au_pro") for m in TABLE2_METHODS]
        p2 = PAPER_TABLE2.get(cat)
        t2.append(
            f"| {cat} | {_f(scale[65])} | {_f(multi)} | "
            + " | ".join(_f(v) for v in base)
            + " | "
            + (" / ".join(f"{v:.3f}" for v in p2) if p2 else "–")
            + " | "
            + (" / ".join(f"{v:.3f}" for v in QUOTED_TABLE2[cat]) if cat in QUOTED_TABLE2 else "–")
            + " |"
        )
    t3.append(
        "| mean | "
        + " | ".join(
            _f(np.mean(cols3[k]) if k in cols3 else None) for k in ("17", "33", "65", "multi")
        )
        + " | |"
    )
    return "\n".join(t3) + "\n", "\n".join(t2) + "\n"


def _f(v) -> str:
    return "–" if v is None else f"{float(v):.3f}"
