"""Notebook 20 (one-class classification, paper §4.1, Tables 1, 6, 7; IGD Table 1): the ROC curves of
the students and every baseline on this normal class, this class's ROC-AUCs beside the papers', and
one generated sentence.

Inputs: the result JSONs of one stage folder (:func:`ust.experiments.oneclass.write_class_result`)
and its ``scores.npz`` (:func:`ust.stages.oneclass.write_scores`). The papers' numbers come from
:func:`ust.report.tables_oneclass.published_row`: per class where the paper prints them (MNIST
Table 6, CIFAR-10 Table 7), else the printed mean over the ten classes (Table 1, IGD Table 1).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ust.paths import resolve
from ust.report.tables_oneclass import (
    DATASET_TITLES,
    DEFAULT_METHOD_MAP,
    REFERENCE_ROWS,
    PublishedRow,
    published_row,
    row_key,
)
from ust.report.views import comparison_table, number

__all__ = [
    "PAPER_ROWS",
    "class_records",
    "ours_vs_paper",
    "paper_comparison",
    "paper_key",
    "read_scores",
    "roc_curves",
]

#: the marker of a result file (:data:`ust.experiments.oneclass.RESULT_KIND`)
RESULT_KIND = "ust.oneclass_result"
#: per-image scores of a stage folder (:data:`ust.stages.oneclass.SCORES_FILE`)
SCORES_FILE = "scores.npz"
#: our baseline names → the papers' rows (the paper ran its baselines on the (k,c) teacher)
PAPER_ROWS = {
    "1nn": "1-NN",
    "kmeans": "KMeans",
    "ocsvm": "OC-SVM",
    "l2ae": "ℓ2-AE",
    "vae": "VAE",
    "igd": "Scratch / Ours (IGD)",
}
#: the teacher whose descriptors the paper's baselines use
PAPER_BASELINE_TEACHER = "kc"


def class_records(out_dir: str | os.PathLike) -> list[dict]:
    """Every result file in ``out_dir`` (one normal class), students first, then in
    :data:`DEFAULT_METHOD_MAP` order and by name; each a dict with ``dataset``, ``class``,
    ``class_name``, ``method``, ``teacher_config``, ``auc``, counts and ``key`` (:func:`row_key`)."""
    records = []
    for path in sorted(resolve(out_dir).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and record.get("kind") == RESULT_KIND:
            record["key"] = row_key(record["method"], record.get("teacher_config") or "")
            records.append(record)
    if not records:
        raise FileNotFoundError(f"no one-class result files in {resolve(out_dir)}")
    names = list(dict.fromkeys(k.split(":")[0] for k in DEFAULT_METHOD_MAP))
    rank = {name: i for i, name in enumerate(names)}
    return sorted(records, key=lambda r: (rank.get(r["method"], len(rank)), r["key"]))


def read_scores(out_dir: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(labels (N_test,) 1 = anomalous, {method label: (N_test,) scores})`` from
    ``<out_dir>/scores.npz``; higher scores = more anomalous."""
    path = resolve(out_dir) / SCORES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: re-run the stage (it writes the scores)")
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    labels = arrays.pop("labels")
    arrays.pop("classes", None)
    return labels, arrays


def _title(record: dict) -> str:
    dataset = DATASET_TITLES.get(record["dataset"], record["dataset"])
    return f"{dataset}, normal class {record['class_name']!r}"


