"""MVTec AD figures per category and the Table 2 / Table 3-shaped tables with the paper's numbers.

Every measured number is read from the files the stages wrote (``metrics.json``, ``table.json``,
``baselines.json``, ``ssim_ae.json``); the paper's numbers come from :mod:`ust.report.published`,
labelled as published.

Layout of the results (stages ``mvtec`` and ``mvtec_multiscale``)::

    results/mvtec/<category>/p<p>/            one single-scale run per receptive field p
    results/mvtec_multiscale/<category>/      the multiscale fusion and the Table 2 baselines

The receptive fields are those of ``mvtec.patch_sizes`` in ``params.yaml`` unless a caller passes
``scales``; the tables get one column per scale.

Under-training: :func:`mvtec_steps` reads the optimiser steps the runs recorded
(:data:`ust.report.claims.STEPS_KEY`: per student in a single-scale ``metrics.json``, per method in
``baselines.json`` and in ``ssim_ae.json``); when a model of a row took fewer than
:data:`ust.report.claims.MIN_OPTIMIZER_STEPS`, the tables get a last column "under-trained" naming
the models and their steps. Results without the key get no label.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ust.experiments.outputs import STEPS_KEY, single_scale_run_dir
from ust.paths import resolve
from ust.report.claims import undertrained_label
from ust.report.figures_mvtec import draw_category_panels, plot_pro_curves
from ust.report.published import (
    MULTISCALE,
    PAPER_TABLE2,
    PAPER_TABLE3,
    QUOTED_TABLE2,
    TABLE2_METHODS,
)

#: root of the single-scale runs (``<category>/p<p>/`` below it)
MVTEC_DIR = "results/mvtec"
#: root of the multiscale runs (``<category>/`` below it)
MULTISCALE_DIR = "results/mvtec_multiscale"

#: the no-learning floor of the Table 2 block (``raw_nn``, docs/decisions.md#raw-patch-floor)
FLOOR = "raw_nn"


def multiscale_run(multiscale_dir: str | os.PathLike, category: str) -> Path:
    """Folder of the multiscale run of ``category``: ``<multiscale_dir>/<category>``."""
    return resolve(multiscale_dir) / category


def patch_sizes(scales: Iterable[int] | None = None) -> list[int]:
    """The receptive fields to report, ascending: ``scales`` if given, else ``mvtec.patch_sizes``
    of the active parameters."""
    if scales is None:
        from ust.experiments.params import section

        scales = section("mvtec")["patch_sizes"]
    return sorted({int(p) for p in scales})


def mvtec_data_root() -> Path:
    """The MVTec-layout data the runs read (``mvtec_data.root`` of the active parameters); the
    report reads it and never builds it (``dvc repro mvtec_data`` does)."""
    from ust.experiments.params import section

    root = resolve(section("mvtec_data")["root"])
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} does not exist: the report reads the MVTec-layout data the stages used; "
            "run `dvc repro mvtec_data` (offline texture set) or set mvtec_data.root"
        )
    return root


def baseline_teacher_p() -> int:
    """Receptive field of the teacher whose descriptors the Table 2 baselines use:
    ``mvtec_baselines.p`` of the active parameters."""
    from ust.experiments.config import load_config

    return load_config().mvtec_baselines.p


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def category_summary(out_dir: str | os.PathLike) -> dict:
    """AU-PRO / pixel / image ROC-AUC of the multiscale fusion, each scale and each baseline, from
    the multiscale run folder ``out_dir`` (keys ``multiscale``, ``p<p>`` and the baseline names)."""
    out = resolve(out_dir)
    summary = {f"p{k}" if k.isdigit() else k: v for k, v in _read(out / "table.json").items()}
    for method, m in _read(out / "baselines.json").items():
        summary[method] = {k: m[k] for k in ("au_pro", "pixel_auroc", "image_auroc")}
    ssim = _read(out / "ssim_ae.json")
    if ssim:
        summary["ssim_ae"] = {k: ssim[k] for k in ("au_pro", "pixel_auroc", "image_auroc")}
    return summary


def _steps_of(record: dict) -> int | None:
    value = record.get(STEPS_KEY) if isinstance(record, dict) else None
    return None if value is None else int(value)


def category_steps(
    category: str,
    scales: Sequence[int],
    results_dir: str | os.PathLike = MVTEC_DIR,
    multiscale_dir: str | os.PathLike = MULTISCALE_DIR,
) -> dict[str, int]:
    """Optimiser steps per model of ``category``: ``p<p>`` (per student, from the single-scale
    ``metrics.json``), ``multiscale`` (the fewest of its scales), each baseline of
    ``baselines.json`` and ``ssim_ae``; models without a recorded count are left out."""
    steps: dict[str, int] = {}
    for p in scales:
        n = _steps_of(_read(single_scale_run_dir(results_dir, category, p) / "metrics.json"))
        if n is not None:
            steps[f"p{p}"] = n
    if steps:
        steps[MULTISCALE] = min(steps.values())
    multi = multiscale_run(multiscale_dir, category)
    for method, record in _read(multi / "baselines.json").items():
        if _steps_of(record) is not None:
            steps[method] = _steps_of(record)
    if _steps_of(_read(multi / "ssim_ae.json")) is not None:
        steps["ssim_ae"] = _steps_of(_read(multi / "ssim_ae.json"))
    return steps


def mvtec_steps(
    categories: Sequence[str],
    scales: Iterable[int] | None = None,
    *,
    results_dir: str | os.PathLike = MVTEC_DIR,
    multiscale_dir: str | os.PathLike = MULTISCALE_DIR,
) -> dict[str, dict[str, int]]:
    """:func:`category_steps` of every category (``summary["steps"]["mvtec"]``)."""
    scales = patch_sizes(scales)
    return {c: category_steps(c, scales, results_dir, multiscale_dir) for c in categories}


def training_cell(names_steps: Iterable[tuple[str, int | None]]) -> str:
    """The "under-trained" cell of a row: the under-trained models of ``(name, steps)`` grouped by
    label, e.g. ``"p = 17, p = 33: under-trained (36 steps); l2ae: under-trained (50 steps)"``;
    "" when none is under-trained or no steps were recorded."""
    groups: dict[str, list[str]] = {}
    for name, steps in names_steps:
        label = undertrained_label(steps)
        if label:
            groups.setdefault(label, []).append(name)
    return "; ".join(f"{', '.join(names)}: {label}" for label, names in groups.items())


def _with_training_column(table: str, cells: Sequence[str]) -> str:
    """``table`` (header, rule, one row per cell, then any rows without a cell) with a last column
    "under-trained" when any cell is non-empty; unchanged otherwise."""
    if not any(cells):
        return table
    lines = table.rstrip("\n").split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| category |"))
    lines[start] += " under-trained |"
    lines[start + 1] += "---|"
    for i in range(start + 2, len(lines)):
        j = i - start - 2
        lines[i] += f" {cells[j] if j < len(cells) else ''} |"
    return "\n".join(lines) + "\n"


#: the PNGs :func:`draw_category_figures` writes into the multiscale run folder, by key
CATEGORY_FIGURES = {
    "figure1": "figure1.png",
    "figure5": "figure5_scales.png",
    "pro_curves": "pro_curves.png",
}


def pro_curves_of(runs: dict[str, str | os.PathLike]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (fpr, pro)}`` read from ``<run>/pro_curve.csv`` of each ``{name: run folder}``
    (1-D arrays, FPR ascending in [0, 1]); runs without the file are left out."""
    curves = {}
    for name, base in runs.items():
        csv = resolve(base) / "pro_curve.csv"
        if csv.exists():
            data = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
            curves[name] = (data[:, 0], data[:, 1])
    return curves


