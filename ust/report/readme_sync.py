"""Tables the pipeline writes into ``figures/`` and their copies embedded in ``README.md``.

Every number in a README results table comes from a file a stage wrote: the report stage writes
``figures/*.md`` from the stages' metrics files, ``python -m ust.report.readme_sync snapshot`` keeps a copy of
them under ``figures/<profile>/`` (so that a quick default run does not replace the README's
``offline_full`` tables), and ``python -m ust.report.readme_sync sync`` copies each file between its
``<!-- BEGIN figures/X.md -->`` / ``<!-- END figures/X.md -->`` markers in the README.

Besides the tables, the report stage draws two summary heatmaps, ``figures/oneclass_auc.png`` and
``figures/mvtec_au_pro.png`` (:func:`write_summary_figures`); each is skipped when its results are
absent.

``figures/claims.md`` holds the reproduction checks (:mod:`ust.report.claims`): the paper's claims
and, apart, our sanity floors, from the numbers of ``summary.json``, which stores the same checks
under ``"claims"``. Every table labels a model trained for fewer than
:data:`ust.report.claims.MIN_OPTIMIZER_STEPS` optimiser steps "under-trained (N steps)";
``summary.json`` keeps the recorded steps under ``"steps"`` (:func:`training_steps`).
``python -m ust.report.readme_sync claims <summary.json> [--spread <jsonl>]`` re-derives the checks
of an existing summary (e.g. a snapshot) without re-running the report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from ust.experiments.params import load_params
from ust.io import atomic_write, atomic_write_text
from ust.paths import ROOT, resolve

MARKER = re.compile(r"<!-- BEGIN (?P<path>\S+) -->\n.*?<!-- END (?P=path) -->", re.S)

#: files of ``figures/`` that :func:`snapshot` copies to ``figures/<profile>/``
SNAPSHOT_FILES = (
    "teachers.md",
    "oneclass.md",
    "mvtec.md",
    "loco.md",
    "timings.md",
    "claims.md",
    "summary.json",
    "figure1_mvtec.png",
    "figure4_mds.png",
    "figure5_receptive_fields.png",
)
#: summary figures of the report stage: written only when their results exist (see
#: :func:`write_summary_figures`), copied by :func:`snapshot` when present
SUMMARY_FIGURES = ("oneclass_auc.png", "mvtec_au_pro.png")

_TEACHER_BUDGET = (("teacher", "iterations"), ("teacher", "batch_size"))
#: settings a cheaper profile may reduce, per table; :func:`run_instead` lists those that differ
#: from ``profiles/paper.yaml``
BUDGET_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "teachers": _TEACHER_BUDGET,
    "oneclass": _TEACHER_BUDGET
    + tuple(
        ("oneclass_train", k)
        for k in (
            "epochs",
            "max_train",
            "max_test",
            "ae_epochs",
            "igd_epochs",
            "igd_max_train",
            "igd_batch",
        )
    ),
    "mvtec": _TEACHER_BUDGET
    + tuple(
        ("mvtec_data", k)
        for k in ("image_size", "n_train", "n_test_good", "n_test_defect_per_type")
    )
    + tuple(("mvtec_train", k) for k in ("image_size", "epochs", "batch_size", "crop"))
    + tuple(
        ("mvtec_baselines", k)
        for k in (
            "n_1nn",
            "n_fit",
            "ae_epochs",
            "ssim_ae_epochs",
            "ssim_ae_image_size",
            "ssim_ae_patches",
            "ssim_ae_batch",
            "ssim_ae_stride",
        )
    ),
    "loco": _TEACHER_BUDGET
    + tuple(("loco_data", k) for k in ("image_size", "n_train"))
    + tuple(("loco_train", k) for k in ("image_size", "epochs", "students"))
    + tuple(("gcad", k) for k in ("epochs", "batch_size", "unet_depth", "unet_width")),
}


def _setting(value) -> str:
    return "all" if value is None else str(value)


def run_instead(table: str, params: dict | None = None, paper: dict | None = None) -> str:
    """The sentence that says which of the paper's settings a table's profile did not run.

    Compares the :data:`BUDGET_KEYS` of ``table`` ("teachers", "oneclass", "mvtec") in ``params``
    (default: the active parameters) with ``paper`` (default: ``profiles/paper.yaml``); returns
    "" for the paper profile itself.
    """
    params = load_params() if params is None else params
    if params.get("profile") == "paper":
        return ""
    paper = load_params(resolve("profiles/paper.yaml")) if paper is None else paper
    diffs = [
        f"`{sec}.{key}` {_setting(params[sec][key])} (paper: {_setting(paper[sec][key])})"
        for sec, key in BUDGET_KEYS[table]
        if params[sec][key] != paper[sec][key]
    ]
    if table == "oneclass":  # per-dataset budgets (oneclass_dataset.<name>) over oneclass_train
        budget_keys = {k for s, k in BUDGET_KEYS[table] if s == "oneclass_train"}
        for name, values in sorted((params.get("oneclass_dataset") or {}).items()):
            diffs += [
                f"`oneclass_dataset.{name}.{key}` {_setting(value)} "
                f"(paper: {_setting(paper['oneclass_train'][key])})"
                for key, value in (values or {}).items()
                if key in budget_keys and value != paper["oneclass_train"][key]
            ]
    if not diffs:
        return "Iteration counts and sizes: the paper's.\n\n"
    return (
        f"Run instead of the paper's settings (profile `{params.get('profile')}`): "
        + "; ".join(diffs)
        + ".\n\n"
    )


def stage_durations(notebooks_dir: str | os.PathLike = "results/notebooks") -> dict[str, float]:
    """Wall-clock seconds of every executed stage notebook, from papermill's metadata
    (``metadata.papermill.duration``), keyed by the notebook's file stem."""
    out = {}
    for path in sorted(resolve(notebooks_dir).glob("*.ipynb")):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        if meta.get("duration") is None:
            raise ValueError(
                f"{path} has no papermill duration: it did not finish; re-run its stage "
                "(`dvc repro --force <stage>`)"
            )
        out[path.stem] = float(meta["duration"])
    if not out:
        raise FileNotFoundError(f"no executed notebooks under {resolve(notebooks_dir)}")
    return out


