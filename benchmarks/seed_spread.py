"""Seed spread of the headline numbers: how far one number moves when only the seed changes.

On the settings of a profile (default ``profiles/offline_full.yaml``, read with
:func:`ust.experiments.config.load_config`), for every seed of ``--seeds`` (default 0 1 2) the seed
of ``mvtec_train`` / ``oneclass_train`` is set (it seeds the validation split, the students'
initialisation and data order, and the baselines' subsets and autoencoders; on the MNIST subset and
with ``max_train``/``max_test`` also which images are used) and a subset of the pipeline is re-run
with the library's experiment functions:

* texture set (``--categories``, default brick and moon): the students of every scale of
  ``mvtec.patch_sizes`` (:func:`ust.experiments.mvtec_single.run_single_scale`), their fusion
  (:func:`ust.experiments.mvtec_multiscale.run_multiscale`) and the Table 2 feature baselines with
  the raw-pixel floor (:func:`ust.experiments.mvtec_baselines.run_feature_baselines`; the SSIM-AE is
  not re-run): AU-PRO and pixel ROC-AUC;
* one-class (``--datasets``, default those of the profile; ``--classes``, default 0 and 4): the
  students of each teacher of ``oneclass_train.teacher_configs``
  (:func:`ust.experiments.oneclass.run_students`), the feature baselines
  (:func:`ust.experiments.oneclass.run_feature_baselines`) and the raw-pixel 1-NN: ROC-AUC per class
  and its mean over the classes run (IGD is not re-run).

The teachers are the pipeline's, ``results/teachers/p<p>/<losses>/teacher.pt`` (refused when their
``metrics.json`` records another ``teacher.iterations`` than the profile's: another profile's
teachers); the texture set is ``mvtec_data.root`` (missing categories are built there with the
profile's ``mvtec_data`` settings, byte-identical to the ``mvtec_data`` stage's). The settings are
built as the pipeline's stages build them, so seed 0 should give the profile's committed numbers
(``figures/<profile>/summary.json``), a check that the measurement measures the reported runs.

Output: JSON lines in ``--out`` (default ``benchmarks/results/seed_spread.jsonl``), an environment
line and then one line per number: ``{"benchmark": "seed_spread", "profile", "tiny", "experiment":
"mvtec" | "oneclass", "subject": category | data set, "method": "p17" … "multiscale", "1nn" …,
"raw_nn" | "students:mc", "1nn:mc" …, "1nn_pixels", "metric": "au_pro" | "pixel_auroc" |
"auc_class<k>" | "mean_auc", "seeds", "values", "min", "max", "mean", "std" (sample, ddof 1),
"range"}``. :func:`ust.report.claims.load_spread` reads them (``tiny`` lines excluded) and marks a
claim whose margin is below the range "within seed spread".

Each run's numbers are cached under ``--work`` (default ``scratch/seed_spread``), so an interrupted
measurement resumes where it stopped. On 2 CPU cores the default measurement (2 categories × 3
scales + multiscale + baselines, 2 data sets × 2 classes, 3 seeds) should take about 1 h 20 min to
1 h 30 min (estimated from the stage times of ``figures/offline_full/timings.md``; not yet run):

    python benchmarks/seed_spread.py                   # the real measurement, offline_full
    python benchmarks/seed_spread.py --tiny            # rehearsal: tiny sizes, < 3 min, 1 thread

``--tiny`` keeps the profile's recipe but takes the sizes of ``profiles/smoke.yaml`` (32-px texture
set of 6 training images, one epoch of 2 students, 60 training and 200 test images per class, 1
autoencoder epoch) and, unless given, one category (brick) and one class (0); it pretrains
smoke-size teachers and builds the texture set in a temporary folder, and writes
``benchmarks/results/seed_spread_tiny.jsonl`` with ``"tiny": true``: its numbers say nothing
about the real spread (about 1 min 45 s of CPU time on one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ust.experiments.config import PipelineConfig, load_config
from ust.paths import resolve
from ust.stages.mvtec import run_settings
from ust.stages.mvtec_multiscale import feature_baseline_settings

RESULTS = "benchmarks/results"


def emit(row: dict, lines: list[dict]) -> None:
    print(json.dumps(row), flush=True)
    lines.append(row)


class Setup:
    """What a measurement runs on: the recipe of ``config``, the sizes of ``sizes`` (the same
    config, or ``profiles/smoke.yaml`` with ``--tiny``), the teachers and the data roots."""

    def __init__(self, config: PipelineConfig, sizes: PipelineConfig, work: Path, tiny: bool):
        self.config, self.sizes, self.work, self.tiny = config, sizes, work, tiny
        self.teachers = work / "teachers" if tiny else resolve("results/teachers")
        data = config.mvtec_data
        self.texture_root = work / "textures" if tiny else resolve(data.root)
        self.oneclass_root = work / "torchvision" if tiny else None

    def mvtec_train(self, category: str, seed: int):
        train = self.sizes.mvtec_train_for(category)
        losses = self.config.mvtec_train_for(category).teacher_losses
        return replace(train, seed=seed, teacher_losses=losses, device="cpu")

    def oneclass_train(self, dataset: str, seed: int):
        train = self.sizes.oneclass_train_for(dataset)
        ours = self.config.oneclass_train_for(dataset)
        return replace(
            train,
            seed=seed,
            teacher_configs=ours.teacher_configs,
            baselines=ours.baselines,
            p=ours.p,
            device="cpu",
        )

    def teacher(self, p: int, losses: str):
        """The teacher of (p, losses): the pipeline's file, or with ``--tiny`` a smoke-size one
        pretrained into the work folder first."""
        from ust.method.teacher import load_teacher

        path = self.teachers / f"p{p}" / losses / "teacher.pt"
        if self.tiny and not path.exists():
            from ust.train.teacher import pretrain

            cfg = self.sizes.teacher_for(p, losses, device="cpu")
            pretrain(cfg, path, checkpoint_path=path.parent / "checkpoint.pt", progress=False)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: run the pipeline's teacher stages of profile "
                f"{self.config.profile} first (`make reproduce PROFILE={self.config.profile}`)"
            )
        metrics = path.parent / "metrics.json"
        if not self.tiny and metrics.is_file():
            iterations = json.loads(metrics.read_text()).get("iterations")
            if iterations != self.config.teacher.iterations:
                raise ValueError(
                    f"{path} was trained for {iterations} iterations, profile "
                    f"{self.config.profile} asks for {self.config.teacher.iterations}: these are "
                    "another profile's teachers"
                )
        return load_teacher(path, device="cpu")

    def texture_set(self, categories) -> Path:
        """The MVTec-layout root holding ``categories`` (built with the ``mvtec_data`` settings of
        the sizes' profile, as the ``mvtec_data`` stage builds it)."""
        from ust.stages.mvtec_data import build_texture_set

        if not self.sizes.mvtec_data.synthetic:
            if not all((self.texture_root / c).is_dir() for c in categories):
                raise FileNotFoundError(f"MVTec AD categories missing under {self.texture_root}")
            return self.texture_root
        if any(not (self.texture_root / c).is_dir() for c in categories):
            grid = replace(self.sizes.mvtec, categories=tuple(categories))
            build_texture_set(self.texture_root, replace(self.sizes, mvtec=grid))
        return self.texture_root

    def oneclass_task(self, dataset: str, normal_class: int, train):
        """The one-class task with ``train``'s split (the stage's loader)."""
        from ust.stages.oneclass import load_oneclass_task

        return load_oneclass_task(
            dataset, normal_class, config=self.config, train=train, root=self.oneclass_root
        )


# ------------------------------------------------------------------------------------------ runs
def cached(path: Path, run) -> dict:
    """``run()``'s JSON-able result, cached in ``path`` (an interrupted measurement resumes)."""
    if path.is_file():
        return json.loads(path.read_text())
    result = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def mvtec_seed(setup: Setup, category: str, seed: int) -> dict[str, dict[str, float]]:
    """``{method: {"au_pro", "pixel_auroc"}}`` of one category at one seed."""
    from ust.experiments.mvtec_baselines import run_feature_baselines
    from ust.experiments.mvtec_multiscale import run_multiscale
    from ust.experiments.mvtec_single import run_single_scale

    root = setup.texture_set([category])
    train = setup.mvtec_train(category, seed)
    out = setup.work / f"seed{seed}" / "mvtec" / category
    keep = ("au_pro", "pixel_auroc")
    result: dict[str, dict[str, float]] = {}
    dirs = {}
    for p in setup.config.mvtec.patch_sizes:
        dirs[p] = out / f"p{p}"
        metrics = run_single_scale(
            root,
            category,
            teacher=setup.teacher(p, train.teacher_losses),
            out_dir=dirs[p],
            settings=run_settings(train),
            device="cpu",
            progress=False,
        )
        result[f"p{p}"] = {k: float(metrics[k]) for k in keep}
    fused = run_multiscale(dirs, root, category, out / "multiscale", progress=False)
    result["multiscale"] = {k: float(fused[k]) for k in keep}
    base = setup.sizes.mvtec_baselines
    methods = setup.config.mvtec_baselines.methods
    if methods:
        teacher = setup.teacher(setup.config.mvtec_baselines.p, train.teacher_losses)
        settings = replace(feature_baseline_settings(base, train), methods=methods)
        baselines = run_feature_baselines(
            root, category, teacher, out / "baselines", settings, device="cpu", progress=False
        )
        for name, metrics in baselines.items():
            result[name] = {k: float(metrics[k]) for k in keep}
    return result


def oneclass_seed(setup: Setup, dataset: str, normal_class: int, seed: int) -> dict[str, float]:
    """``{row key: ROC-AUC}`` of one normal class at one seed (students per teacher, feature
    baselines on the first teacher, raw-pixel 1-NN)."""
    from ust.eval.metrics import roc_auc
    from ust.experiments.oneclass import (
        PIXEL_BASELINE,
        pixel_nn_scores,
        run_feature_baselines,
        run_students,
    )
    from ust.stages.oneclass import baseline_settings, student_settings

    train = setup.oneclass_train(dataset, seed)
    data = setup.oneclass_task(dataset, normal_class, train)
    result: dict[str, float] = {}
    students = student_settings(train)
    for losses in train.teacher_configs:
        res = run_students(
            data, setup.teacher(train.p, losses), students, device="cpu", progress=False
        )
        result[f"students:{losses}"] = float(res["auc"])
    if PIXEL_BASELINE in train.baselines:
        labels = data.test_labels.numpy()
        result[PIXEL_BASELINE] = float(roc_auc(pixel_nn_scores(data), labels))
    settings = baseline_settings(train)
    if settings.methods:
        first = train.teacher_configs[0]
        aucs = run_feature_baselines(data, setup.teacher(train.p, first), settings, device="cpu")
        result.update({f"{m}:{first}": float(v) for m, v in aucs.items()})
    return result


# --------------------------------------------------------------------------------------- spread
def spread_line(profile, tiny, experiment, subject, method, metric, seeds, values) -> dict:
    return {
        "benchmark": "seed_spread",
        "profile": profile,
        "tiny": tiny,
        "experiment": experiment,
        "subject": subject,
        "method": method,
        "metric": metric,
        "seeds": list(seeds),
        "values": [round(v, 6) for v in values],
        "min": round(min(values), 6),
        "max": round(max(values), 6),
        "mean": round(statistics.fmean(values), 6),
        "std": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
        "range": round(max(values) - min(values), 6),
    }


def measure(setup: Setup, args, lines: list[dict]) -> None:
    profile, tiny, seeds = setup.config.profile, setup.tiny, args.seeds
    for category in args.categories:
        per_seed = [
            cached(
                setup.work / f"seed{s}" / "mvtec" / f"{category}.json",
                lambda s=s, category=category: mvtec_seed(setup, category, s),
            )
            for s in seeds
        ]
        for method in per_seed[0]:
            for metric in ("au_pro", "pixel_auroc"):
                values = [r[method][metric] for r in per_seed]
                emit(
                    spread_line(profile, tiny, "mvtec", category, method, metric, seeds, values),
                    lines,
                )
    datasets = args.datasets or list(setup.config.oneclass.datasets)
    for dataset in datasets:
        per_class = {
            c: [
                cached(
                    setup.work / f"seed{s}" / "oneclass" / f"{dataset}-{c}.json",
                    lambda s=s, c=c, dataset=dataset: oneclass_seed(setup, dataset, c, s),
                )
                for s in seeds
            ]
            for c in args.classes
        }
        keys = list(next(iter(per_class.values()))[0])
        for key in keys:
            for c, runs in per_class.items():
                values = [r[key] for r in runs]
                emit(
                    spread_line(
                        profile, tiny, "oneclass", dataset, key, f"auc_class{c}", seeds, values
                    ),
                    lines,
                )
            means = [
                statistics.fmean(per_class[c][i][key] for c in per_class) for i in range(len(seeds))
            ]
            emit(
                spread_line(profile, tiny, "oneclass", dataset, key, "mean_auc", seeds, means),
                lines,
            )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="profiles/offline_full.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--categories", nargs="+", default=None, help="default brick moon (--tiny: brick)"
    )
    parser.add_argument("--datasets", nargs="*", default=None, help="default: the profile's")
    parser.add_argument(
        "--classes", type=int, nargs="+", default=None, help="default 0 4 (--tiny: 0)"
    )
    parser.add_argument("--work", default=None, help="run folder (default scratch/seed_spread)")
    parser.add_argument("--out", default=None, help=f"default {RESULTS}/seed_spread[_tiny].jsonl")
    parser.add_argument("--threads", type=int, default=None, help="default 2, --tiny 1")
    parser.add_argument("--tiny", action="store_true", help="rehearsal at smoke sizes (< 3 min)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.categories = args.categories or (["brick"] if args.tiny else ["brick", "moon"])
    args.classes = args.classes or ([0] if args.tiny else [0, 4])
    threads = args.threads or (1 if args.tiny else 2)
    torch.set_num_threads(threads)
    config = load_config(args.profile)
    sizes = load_config("profiles/smoke.yaml") if args.tiny else config
    name = "seed_spread_tiny.jsonl" if args.tiny else "seed_spread.jsonl"
    out = resolve(args.out or f"{RESULTS}/{name}")
    lines: list[dict] = []
    emit(
        {
            "benchmark": "environment",
            "torch": torch.__version__,
            "threads": threads,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "profile": config.profile,
            "tiny": args.tiny,
        },
        lines,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seed_spread_") as tmp:
        work = (
            Path(tmp)
            if args.tiny and args.work is None
            else resolve(args.work or "scratch/seed_spread")
        )
        measure(Setup(config, sizes, work, args.tiny), args, lines)
    emit(
        {
            "benchmark": "seed_spread_time",
            "profile": config.profile,
            "tiny": args.tiny,
            "seconds": round(time.perf_counter() - start, 1),
        },
        lines,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in lines))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
