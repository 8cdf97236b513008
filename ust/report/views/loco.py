"""Notebook 32 (stage ``loco_multiscale``): the Student–Teacher and GCAD on MVTec LOCO AD, from the
files the LOCO stages wrote: maps of logical and structural anomalies side by side, sPRO curves per
subset, and our AU-sPRO beside the thesis' (:data:`ust.report.published.LOCO_AU_SPRO`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ust.data.dataset import GOOD
from ust.data.loco import validate_loco_category
from ust.eval.spro import spro_curve
from ust.experiments.protocol import load_maps
from ust.io import read_json
from ust.paths import resolve
from ust.report.published import LOCO_AU_SPRO, LOCO_SOURCE
from ust.report.views import comparison_table, number

__all__ = [
    "METHOD_LABELS",
    "maps",
    "metrics_table",
    "ours_vs_paper",
    "paper_comparison",
    "spro_curves",
]

#: the methods of the chapter (folder → label), in table order
METHOD_LABELS = {"st": "S-T", "gcad": "GCAD"}
SUBSETS = ("structural_anomalies", "logical_anomalies")


def _methods(out_dir: Path) -> list[str]:
    return [m for m in METHOD_LABELS if (out_dir / m / "metrics.json").is_file()]


def first_of_each_region_defect(index) -> list:
    """The first test sample (index order) of each defect name, then the first good one: a fixed
    rule, not picked by score."""
    chosen, seen = [], set()
    for s in index.test:
        names = [r.defect for r in index.regions(s)] if s.is_anomalous else []
        key = names[0] if names else None
        if s.is_anomalous and key and key not in seen:
            seen.add(key)
            chosen.append((key, s))
    good = next(s for s in index.test if s.defect == GOOD)
    return [*chosen, ("good", good)]


def maps(data_root: str | os.PathLike, category: str, out_dir: str | os.PathLike) -> Figure:
    """One row per defect type (its first test image) and a good image: the image with the
    ground-truth outline, then each method's multiscale map on one colour scale per method."""
    out = resolve(out_dir)
    index = validate_loco_category(resolve(data_root), category)
    rows = first_of_each_region_defect(index)
    methods = _methods(out)
    loaded = {m: load_maps(out / m / "maps", category, [s for _, s in rows]) for m in methods}
    ranges = {
        m: np.percentile(np.concatenate([x.ravel() for x in v]), [1, 99.9])
        for m, v in loaded.items()
    }
    from ust.data.mvtec import load_image

    fig = Figure(figsize=(2.2 * (1 + len(methods)), 2.0 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1 + len(methods), squeeze=False)
    for r, (name, sample) in enumerate(rows):
        axes[r][0].imshow(load_image(sample.path).permute(1, 2, 0).numpy())
        for region in index.regions(sample):
            axes[r][0].contour(region.mask, levels=[0.5], colors="lime", linewidths=0.8)
        axes[r][0].set_ylabel(f"{name}\n({sample.defect.split('_')[0]})", fontsize=7)
        for c, m in enumerate(methods, start=1):
            axes[r][c].imshow(loaded[m][r], cmap="inferno", vmin=ranges[m][0], vmax=ranges[m][1])
            if r == 0:
                axes[r][c].set_title(METHOD_LABELS[m], fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image, ground truth", fontsize=8)
    return fig


def spro_curves(
    data_root: str | os.PathLike, category: str, out_dir: str | os.PathLike, max_fpr: float = 0.3
) -> Figure:
    """sPRO against the false-positive rate per subset (each with all good test images), one line
    per method, up to ``max_fpr``; the dotted line marks the main limit 0.05."""
    out = resolve(out_dir)
    index = validate_loco_category(resolve(data_root), category)
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, len(SUBSETS), squeeze=False)[0]
    for ax, subset in zip(axes, SUBSETS):
        samples = [s for s in index.test if s.defect in (GOOD, subset)]
        regions = [index.regions(s) for s in samples]
        for m in _methods(out):
            fpr, spro = spro_curve(load_maps(out / m / "maps", category, samples), regions)
            keep = fpr <= max_fpr
            ax.plot(fpr[keep], spro[keep], label=METHOD_LABELS[m])
        ax.axvline(0.05, color="grey", linestyle=":")
        ax.set_title(subset.replace("_", " "), fontsize=9)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("sPRO")
        ax.legend(fontsize=8)
    return fig


def metrics_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """AU-sPRO (FPR 0.05) and image ROC-AUC per subset of each scale and the fusion, per method
    (``table.json``)."""
    table = read_json(resolve(out_dir) / "table.json")
    rows = [
        {"method": METHOD_LABELS.get(m, m), "scale": scale, **values}
        for m, scales in table.items()
        for scale, values in scales.items()
    ]
    return pd.DataFrame(rows).set_index(["method", "scale"])


def paper_comparison(category: str, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Our mean AU-sPRO at FPR 0.05 (multiscale) per method beside the thesis' (its category's
    number on the real data, else its mean over MVTec LOCO AD, labelled as not like for like)."""
    out = resolve(out_dir)
    rows = []
    for m in _methods(out):
        ours = read_json(out / m / "metrics.json")["au_spro"]
        published = LOCO_AU_SPRO[METHOD_LABELS[m]]
        same = category in published
        rows.append(
            {
                "quantity": f"{METHOD_LABELS[m]}: mean AU-sPRO (FPR 0.05), {category}",
                "ours": ours,
                "paper": published[category if same else "mean"],
                "source": LOCO_SOURCE,
                "note": ""
                if same
                else "paper: mean over the five MVTec LOCO AD categories; "
                "ours: offline scene set (not like for like)",
            }
        )
    return comparison_table(rows)


def ours_vs_paper(category: str, out_dir: str | os.PathLike) -> str:
    """One sentence: each method's AU-sPRO and whether GCAD beats S-T on the logical subset, the
    thesis' claim."""
    out = resolve(out_dir)
    found = {m: read_json(out / m / "metrics.json") for m in _methods(out)}
    parts = [f"{METHOD_LABELS[m]} {number(v['au_spro'])}" for m, v in found.items()]
    text = f"{category}: mean AU-sPRO at FPR 0.05 " + ", ".join(parts)
    if {"st", "gcad"} <= set(found):
        logical = {
            m: found[m]["localization"]["auc_spro"]["logical_anomalies"]["0.05"] for m in found
        }
        verdict = "above" if logical["gcad"] >= logical["st"] else "below"
        text += (
            f"; on the logical subset GCAD is {verdict} S-T ({number(logical['gcad'])} vs "
            f"{number(logical['st'])}; the thesis finds GCAD above)"
        )
    return text + "."
