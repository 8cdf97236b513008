"""Notebook 00 (overview, not a stage): what the ``report`` stage wrote into ``figures/``, the first
thing a visitor opens. ``figures/summary.json`` as tables beside the paper's numbers, the Markdown
tables ``figures/*.md`` as DataFrames, the main figures as images and one generated sentence.

Everything is read from ``figures/`` (or a snapshot ``figures/<profile>/``); nothing is computed
again. When ``summary.json`` is missing, :func:`load_summary` says how to produce it.
"""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pandas as pd

from ust.paths import resolve
from ust.report.published import MULTISCALE, PAPER_TABLE3
from ust.report.tables_oneclass import DATASET_TITLES, DEFAULT_METHOD_MAP, published_row
from ust.report.views import number
from ust.report.views.oneclass import paper_key

__all__ = [
    "figure",
    "load_summary",
    "markdown_tables",
    "mvtec_table",
    "oneclass_means",
    "ours_vs_paper",
    "show_tables",
    "teachers_table",
]

HOW_TO_PRODUCE = (
    "`make reproduce PROFILE=smoke` (minutes) or `make reproduce PROFILE=default` (about 20 "
    "minutes on 2 CPU cores) runs the pipeline; its `report` stage writes figures/summary.json, "
    "figures/*.md and the figures shown here."
)
_PIPE = re.compile(r"(?<!\\)\|")


def load_summary(figures_dir: str | os.PathLike = "figures") -> dict | None:
    """``<figures_dir>/summary.json`` (the report stage's summary), after printing which profile
    wrote it and the active one; None (and how to produce it) when it is missing."""
    from ust.experiments.params import load_params

    path = resolve(figures_dir) / "summary.json"
    if not path.exists():
        print(f"{path} does not exist yet. {HOW_TO_PRODUCE}")
        return None
    summary = json.loads(path.read_text())
    active = load_params().get("profile")
    print(f"{figures_dir}/summary.json: profile `{summary.get('profile')}` (active: `{active}`).")
    others = sorted(p.parent.name for p in resolve(figures_dir).glob("*/summary.json"))
    if others:
        print("Snapshots of other profiles: " + ", ".join(f"{figures_dir}/{o}/" for o in others))
    return summary


def teachers_table(summary: dict | None) -> pd.DataFrame:
    """One row per teacher (``p<p>-<losses>``): held-out triplet accuracy at random
    initialisation and trained (fractions in [0, 1]); empty without a summary."""
    rows = (summary or {}).get("teachers", {})
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("teacher")


def oneclass_means(summary: dict | None) -> pd.DataFrame:
    """Mean one-class ROC-AUC per method (rows, ``method:teacher``) and dataset, over the classes
    the profile ran (``ours <dataset>``), beside the papers' ten-class mean of the same method
    (``paper <dataset>``: [P] Table 1, [IGD] Table 1 for IGD and Fashion-MNIST; the paper's
    baselines use the (k,c) teacher; NaN where no paper has a number); empty without a summary."""
    means = (summary or {}).get("oneclass_mean_auc", {})
    keys = sorted({k for per in means.values() for k in per}, key=_method_order)
    table = pd.DataFrame(index=pd.Index(keys, name="method"))
    for dataset, per in sorted(means.items()):
        table[f"ours {dataset}"] = [per.get(k, math.nan) for k in keys]
        table[f"paper {dataset}"] = [_paper_mean(dataset, k) for k in keys]
    return table


def _paper_mean(dataset: str, key: str) -> float:
    """The papers' ten-class mean ROC-AUC of our row ``key`` (``method:teacher``) on ``dataset``."""
    method, _, teacher = key.partition(":")
    name = paper_key(method, teacher)
    pub = published_row(dataset, name) if name else None
    return math.nan if pub is None or pub.mean is None else float(pub.mean)


def _method_order(key: str) -> tuple[int, str]:
    order = list(DEFAULT_METHOD_MAP)
    return (order.index(key) if key in order else len(order), key)