def roc_curves(out_dir: str | os.PathLike) -> Figure:
    """One axes: the ROC curve (true against false positive rate on the test set, anomalous = the
    other classes) of every method of ``scores.npz``, its ROC-AUC in the legend; the students
    drawn thicker, chance as a dotted diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, scores = read_scores(out_dir)
    record = class_records(out_dir)[0]
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.subplots()
    for name, values in sorted(scores.items(), key=lambda kv: not kv[0].startswith("students")):
        fpr, tpr, _ = roc_curve(labels, values)
        auc = roc_auc_score(labels, values)
        width = 2.4 if name.startswith("students") else 1.2
        ax.plot(fpr, tpr, lw=width, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(f"{_title(record)}: {len(labels)} test images", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def paper_key(method: str, teacher_config: str = "") -> str | None:
    """The papers' row compared with one of our methods: students on teacher ``mc`` →
    ``"Ours (m,c)"``, a baseline → :data:`PAPER_ROWS`; None for rows of ours only."""
    if method == "students":
        return f"Ours ({','.join(teacher_config)})" if teacher_config else None
    return PAPER_ROWS.get(method)


def _paper_value(pub: PublishedRow, cls: int) -> tuple[float | None, str]:
    """(the published number for class ``cls``, note): per class when printed, else the mean."""
    if pub.per_class is not None:
        return pub.per_class[cls], ""
    return pub.mean, "paper: mean over the ten classes (no per-class number printed)"


def _row(record: dict) -> dict:
    key = paper_key(record["method"], record.get("teacher_config") or "")
    pub = published_row(record["dataset"], key) if key else None
    row = {"quantity": f"{record['key']} ROC-AUC", "ours": record["auc"]}
    if pub is None:
        row["note"] = "reference, not in the paper" if key is None else "not in the papers"
        return row
    paper, note = _paper_value(pub, int(record["class"]))
    teacher = record.get("teacher_config") or ""
    if record["method"] in PAPER_ROWS and teacher and teacher != PAPER_BASELINE_TEACHER:
        note = "; ".join(filter(None, [note, f"paper: on the ({PAPER_BASELINE_TEACHER}) teacher"]))
    return {**row, "paper": paper, "source": f"{pub.source}: {pub.key}", "note": note}


def paper_comparison(out_dir: str | os.PathLike) -> pd.DataFrame:
    """This normal class's ROC-AUC of every method of ``out_dir`` beside the papers' number for the
    same class (or the printed ten-class mean), then the papers' reference rows for this dataset
    that nothing here is compared with (e.g. IGD Table 1 means on Fashion-MNIST); layout of
    :func:`ust.report.views.comparison_table`."""
    records = class_records(out_dir)
    rows = [_row(r) for r in records]
    dataset, cls = records[0]["dataset"], int(records[0]["class"])
    used = {paper_key(r["method"], r.get("teacher_config") or "") for r in records}
    for ref in REFERENCE_ROWS:
        pub = published_row(dataset, ref)
        if pub is None or ref in used:
            continue
        paper, note = _paper_value(pub, cls)
        rows.append(
            {
                "quantity": f"{ref} (published only)",
                "paper": paper,
                "source": f"{pub.source}: {pub.key}",
                "note": "; ".join(filter(None, ["for reference", note])),
            }
        )
    return comparison_table(rows)


def _best(table: pd.DataFrame, column: str) -> tuple[str, float] | None:
    """(method, value) of the largest ``column`` outside the students' rows, per-class numbers
    preferred over ten-class means; None when there is none."""
    rows = table[~table.index.str.startswith("students") & table[column].notna()]
    per_class = rows[~rows["note"].str.contains("mean over")]
    rows = per_class if len(per_class) else rows
    if rows.empty:
        return None
    name = rows[column].idxmax()
    return name.removesuffix(" ROC-AUC").removesuffix(" (published only)"), rows.loc[name, column]


def ours_vs_paper(out_dir: str | os.PathLike) -> str:
    """One sentence for this normal class: the students' ROC-AUC beside the paper's, then our best
    baseline and the best published number of another method."""
    records = class_records(out_dir)
    table = paper_comparison(out_dir)
    first = records[0]
    parts = [
        f"{_title(first)}, {first['n_test']} test images ({first['n_test_anomalous']} anomalous):"
    ]
    for r in (r for r in records if r["method"] == "students"):
        row = table.loc[f"{r['key']} ROC-AUC"]
        if math.isnan(row["paper"]):
            parts.append(
                f"students ({r['teacher_config']}) reach ROC-AUC {number(r['auc'])} (the papers "
                "print no number for them on this dataset);"
            )
        else:
            parts.append(
                f"students ({r['teacher_config']}) reach ROC-AUC {number(r['auc'])} against "
                f"{number(row['paper'])} ({row['paper source']}; difference "
                f"{row['ours − paper']:+.3f});"
            )
    ours, paper = _best(table, "ours"), _best(table, "paper")
    if ours:
        parts.append(f"our best other method is {ours[0]} with {number(ours[1])}")
    if paper:
        parts.append(f"and the papers' best other method {paper[0]} with {number(paper[1])}")
    return " ".join(parts).rstrip(";") + "."