_STAGE_GROUPS = (
    ("10_teacher-", "teacher"),
    ("20_one_class-fashion_mnist-", "oneclass, Fashion-MNIST"),
    ("20_one_class-mnist-", "oneclass, MNIST"),
    ("20_one_class-cifar10-", "oneclass, CIFAR-10"),
    ("30_mvtec-", "mvtec (single scale)"),
    ("31_mvtec_multiscale-", "mvtec_multiscale (multiscale + baselines)"),
    ("32_mvtec_loco-", "loco_multiscale (fusion + GCAD)"),
    ("40_mds", "mds"),
)


def timings_table(notebooks_dir: str | os.PathLike = "results/notebooks") -> str:
    """Markdown: wall-clock time of the stages by group (sum, count, mean, max) and the machine."""
    import platform

    import torch

    durations = stage_durations(notebooks_dir)
    groups: dict[str, list[float]] = {}
    for stem, seconds in durations.items():
        name = next((g for prefix, g in _STAGE_GROUPS if stem.startswith(prefix)), stem)
        groups.setdefault(name, []).append(seconds)
    device = (
        f"CUDA {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "no GPU (CPU only)"
    )
    params = load_params()
    lines = [
        f"Stage wall-clock times of profile `{params['profile']}` (papermill's duration of each "
        f"executed notebook) on {os.cpu_count()} CPU cores ({platform.machine()}), torch "
        f"{torch.__version__}, {device}.\n",
        "| stages | count | total min | mean s | max s |",
        "|---|---|---|---|---|",
    ]
    total = 0.0
    for name, values in groups.items():
        total += sum(values)
        lines.append(
            f"| {name} | {len(values)} | {sum(values) / 60:.1f} | "
            f"{sum(values) / len(values):.0f} | {max(values):.0f} |"
        )
    lines.append(f"| **all notebook stages** | {len(durations)} | {total / 60:.1f} | – | – |")
    return "\n".join(lines) + "\n"