def mvtec_table(summary: dict | None, metric: str = "au_pro") -> pd.DataFrame:
    """Categories × methods (``p<p>`` per scale, ``multiscale``, baselines) of one MVTec metric
    (``au_pro``, ``pixel_auroc`` or ``image_auroc``, in [0, 1]); empty without a summary."""
    rows = {
        cat: {m: v.get(metric) for m, v in methods.items()}
        for cat, methods in (summary or {}).get("mvtec", {}).items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("category")
    scales = sorted((c for c in table if c[1:].isdigit()), key=lambda c: int(c[1:]))
    return table[scales + [c for c in table if c not in scales]]


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in _PIPE.split(line.strip())[1:-1]]


def _frame(lines: list[str]) -> pd.DataFrame:
    header, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    frame = pd.DataFrame(body, columns=header).replace("–", np.nan)
    for col in frame:
        numeric = pd.to_numeric(frame[col], errors="coerce")
        if numeric.notna().sum() == frame[col].notna().sum():
            frame[col] = numeric
    return frame


def markdown_tables(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Every pipe table of a Markdown file as a DataFrame (numbers as floats, "–" as NaN), keyed by
    the heading above it (or the file name); the text between heading and table is kept in
    ``frame.attrs["caption"]``."""
    path = resolve(path)
    tables: dict[str, pd.DataFrame] = {}
    heading, text, block = path.name, [], []
    for line in [*path.read_text().splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            key = heading if heading not in tables else f"{heading} ({len(tables) + 1})"
            tables[key] = _frame(block)
            tables[key].attrs["caption"] = " ".join(text).strip()
            block, text = [], []
        if line.startswith("#"):
            heading, text = line.lstrip("#").strip(), []
        elif line.strip():
            text.append(line.strip())
    return tables


def show_tables(name: str, figures_dir: str | os.PathLike = "figures") -> None:
    """Display each table of ``<figures_dir>/<name>`` (:func:`markdown_tables`) under its heading
    and caption; a note when the file does not exist."""
    from IPython.display import Markdown, display

    path = resolve(figures_dir) / name
    if not path.exists():
        display(Markdown(f"*{figures_dir}/{name} not produced yet.* {HOW_TO_PRODUCE}"))
        return
    for heading, table in markdown_tables(path).items():
        display(Markdown(f"**{heading}** {table.attrs.get('caption', '')}"))
        display(table)


def figure(name: str, figures_dir: str | os.PathLike = "figures"):
    """``<figures_dir>/<name>`` as an :class:`IPython.display.Image` (shown inline), or a Markdown
    note saying how to produce it when the file does not exist."""
    from IPython.display import Image, Markdown

    path = resolve(figures_dir) / name
    if path.exists():
        return Image(filename=str(path))
    return Markdown(f"*{figures_dir}/{name} not produced yet.* {HOW_TO_PRODUCE}")


def _mvtec_sentence(summary: dict) -> str:
    fused = {
        c: m[MULTISCALE]["au_pro"] for c, m in summary.get("mvtec", {}).items() if MULTISCALE in m
    }
    if not fused:
        return "no MVTec results"
    text = f"MVTec multiscale mean AU-PRO {number(np.mean(list(fused.values())))} over {len(fused)} categories"
    shared = [c for c in fused if c in PAPER_TABLE3]
    if not shared:
        return (
            text
            + " (none of them is in the paper's Table 3, which covers the 15 MVTec AD categories)"
        )
    paper = np.mean([PAPER_TABLE3[c][MULTISCALE] for c in shared])
    ours = np.mean([fused[c] for c in shared])
    return (
        text
        + f"; on the {len(shared)} categories the paper has: {number(ours)} against its {number(paper)}"
    )


def ours_vs_paper(summary: dict | None) -> str:
    """One sentence from ``summary.json`` and the paper's numbers: the students' mean one-class
    ROC-AUC per dataset beside Table 1, and the multiscale mean AU-PRO beside Table 3."""
    if summary is None:
        return f"No results yet. {HOW_TO_PRODUCE}"
    parts = []
    for dataset, per in sorted(summary.get("oneclass_mean_auc", {}).items()):
        for key, auc in per.items():
            if not key.startswith("students"):
                continue
            paper = _paper_mean(dataset, key)
            name = DATASET_TITLES.get(dataset, dataset)
            parts.append(
                f"{name} {key} mean ROC-AUC {number(auc)} over the classes run"
                + (f" (paper, ten classes: {number(paper, 4)})" if not math.isnan(paper) else "")
            )
    parts.append(_mvtec_sentence(summary))
    return f"Profile `{summary.get('profile')}`: " + "; ".join(parts) + "."