def draw_category_figures(
    category: str,
    scale_dirs: dict[int, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
) -> dict[str, Figure]:
    """Draw and save (:data:`CATEGORY_FIGURES`, in ``out_dir``, the multiscale run folder) the
    Figure 1 panel and the Figure 5 comparison of the scales ``scale_dirs = {p: run folder}`` and
    the multiscale map (:func:`ust.report.figures_mvtec.draw_category_panels`: the first good test
    image, then the first image of every defect type, one colour scale per figure;
    docs/decisions.md#figure-selection) and the PRO curves (FPR ≤ 0.3) of every scale and the
    fusion.

    ``data_root``: the MVTec-layout data the runs used (default: ``mvtec_data`` of the active
    parameters). Returns ``{"figure1", "figure5", "pro_curves"}`` → :class:`Figure`.
    """
    out = resolve(out_dir)
    root = mvtec_data_root() if data_root is None else resolve(data_root)
    names = {key: CATEGORY_FIGURES[key] for key in ("figure1", "figure5")}
    figures = draw_category_panels(category, root, scale_dirs, out, out, names=names)
    runs = {f"p = {p}": d for p, d in scale_dirs.items()} | {"multiscale": out}
    curves = plot_pro_curves(pro_curves_of(runs), out / CATEGORY_FIGURES["pro_curves"])
    return {**figures, "pro_curves": curves}


def _metric(run: Path, metric: str) -> float | None:
    value = _read(run / "metrics.json").get(metric)
    return None if value is None else float(value)


def _measured(
    categories: Sequence[str],
    scales: Sequence[int],
    results_dir: str | os.PathLike,
    multiscale_dir: str | os.PathLike,
    metric: str,
) -> dict[str, dict]:
    """Per category: ``{p: value for each scale, MULTISCALE: value, <baseline>: value}``, None for
    a missing run."""
    out = {}
    for cat in categories:
        multi = multiscale_run(multiscale_dir, cat)
        row: dict = {p: _metric(single_scale_run_dir(results_dir, cat, p), metric) for p in scales}
        row[MULTISCALE] = _metric(multi, metric)
        summary = category_summary(multi)
        row.update({m: summary.get(m, {}).get(metric) for m in (*TABLE2_METHODS, FLOOR)})
        out[cat] = row
    return out


def _table3(measured: dict[str, dict], scales: Sequence[int], header: str) -> str:
    """Table 3: AU-PRO per scale and multiscale, the paper's values beside them, and the means."""
    cols = [*scales, MULTISCALE]
    lines = [
        header,
        "",
        "| category | "
        + " | ".join(f"p = {p}" for p in scales)
        + f" | multiscale | paper p={' / '.join(map(str, scales))} / multi |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for cat, row in measured.items():
        paper = PAPER_TABLE3.get(cat)
        quoted = " / ".join(_f(paper.get(k)) for k in cols) if paper else "– (not in the paper)"
        lines.append(f"| {cat} | " + " | ".join(_f(row[k]) for k in cols) + f" | {quoted} |")
    means = []
    for k in cols:
        values = [row[k] for row in measured.values() if row[k] is not None]
        means.append(_f(np.mean(values) if values else None))
    lines.append("| mean | " + " | ".join(means) + " | |")
    return "\n".join(lines) + "\n"


def _table2(measured: dict[str, dict], header: str, baseline_p: int) -> str:
    """Table 2: our result at the baselines' scale and multiscale, each baseline, the paper's row
    and the quoted AnoGAN / CNN-FD values."""
    lines = [
        header + f" Baselines on the p = {baseline_p} teacher's descriptors; SSIM-AE on images.",
        "",
        f"| category | ours p={baseline_p} | multiscale | "
        + " | ".join(TABLE2_METHODS)
        + f" | {FLOOR} (no learning, not in the paper)"
        + " | paper (1-NN … SSIM-AE) | AnoGAN / CNN-FD (quoted from [P], not re-run) |",
        "|---|---|---|" + "---|" * len(TABLE2_METHODS) + "---|---|---|",
    ]
    for cat, row in measured.items():
        paper = PAPER_TABLE2.get(cat)
        quoted = QUOTED_TABLE2.get(cat)
        lines.append(
            f"| {cat} | {_f(row.get(baseline_p))} | {_f(row[MULTISCALE])} | "
            + " | ".join(_f(row[m]) for m in TABLE2_METHODS)
            + f" | {_f(row.get(FLOOR))} | "
            + (" / ".join(f"{v:.3f}" for v in paper) if paper else "–")
            + " | "
            + (" / ".join(f"{v:.3f}" for v in quoted) if quoted else "–")
            + " |"
        )
    return "\n".join(lines) + "\n"


def mvtec_tables(
    results_dir: str | os.PathLike,
    categories: Sequence[str],
    data_label: str,
    profile: str,
    *,
    multiscale_dir: str | os.PathLike = MULTISCALE_DIR,
    scales: Iterable[int] | None = None,
    baseline_p: int | None = None,
) -> tuple[str, str]:
    """Markdown of Table 3 (AU-PRO by receptive field) and Table 2 (baselines) for the categories
    run; paper columns only for the 15 MVTec AD categories.

    Args:
        results_dir: root of the single-scale runs (``<category>/p<p>/metrics.json``).
        categories: rows, in order.
        data_label, profile: named in the header line.
        multiscale_dir: root of the multiscale runs (``<category>/metrics.json``, ``table.json``,
            ``baselines.json``, ``ssim_ae.json``).
        scales: receptive fields, one Table 3 column each (default: ``mvtec.patch_sizes``).
        baseline_p: the scale shown beside the baselines in Table 2 (default:
            :func:`baseline_teacher_p`); it is read even if not among ``scales``.
    Missing runs are shown as "–". When a row has an under-trained model (:func:`training_cell` of
    the steps :func:`category_steps` reads; the multiscale fusion counts with the fewest steps of
    its scales) the tables get a last column "under-trained".
    """
    scales = patch_sizes(scales)
    baseline_p = baseline_teacher_p() if baseline_p is None else int(baseline_p)
    header = f"Data: {data_label}. Profile: `{profile}`. AU-PRO up to FPR 0.3."
    read = scales if baseline_p in scales else [*scales, baseline_p]
    measured = _measured(categories, read, results_dir, multiscale_dir, "au_pro")
    steps = {c: category_steps(c, read, results_dir, multiscale_dir) for c in categories}
    t3_cells, t2_cells = [], []
    for cat in categories:
        got = steps[cat]
        fused = [(MULTISCALE, got.get(MULTISCALE))]
        t3_cells.append(training_cell([(f"p = {p}", got.get(f"p{p}")) for p in scales] + fused))
        t2_cells.append(
            training_cell(
                [(f"ours p={baseline_p}", got.get(f"p{baseline_p}")), *fused]
                + [(m, got.get(m)) for m in TABLE2_METHODS]
            )
        )
    return (
        _with_training_column(_table3(measured, scales, header), t3_cells),
        _with_training_column(_table2(measured, header, baseline_p), t2_cells),
    )


def mvtec_metric_frame(
    categories: Sequence[str],
    scales: Iterable[int] | None = None,
    *,
    results_dir: str | os.PathLike = MVTEC_DIR,
    multiscale_dir: str | os.PathLike = MULTISCALE_DIR,
    metric: str = "au_pro",
) -> pd.DataFrame:
    """Categories × (``p = <p>`` per scale, ``multiscale``, each Table 2 baseline) of ``metric``
    ("au_pro", "pixel_auroc" or "image_auroc"), read from the same files as :func:`mvtec_tables`;
    NaN where a run is missing, columns without any result dropped (e.g. baselines not run)."""
    scales = patch_sizes(scales)
    measured = _measured(categories, scales, results_dir, multiscale_dir, metric)
    names = {**{p: f"p = {p}" for p in scales}, MULTISCALE: MULTISCALE}
    names.update({m: m for m in TABLE2_METHODS})
    frame = pd.DataFrame(
        [[np.nan if row[k] is None else float(row[k]) for k in names] for row in measured.values()],
        index=pd.Index(list(measured), name="category"),
        columns=list(names.values()),
        dtype=float,
    )
    return frame.dropna(axis=1, how="all")


def _f(v) -> str:
    return "–" if v is None else f"{float(v):.3f}"
