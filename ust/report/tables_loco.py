"""The MVTec LOCO AD table of the README (thesis ch. 6–7): our AU-sPRO of the Student–Teacher and
GCAD per category and subset, from the files the ``loco_multiscale`` stages wrote, beside the
thesis' numbers (:data:`ust.report.published.LOCO_AU_SPRO`, ``LOCO_AU_SPRO_LIMITS``)."""

from __future__ import annotations

import json
import os

from ust.paths import resolve
from ust.report.published import LOCO_AU_SPRO, LOCO_AU_SPRO_LIMITS, LOCO_SOURCE

#: method folder → label (the thesis' spelling)
METHODS = {"st": "S-T", "gcad": "GCAD"}
SUBSETS = ("structural_anomalies", "logical_anomalies", "mean")
LIMITS = ("0.01", "0.05", "0.1", "0.3", "1.0")


def collect(results_dir: str | os.PathLike = "results/loco_multiscale") -> dict:
    """``{method: {category: fused metrics.json}}`` of every finished multiscale run."""
    root = resolve(results_dir)
    found: dict = {}
    for path in sorted(root.glob("*/*/metrics.json")) if root.is_dir() else []:
        method, category = path.parent.name, path.parent.parent.name
        if method in METHODS:
            found.setdefault(method, {})[category] = json.loads(path.read_text())
    return found


def _row(label: str, metrics: dict) -> str:
    spro = metrics["localization"]["auc_spro"]
    auc = metrics["classification"]["auc_roc"]
    cells = [f"{spro[s]['0.05']:.3f}" for s in SUBSETS] + [f"{auc['mean']:.3f}"]
    return f"| {label} | " + " | ".join(cells) + " |"


def loco_tables(results_dir: str | os.PathLike = "results/loco_multiscale") -> tuple[str, dict]:
    """Markdown (per category and method: AU-sPRO at FPR 0.05 per subset and their mean, image
    ROC-AUC; then the mean over our categories at every integration limit beside the thesis'
    Table 7.2) and the summary entries ``{method: {category: mean AU-sPRO}}``."""
    runs = collect(results_dir)
    lines = [
        "#### AU-sPRO at FPR 0.05 and image ROC-AUC, multiscale",
        "",
        "| method, category | structural | logical | mean | image ROC-AUC (mean) |",
        "|---|---|---|---|---|",
    ]
    summary: dict = {}
    for method, label in METHODS.items():
        for category, metrics in sorted(runs.get(method, {}).items()):
            lines.append(_row(f"{label}, {category}", metrics))
            summary.setdefault(method, {})[category] = metrics["au_spro"]
        published = LOCO_AU_SPRO[label]["mean"]
        lines.append(
            f"| {label}, thesis (MVTec LOCO AD mean, {LOCO_SOURCE}) | – | – | {published:.3f} | – |"
        )
    lines += [
        "",
        "The thesis' numbers are on the real MVTec LOCO AD (five categories at 256 px, 500 GCAD "
        "epochs); ours are on the offline scene set with the budgets above, so the rows are not "
        "like for like. The thesis' claim to check here: GCAD above the Student–Teacher on the "
        "logical subset.",
        "",
        "#### Mean AU-sPRO over our categories at every integration limit (thesis Table 7.2)",
        "",
        "| method | " + " | ".join(LIMITS) + " |",
        "|---|" + "---|" * len(LIMITS),
    ]
    for method, label in METHODS.items():
        cats = runs.get(method, {})
        if cats:
            means = [
                sum(m["localization"]["auc_spro"]["mean"][lim] for m in cats.values()) / len(cats)
                for lim in LIMITS
            ]
            lines.append(f"| {label}, ours | " + " | ".join(f"{v:.3f}" for v in means) + " |")
        thesis = LOCO_AU_SPRO_LIMITS[label]
        lines.append(
            f"| {label}, thesis | " + " | ".join(f"{thesis[k]:.3f}" for k in LIMITS) + " |"
        )
    return "\n".join(lines) + "\n", summary