def snapshot(out_root: str | os.PathLike = "figures") -> Path:
    """Copy the report's files from ``figures/`` to ``figures/<active profile>/``; returns that
    folder. A missing file of :data:`SNAPSHOT_FILES` is an error; the :data:`SUMMARY_FIGURES` are
    copied when present (and a stale copy removed when not)."""
    import shutil

    root = resolve(out_root)
    missing = [name for name in SNAPSHOT_FILES if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks {', '.join(missing)}: run `dvc repro` (the report stage writes them)"
        )
    dest = root / str(load_params()["profile"])
    for name in SNAPSHOT_FILES + SUMMARY_FIGURES:
        if not (root / name).exists():
            (dest / name).unlink(missing_ok=True)
            continue
        with open(root / name, "rb") as src:
            atomic_write(dest / name, lambda fh, src=src: shutil.copyfileobj(src, fh))
    return dest


#: the ``teacher.decorrelation_normalized`` setting in words (docs/decisions.md#decorrelation-normalisation)
_DECORRELATION = {
    True: "normalised by d(d−1)",
    False: "raw sum",
    "auto": "raw sum where λ_k > 0, normalised by d(d−1) otherwise",
}


def teachers_table(results_dir: str | os.PathLike = "results/teachers") -> str:
    """Markdown table of every pretrained teacher's metrics.json under ``results_dir``; a teacher
    trained for fewer than :data:`ust.report.claims.MIN_OPTIMIZER_STEPS` iterations (one optimiser
    step each) is labelled under-trained in its iterations cell."""
    from ust.report.claims import undertrained_label

    rows = []
    for path in sorted(resolve(results_dir).glob("p*/*/metrics.json")):
        m = json.loads(path.read_text())
        c = m["configuration"]
        label = undertrained_label(m["iterations"])
        rows.append(
            f"| {m['patch_size']} | {m['losses']} | {c['lambda_k']:g} / {c['lambda_m']:g} / "
            f"{c['lambda_c']:g} | {m['iterations']}{', ' + label if label else ''} | "
            f"{m['triplet_accuracy_random_init']:.3f} | "
            f"{m['triplet_accuracy_trained']:.3f} | {m['iterations_per_s']:.2f} |"
        )
    if not rows:
        raise FileNotFoundError(
            f"no teacher metrics under {resolve(results_dir)}: run `dvc repro teacher`"
        )
    params = load_params()
    t = params["teacher"]
    head = (
        f"Teachers of profile `{params['profile']}`: batch {t['batch_size']}, Adam {t['lr']:g}, "
        f"decorrelation {_DECORRELATION[t['decorrelation_normalized']]}. "
        "Triplet accuracy: fraction of held-out triplets (images never used in training) with "
        "d(anchor, positive) < d(anchor, negative).\n\n"
        + run_instead("teachers", params)
        + "| p | losses | λ_k / λ_m / λ_c | iterations | triplet acc. (random init) | "
        "triplet acc. (trained) | it/s |\n|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows) + "\n"


def write_teachers_table(out: str | os.PathLike = "figures/teachers.md") -> Path:
    path = resolve(out)
    atomic_write_text(path, teachers_table())
    return path


def oneclass_tables(results_dir: str | os.PathLike = "results/oneclass") -> tuple[str, dict]:
    """Markdown per dataset (per-class AUC beside the published rows, "ours" rows of under-trained
    methods labelled, :func:`oneclass_labels`) and mean AUCs per method."""
    from ust.experiments.oneclass import collect_results
    from ust.report.tables_oneclass import default_data_label, oneclass_table, to_markdown

    df = collect_results(resolve(results_dir))
    params = load_params()
    profile = params["profile"]
    parts, means = [run_instead("oneclass", params).rstrip("\n") + "\n"], {}
    for dataset in sorted(df["dataset"].unique()):
        label = default_data_label(df, dataset)
        rows = df[df["dataset"] == dataset]
        classes = sorted(rows["class"].unique())
        parts.append(
            f"#### {dataset}\n\nData: {label}. Profile: `{profile}`. Normal classes run: "
            f"{', '.join(map(str, classes))} ({'all ten' if len(classes) == 10 else 'a subset'}). "
            "ROC-AUC, anomalous = the other nine classes; rows 'published' are the papers' numbers.\n\n"
            + to_markdown(oneclass_table(df, dataset), oneclass_labels(df, dataset))
        )
        means[dataset] = {
            f"{m}:{c}" if c else m: float(g["auc"].mean())
            for (m, c), g in rows.groupby(["method", "teacher_config"])
        }
    return "\n".join(parts), means


def oneclass_labels(df, dataset: str) -> dict[str, str]:
    """``{row key: "under-trained (N–M steps)"}`` of the one-class rows of ``dataset`` (a
    :func:`ust.experiments.oneclass.collect_results` frame) whose fewest steps over the classes are
    below :data:`ust.report.claims.MIN_OPTIMIZER_STEPS`."""
    from ust.report.claims import undertrained_label
    from ust.report.tables_oneclass import step_ranges

    labels = {k: undertrained_label(lo, hi) for k, (lo, hi) in step_ranges(df, dataset).items()}
    return {k: v for k, v in labels.items() if v}


def training_steps(
    teachers_dir: str | os.PathLike = "results/teachers",
    oneclass_dir: str | os.PathLike = "results/oneclass",
    mvtec_dir: str | os.PathLike = "results/mvtec",
    multiscale_dir: str | os.PathLike = "results/mvtec_multiscale",
) -> dict:
    """``summary["steps"]``: the optimiser steps each trained model recorded, and the threshold.

    Returns:
        ``{"min_optimizer_steps": MIN_OPTIMIZER_STEPS, "teachers": {"p<p>-<losses>": iterations},
        "oneclass": {dataset: {row key: {"min", "max"}}} (over the classes), "mvtec": {category:
        {model: steps}}}`` (:func:`ust.report.tables_mvtec.mvtec_steps`: per student for the
        scales, the fewest of the scales for ``multiscale``); models without a count are left out.
    """
    from ust.experiments.oneclass import collect_results
    from ust.report.claims import MIN_OPTIMIZER_STEPS
    from ust.report.tables_mvtec import mvtec_steps
    from ust.report.tables_oneclass import step_ranges

    teachers = {}
    for path in sorted(resolve(teachers_dir).glob("p*/*/metrics.json")):
        m = json.loads(path.read_text())
        teachers[f"p{m['patch_size']}-{m['losses']}"] = int(m["iterations"])
    df = collect_results(resolve(oneclass_dir))
    oneclass = {
        ds: {k: {"min": lo, "max": hi} for k, (lo, hi) in step_ranges(df, ds).items()}
        for ds in sorted(df["dataset"].unique())
    }
    params = load_params()
    mvtec = mvtec_steps(
        list(params["mvtec"]["categories"]),
        params["mvtec"]["patch_sizes"],
        results_dir=resolve(mvtec_dir),
        multiscale_dir=resolve(multiscale_dir),
    )
    return {
        "min_optimizer_steps": MIN_OPTIMIZER_STEPS,
        "teachers": teachers,
        "oneclass": {ds: v for ds, v in oneclass.items() if v},
        "mvtec": {c: v for c, v in mvtec.items() if v},
    }


def texture_categories(params: dict | None = None) -> list[str]:
    """Categories whose claims include the raw-pixel floor: ``mvtec_baselines.texture_categories``
    of ``params`` (default: the active parameters)."""
    params = load_params() if params is None else params
    return list((params.get("mvtec_baselines") or {}).get("texture_categories") or ())


def add_claims(
    summary: dict, out: str | os.PathLike, spread: str | os.PathLike | None = None
) -> list:
    """Reproduction checks on ``summary`` (:func:`ust.report.claims.write_claims`: the paper's
    claims and the sanity floors, with the seed spread of ``spread``, default
    :data:`ust.report.claims.DEFAULT_SPREAD`), stored in ``summary["claims"]`` and written to
    ``<out>/claims.md``. The settings are the active profile's when the summary is of that
    profile, else ``profiles/<profile>.yaml`` (texture categories from :func:`texture_categories`
    when neither is known). Returns the paper's claims, then the floors."""
    from ust.experiments.config import load_config
    from ust.report.claims import profile_config, write_claims

    active = load_config()
    name = summary.get("profile")
    profile = active if active.profile == name else profile_config(name)
    checks = write_claims(
        summary,
        out,
        texture_categories=None if profile is not None else texture_categories(),
        spread_path=spread,
        profile=profile,
    )
    return checks.paper + checks.floors


def rederive_claims(
    summary_path: str | os.PathLike, spread: str | os.PathLike | None = None
) -> Path:
    """Re-check the claims of an existing ``summary.json`` (e.g. ``figures/offline_full/``): its
    ``"claims"`` and the ``claims.md`` beside it are rewritten; returns the Markdown path."""
    path = resolve(summary_path)
    summary = json.loads(path.read_text())
    add_claims(summary, path.parent, spread)
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path.parent / "claims.md"


def loco_report_tables() -> tuple[str, dict]:
    """``loco.md`` (:func:`ust.report.tables_loco.loco_tables`) under its "run instead" line."""
    from ust.report.tables_loco import loco_tables

    text, summary = loco_tables()
    params = load_params()
    data = params["loco_data"]
    where = (
        f"the offline scene set ({data['image_size']} px, {data['n_train']} training images per "
        f"category)"
        if data["synthetic"]
        else f"MVTec LOCO AD at `{data['root']}`"
    )
    return f"Data: {where}. " + run_instead("loco") + text, summary


def _mvtec_data_label(params: dict) -> str:
    data = params["mvtec_data"]
    if data["synthetic"]:
        return (
            f"the offline MVTec-layout texture set (real texture photographs with synthetic "
            f"defects, {data['image_size']} px, not the paper's data)"
        )
    return f"MVTec AD at {data['root']}"


def mvtec_report_tables(
    results_dir: str | os.PathLike = "results/mvtec",
    multiscale_dir: str | os.PathLike = "results/mvtec_multiscale",
) -> tuple[str, dict]:
    """Table 3 and Table 2 shaped Markdown for the categories and scales (``mvtec.patch_sizes``) of
    the active profile, and the per-category summary of :func:`category_summary`.

    Args:
        results_dir: root of the single-scale runs, ``<category>/p<p>/``.
        multiscale_dir: root of the multiscale runs, ``<category>/``.
    """
    from ust.report.tables_mvtec import category_summary, multiscale_run
    from ust.report.tables_mvtec import mvtec_tables as tables

    params = load_params()
    cats = list(params["mvtec"]["categories"])
    t3, t2 = tables(
        results_dir,
        cats,
        _mvtec_data_label(params),
        params["profile"],
        multiscale_dir=multiscale_dir,
        scales=params["mvtec"]["patch_sizes"],
    )
    text = (
        run_instead("mvtec", params)
        + "#### AU-PRO by receptive field (Table 3)\n\n"
        + t3
        + "\n#### Baselines (Table 2)\n\n"
        + t2
    )
    summary = {c: category_summary(multiscale_run(multiscale_dir, c)) for c in cats}
    return text, summary


def mvtec_figures(
    results_dir: str | os.PathLike = "results/mvtec",
    out: str | os.PathLike = "figures",
    multiscale_dir: str | os.PathLike = "results/mvtec_multiscale",
) -> None:
    """Figure 1 (inputs with the ground truth, multiscale maps) and Figure 5 (inputs, the map of
    every scale of ``mvtec.patch_sizes`` and multiscale) across categories, each category with
    the first good test image and the first test image of every defect type
    (:func:`ust.report.figures_mvtec.first_of_each_defect`, docs/decisions.md#figure-selection) on
    one colour scale per category."""
    from ust.data.mvtec import load_anomaly_map, load_image, load_mask, validate_category
    from ust.experiments.outputs import single_scale_run_dir
    from ust.report.figures_mvtec import first_of_each_defect
    from ust.report.figures_summary import plot_defect_grid
    from ust.report.tables_mvtec import multiscale_run, mvtec_data_root, patch_sizes

    params = load_params()
    root = mvtec_data_root()
    scales = patch_sizes(params["mvtec"]["patch_sizes"])
    fig1, fig5 = [], []
    for cat in params["mvtec"]["categories"]:
        samples = first_of_each_defect(validate_category(root, cat).test)
        runs = {f"p = {p}": single_scale_run_dir(results_dir, cat, p) for p in scales}
        runs["multiscale"] = multiscale_run(multiscale_dir, cat)
        maps = {
            label: [
                load_anomaly_map(folder / "maps" / cat / "test" / f"{s.image_id}.tiff")
                for s in samples
            ]
            for label, folder in runs.items()
        }
        block = {
            "name": cat,
            "titles": [s.image_id for s in samples],
            "images": [load_image(s.path).permute(1, 2, 0).numpy() for s in samples],
            "masks": [load_mask(s.mask_path, s.size).numpy() for s in samples],
        }
        fig1.append(block | {"maps": {"multiscale": maps["multiscale"]}})
        fig5.append(block | {"maps": maps})
    out = resolve(out)
    plot_defect_grid(fig1, out / "figure1_mvtec.png")
    plot_defect_grid(fig5, out / "figure5_receptive_fields.png", panel=1.2)


def write_summary_figures(
    out: str | os.PathLike = "figures",
    *,
    oneclass_dir: str | os.PathLike = "results/oneclass",
    mvtec_dir: str | os.PathLike = "results/mvtec",
    multiscale_dir: str | os.PathLike = "results/mvtec_multiscale",
) -> dict[str, Path | None]:
    """Draw ``<out>/oneclass_auc.png`` (:func:`oneclass_auc_heatmap` of every one-class result) and
    ``<out>/mvtec_au_pro.png`` (:func:`mvtec_metric_heatmap` of AU-PRO for the categories and scales
    of the active profile). A figure whose results are absent is skipped and a stale copy removed.

    Returns:
        ``{file name: written path, or None when skipped}``.
    """
    from ust.experiments.oneclass import collect_results
    from ust.report.figures_summary import mvtec_metric_heatmap, oneclass_auc_heatmap
    from ust.report.tables_mvtec import mvtec_metric_frame

    out = resolve(out)
    params = load_params()
    written: dict[str, Path | None] = dict.fromkeys(SUMMARY_FIGURES)
    results = collect_results(resolve(oneclass_dir))
    if not results.empty:
        written["oneclass_auc.png"] = out / "oneclass_auc.png"
        oneclass_auc_heatmap(results, written["oneclass_auc.png"])
    frame = mvtec_metric_frame(
        list(params["mvtec"]["categories"]),
        params["mvtec"]["patch_sizes"],
        results_dir=mvtec_dir,
        multiscale_dir=multiscale_dir,
    )
    if frame.notna().any().any():
        written["mvtec_au_pro.png"] = out / "mvtec_au_pro.png"
        mvtec_metric_heatmap(frame, written["mvtec_au_pro.png"], metric="au_pro")
    for name, path in written.items():
        if path is None:
            (out / name).unlink(missing_ok=True)
    return written


def write_tables(out: str | os.PathLike = "figures") -> dict:
    """Every table and summary figure the README embeds, from the stages' result files: the
    Markdown tables, ``claims.md`` (:func:`add_claims`), ``summary.json`` (with ``"steps"``,
    :func:`training_steps`, and ``"claims"``), Figures 1, 4 and 5 and the
    :data:`SUMMARY_FIGURES`."""
    import shutil

    out = resolve(out)
    atomic_write_text(out / "teachers.md", teachers_table())
    oc_text, oc_means = oneclass_tables()
    atomic_write_text(out / "oneclass.md", oc_text)
    mv_text, mv_summary = mvtec_report_tables()
    atomic_write_text(out / "mvtec.md", mv_text)
    loco_text, loco_summary = loco_report_tables()
    atomic_write_text(out / "loco.md", loco_text)
    atomic_write_text(out / "timings.md", timings_table())
    mvtec_figures(out=out)
    write_summary_figures(out)
    shutil.copyfile(resolve("results/mds/figure4_mds.png"), out / "figure4_mds.png")
    summary = {
        "profile": load_params()["profile"],
        "teachers": {
            f"p{m['patch_size']}-{m['losses']}": {
                "triplet_accuracy_random_init": m["triplet_accuracy_random_init"],
                "triplet_accuracy_trained": m["triplet_accuracy_trained"],
            }
            for m in (
                json.loads(p.read_text())
                for p in sorted(resolve("results/teachers").glob("p*/*/metrics.json"))
            )
        },
        "oneclass_mean_auc": oc_means,
        "mvtec": mv_summary,
        "loco_au_spro": loco_summary,
        "steps": training_steps(
            resolve("results/teachers"),
            resolve("results/oneclass"),
            resolve("results/mvtec"),
            resolve("results/mvtec_multiscale"),
        ),
    }
    add_claims(summary, out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def markdown_section(text: str, anchor: str) -> str:
    """The part of a Markdown ``text`` that follows ``<a id="anchor"></a>``, up to the next anchor
    line or the end (headings demoted one level, so a ``##`` section becomes a README ``###``)."""
    start = text.find(f'<a id="{anchor}"></a>\n')
    if start < 0:
        raise KeyError(f"no anchor {anchor!r} in the embedded Markdown file")
    body = text[start:].split("\n", 1)[1]
    end = body.find('\n<a id="')
    body = body if end < 0 else body[: end + 1]
    return re.sub(r"^(#+) ", r"#\1 ", body.rstrip("\n") + "\n", flags=re.M)


def embedded_text(rel: str) -> str:
    """What the README embeds for ``rel``: a file, or ``file#anchor`` for one section of a file."""
    file, _, anchor = rel.partition("#")
    source = ROOT / file
    if not source.exists():
        return "(not produced yet: run `make reproduce`)\n"
    text = source.read_text()
    return markdown_section(text, anchor) if anchor else text


def sync_readme(readme: str | os.PathLike = "README.md", *, check: bool = False) -> list[str]:
    """Copy each embedded ``figures/*.md`` (or ``docs/decisions.md#<anchor>`` section) into the
    README; returns the paths that differ(ed).

    With ``check`` nothing is written (a test uses it to prove the README shows pipeline output).
    """
    path = resolve(readme)
    text = path.read_text()
    stale = []

    def replace(match: re.Match) -> str:
        rel = match.group("path")
        body = embedded_text(rel)
        new = f"<!-- BEGIN {rel} -->\n{body}<!-- END {rel} -->"
        if new != match.group(0):
            stale.append(rel)
        return new

    new_text = MARKER.sub(replace, text)
    if stale and not check:
        atomic_write_text(path, new_text)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ust.report.readme_sync")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("teachers", help="write figures/teachers.md from results/teachers")
    sub.add_parser("tables", help="write every figures/ table, summary.json and figure")
    sub.add_parser("snapshot", help="copy figures/ files to figures/<active profile>/")
    claims = sub.add_parser(
        "claims", help="re-derive claims.md and the claims of an existing summary.json"
    )
    claims.add_argument("summary", nargs="?", default="figures/summary.json")
    claims.add_argument(
        "--spread", help="seed-spread JSON lines (default: benchmarks/results/seed_spread.jsonl)"
    )
    sync = sub.add_parser("sync", help="copy figures/*.md into README.md between markers")
    sync.add_argument("--check", action="store_true", help="only report stale blocks (exit 1)")
    args = parser.parse_args(argv)
    if args.cmd == "teachers":
        print(write_teachers_table())
        return 0
    if args.cmd == "tables":
        write_tables()
        skipped = [n for n in SUMMARY_FIGURES if not resolve(f"figures/{n}").exists()]
        print("figures/ written" + "".join(f"; figures/{n} skipped (no results)" for n in skipped))
        return 0
    if args.cmd == "claims":
        print(f"{rederive_claims(args.summary, args.spread)} written")
        return 0
    if args.cmd == "snapshot":
        print(f"figures copied to {snapshot()}")
        return 0
    stale = sync_readme(check=args.check)
    print("\n".join(stale) if stale else "README up to date")
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    raise SystemExit(main())
