"""What a student learns between 54 and 800 optimiser steps: AU-PRO, pixel ROC-AUC and validation
regression error per scale, learning-rate schedule, teacher budget and border padding.

Everything runs on the *tuning* category (``--category``, default ``water``) of the offline texture
set, built at the sizes of ``--profile``'s ``mvtec_data`` (``profiles/offline_full.yaml``: 128 px,
60 training, 20 good and 6 × 5 defective test images), with the profile's teacher recipe
(``benchmarks/teacher_budget.py``: λ_m = λ_c = 1, batch 64, Adam 2·10⁻⁴, on the photo pool the
profile names). The reported categories are never read. A run is

* one scale p (``--p``), one teacher budget (``--teacher-iterations``; the teacher is pretrained
  once, checkpointed at every budget and cached in ``--work``),
* M students (``--students``, whole images, batch 1, weight decay 10⁻⁵; the validation split of
  the pipeline, 10 %, seeded),
* one schedule (``--schedules``, ``name:peak_lr``): ``constant`` is trained once to the largest of
  ``--epochs`` and evaluated at every one of them (one epoch = 54 steps); ``warmup_cosine`` is a
  schedule *for* its budget, so every value of ``--epochs`` is its own run, evaluated at its end;
* a training padding (``zero`` unless ``--train-paddings`` adds runs of the first schedule for
  ``--padding-epochs`` epochs in which teacher targets and students both read the padded image).

At an evaluation the e/v statistics come from the validation images and the 50 test images are
scored (ẽ + ṽ; with M = 1 the score is ẽ), with the training padding and, for zero-trained runs at
the epochs of ``--score-padding-epochs``, also with every mode of ``--score-paddings`` (scoring
only). One JSON line per evaluation: AU-PRO (FPR 0.3), pixel and image ROC-AUC; the same on the
interior (maps and masks cropped by the band of ``benchmarks/map_diagnostics.py``: the (p − 1)/2
pixels whose field reads padding), the mean good-pixel score in the band and the interior; the
validation regression error e (mean ‖μ_S − ỹ‖² over validation pixels, per student) overall, in the
band and in the interior; and the process CPU seconds of training and scoring. Lines are printed and
appended to ``--out``; ``--figure`` redraws ``figures/student_budget.png`` from that file
(``--plot-only``: nothing else).

The defaults are the whole grid (p 17/33/65, teachers of 200 and 2000 iterations, M = 3,
1/4/15 epochs, both schedules, both paddings); on one CPU thread that is about 30 hours. The
committed ``benchmarks/results/student_budget.jsonl`` holds the part that fitted 90 CPU minutes, M = 1
(docs/decisions.md#student-budget):

    cd benchmarks; export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1; W="--work /tmp/sb/work --students 1"
    python student_budget.py $W --p 33 --teacher-iterations 200 --epochs 1 4 8 \\
        --schedules constant:1e-4 --score-paddings reflect replicate --train-paddings
    python student_budget.py $W --p 33 --teacher-iterations 200 --epochs 1 4 \\
        --schedules warmup_cosine:1e-3 --score-paddings --train-paddings
    python student_budget.py $W --p 65 --teacher-iterations 200 --epochs 1 \\
        --schedules constant:1e-4 --score-paddings reflect replicate --train-paddings reflect
    python student_budget.py $W --p 17 --teacher-iterations 200 --epochs 1 \\
        --schedules constant:1e-4 --score-paddings --train-paddings
    python student_budget.py $W --p 33 --teacher-iterations 200 --epochs 1 \\
        --schedules constant:1e-4 --train-paddings reflect --padding-runs-only
    python student_budget.py --plot-only
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from map_diagnostics import analyse, band_of  # benchmarks/ is on sys.path when run as a script
from student_ensemble import emit, load_category, start
from teacher_budget import teachers_at_budgets

from ust.data.transforms import upsample_map
from ust.experiments.protocol import compute_metrics
from ust.method.scoring import (
    fit_score_stats,
    normalized_score,
    predictive_variance,
    regression_error,
)
from ust.method.students import StudentTeacher, fit_target_statistics, make_students
from ust.method.teacher import load_teacher
from ust.train.students import (
    StudentTrainingConfig,
    optimizer_steps,
    train_students,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "student_budget.jsonl"
FIGURE = ROOT / "figures" / "student_budget.png"
BATCH = 4  # images per scoring pass


def profile_settings(path: Path) -> dict:
    """The texture-set sizes (``mvtec_data``) and the teachers' photo pool of a profile file."""
    profile = yaml.safe_load(path.read_text())
    return {"mvtec_data": profile["mvtec_data"], "photo_pool": profile["photo_pool"]}


def build_inputs(args, settings: dict) -> tuple[Path, Path]:
    """The tuning category at the profile's sizes and the photo pool, built once in ``--work``."""
    from ust.data.photo_pool import build_photo_pool
    from ust.data.synthetic import make_synthetic_mvtec

    data, pool = args.work / "textures", args.work / "photo_pool"
    spec = settings["mvtec_data"]
    make_synthetic_mvtec(
        data,
        [args.category],
        image_size=spec["image_size"],
        n_train=spec["n_train"],
        n_test_good=spec["n_test_good"],
        n_test_defect_per_type=spec["n_test_defect_per_type"],
        seed=spec["seed"],
        crop_size=spec["crop_size"],
        texture_dir=spec["texture_dir"],
    )
    if not pool.is_dir():
        packages = settings["photo_pool"]["packages"]
        build_photo_pool(pool, packages, settings["photo_pool"]["max_side"])
    return data, pool


def teachers(args, p: int, pool: Path) -> dict[int, tuple[torch.nn.Module, float]]:
    """{iterations: (teacher, pretraining CPU seconds up to that budget)}: pretrained once with
    ``teacher_budget.teachers_at_budgets`` (resumable) and cached per budget in ``--work``."""
    out = args.work / f"teacher_p{p}.pt"
    cached = {b: args.work / f"teacher_p{p}_it{b}.pt" for b in args.teacher_iterations}
    record = args.work / f"teacher_p{p}_cpu.json"
    cpu = json.loads(record.read_text()) if record.is_file() else {}
    missing = [b for b, f in cached.items() if not f.is_file()]
    if missing:
        ns = argparse.Namespace(
            p=p, seed=args.seed, eval_triplets=args.eval_triplets, budgets=sorted(cached)
        )
        t0, before = time.process_time(), max([0.0, *cpu.values()])
        for budget, _, _ in teachers_at_budgets(ns, str(pool), out):
            if not cached[budget].is_file():
                shutil.copy(out, cached[budget])
                cpu[str(budget)] = round(before + time.process_time() - t0, 1)
        record.write_text(json.dumps(cpu))
    return {b: (load_teacher(f, "cpu"), cpu.get(str(b))) for b, f in cached.items()}


@dataclass
class Scorer:
    """Scores a model on the validation and test images of ``data``; the raw teacher descriptors
    are computed once per padding and kept (the teacher is frozen)."""

    data: dict
    p: int
    features: dict = field(default_factory=dict)

    def teacher_features(self, model: StudentTeacher, padding: str) -> dict:
        if padding not in self.features:
            with torch.no_grad():
                self.features[padding] = {
                    split: torch.cat(
                        [
                            model.teacher_features(self.data[split][i : i + BATCH])
                            for i in range(0, len(self.data[split]), BATCH)
                        ]
                    )
                    for split in ("val", "test")
                }
        return self.features[padding]

    def raw(self, model: StudentTeacher, split: str, feats: dict):
        """(e, v) maps of every image of ``split`` (lists of (B, H, W) tensors)."""
        images, targets = self.data[split], feats[split]
        for i in range(0, len(images), BATCH):
            with torch.no_grad():
                preds = model.predictions(images[i : i + BATCH])
                target = model.normalize_features(targets[i : i + BATCH])
                yield regression_error(preds, target), predictive_variance(preds)

    def __call__(self, model: StudentTeacher, padding: str) -> dict:
        """The metrics of the module docstring with the model reading ``padding``."""
        trained_with = model.padding
        model.padding = padding
        model.eval()
        feats = self.teacher_features(model, padding)
        val = list(self.raw(model, "val", feats))
        stats = fit_score_stats(val)
        e_val = torch.cat([e for e, _ in val])  # (N, H, W): per-student error, mean over students
        band = band_of(self.p, e_val.shape[-1], e_val.shape[-1])
        interior = torch.zeros(e_val.shape[-2:], dtype=torch.bool)
        interior[band : e_val.shape[-2] - band, band : e_val.shape[-1] - band] = True
        scores = torch.cat(
            [normalized_score(e, v, stats) for e, v in self.raw(model, "test", feats)]
        )
        test = self.data["index"].test
        maps = [upsample_map(s, smp.size) for s, smp in zip(scores, test, strict=True)]
        masks = self.data["masks"]
        gt_band = band_of(self.p, scores.shape[-1], masks[0].shape[0])
        diag = analyse(maps, masks, gt_band)
        model.padding = trained_with
        model.train()
        return {
            **{k: round(v, 4) for k, v in compute_metrics(maps, masks, 0.3).items()},
            **{k: diag.get(k) for k in ("au_pro_interior", "pixel_auroc_interior")},
            "good_score_band": diag.get("good_score_band"),
            "good_score_interior": diag.get("good_score_interior"),
            "defect_share_in_band": diag.get("defect_share_in_band"),
            "band_px": band,
            "val_error": round(float(e_val.mean()), 4),
            "val_error_band": round(float(e_val[:, ~interior].mean()), 4),
            "val_error_interior": round(float(e_val[:, interior].mean()), 4),
        }


def student_model(teacher, students: int, images: torch.Tensor, padding: str, seed: int):
    """Fresh students on ``teacher`` reading ``padding``, target statistics fitted on ``images``."""
    model = StudentTeacher(teacher, make_students(teacher, students, seed=seed))
    model.padding = padding
    fit_target_statistics(model, images, batch_size=BATCH)
    return model


def run(args, scorer: Scorer, teacher, base: dict, cfg: StudentTrainingConfig, plan: dict) -> None:
    """Train one run; at every epoch of ``plan`` (epoch → scoring paddings) emit one line per
    padding."""
    data = scorer.data
    model = student_model(teacher, args.students, data["train"], cfg.padding, cfg.seed)
    total = optimizer_steps(len(data["train"]), cfg)
    clock = {"train": 0.0, "epoch": 0.0, "t": time.process_time()}

    def on_epoch(epoch: int, losses: list[float]) -> None:
        clock["epoch"] = time.process_time() - clock["t"]
        clock["train"] += clock["epoch"]
        for padding in plan.get(epoch + 1, []):
            t = time.process_time()
            metrics = scorer(model, padding)
            steps = total * (epoch + 1) // cfg.epochs
            row = {
                **base,
                "schedule": cfg.schedule,
                "lr": cfg.lr,
                "warmup": cfg.warmup if cfg.schedule != "constant" else None,
                "schedule_steps": total,
                "steps": steps,
                "epochs": epoch + 1,
                "train_padding": cfg.padding,
                "score_padding": padding,
                "train_loss": round(float(np.mean(losses)), 4),
                **metrics,
                "train_cpu_s": round(clock["train"], 1),
                # the last epoch alone: the first one also computes the cached training targets
                "cpu_s_per_student_step": round(
                    clock["epoch"] / (total // cfg.epochs) / args.students, 3
                ),
                "eval_cpu_s": round(time.process_time() - t, 1),
            }
            emit(**row)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
        clock["t"] = time.process_time()

    train_students(model, data["train"], cfg, progress=False, on_epoch=on_epoch)


def schedules(specs: list[str]) -> list[tuple[str, float]]:
    out = []
    for spec in specs:
        name, _, lr = spec.partition(":")
        out.append((name, float(lr)))
    return out


def grid(args, scorer: Scorer, teacher, base: dict) -> None:
    """Every run of one (scale, teacher): schedules × epochs, then the training paddings."""
    cfg0 = StudentTrainingConfig(batch_size=1, weight_decay=1e-5, seed=args.seed)
    every = list(dict.fromkeys(["zero", *args.score_paddings]))
    score_at = set(args.score_padding_epochs or [min(args.epochs)])
    specs = schedules(args.schedules)
    for name, lr in specs if not args.padding_runs_only else []:
        budgets = [max(args.epochs)] if name == "constant" else sorted(args.epochs)
        for epochs in budgets:
            cfg = replace(cfg0, epochs=epochs, lr=lr, schedule=name)
            evals = args.epochs if name == "constant" else [epochs]
            plan = {e: (every if e in score_at else ["zero"]) for e in evals if e <= epochs}
            run(args, scorer, teacher, base, cfg, plan)
    name, lr = specs[0]
    for padding in args.train_paddings:
        if padding == "zero":
            continue
        cfg = replace(cfg0, epochs=args.padding_epochs, lr=lr, schedule=name, padding=padding)
        run(args, scorer, teacher, base, cfg, {args.padding_epochs: [padding]})


def plot(path: Path, figure: Path) -> None:
    """AU-PRO and validation regression error against optimiser steps, one line per schedule and
    scale (zero padding, the first teacher budget of each scale; other teacher budgets as open
    squares), plus AU-PRO of the runs trained and scored with another padding (triangles), from the
    JSON lines of ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("benchmark") == "student_budget"]
    zero = [r for r in rows if r["train_padding"] == "zero" and r["score_padding"] == "zero"]
    if not zero:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {17: "tab:blue", 33: "tab:orange", 65: "tab:green"}
    styles = {"constant": "-", "warmup_cosine": "--"}
    scales = {r["p"] for r in zero}
    base_teacher = {p: min(r["teacher_iterations"] for r in zero if r["p"] == p) for p in scales}
    keys = sorted({(r["p"], r["schedule"], r["lr"], r["teacher_iterations"]) for r in zero})
    for p, schedule, lr, teacher in keys:
        pts = sorted(
            (r["steps"], r["au_pro"], r["val_error"])
            for r in zero
            if (r["p"], r["schedule"], r["lr"], r["teacher_iterations"])
            == (p, schedule, lr, teacher)
        )
        steps, au_pro, err = zip(*pts)
        first = teacher == base_teacher.get(p)
        label = f"p={p}, {schedule} {lr:g}" + ("" if first else f", teacher {teacher} it.")
        kw = dict(
            color=colours.get(p, "grey"),
            linestyle=styles.get(schedule, ":") if first else "none",
            marker="o" if first else "s",
            markerfacecolor=None if first else "none",
            label=label,
        )
        axes[0].plot(steps, au_pro, **kw)
        axes[1].plot(steps, err, **kw)
    for r in rows:  # trained and scored with reflect / replicate padding
        if r["train_padding"] != "zero" and r["score_padding"] == r["train_padding"]:
            marker = {"reflect": "^", "replicate": "v"}.get(r["train_padding"], "x")
            axes[0].plot(
                r["steps"],
                r["au_pro"],
                marker=marker,
                color=colours.get(r["p"], "grey"),
                linestyle="none",
                label=f"p={r['p']}, {r['schedule']} {r['lr']:g}, {r['train_padding']} padding",
            )
    ticks = sorted({r["steps"] for r in rows})
    for ax, title in zip(axes, ("AU-PRO (FPR 0.3), test", "validation regression error e")):
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("optimiser steps per student (54 = 1 epoch)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    head = zero[0]
    fig.suptitle(
        f"Students on `{head['category']}` (tuning category), {head['image']} px, "
        f"M = {head['students']}; lines: zero padding; warmup_cosine points are separate runs, "
        "each a full schedule for its budget",
        fontsize=9,
    )
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    if args.plot_only:
        plot(args.out, args.figure)
        return
    start(args.threads)
    settings = profile_settings(args.profile)
    args.work.mkdir(parents=True, exist_ok=True)
    data_root, pool = build_inputs(args, settings)
    data = load_category(data_root, args.category, settings["mvtec_data"]["image_size"], args.seed)
    for p in args.p:
        scorer = Scorer(data, p)
        for iterations, (teacher, cpu) in sorted(teachers(args, p, pool).items()):
            base = {
                "benchmark": "student_budget",
                "category": args.category,
                "p": p,
                "image": settings["mvtec_data"]["image_size"],
                "students": args.students,
                "n_train": len(data["train"]),
                "n_val": len(data["val"]),
                "n_test": len(data["test"]),
                "teacher_iterations": iterations,
                "teacher_cpu_s": cpu,
                "seed": args.seed,
            }
            scorer.features.clear()
            grid(args, scorer, teacher, base)
        plot(args.out, args.figure)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--category", default="water", help="the tuning category (never a reported one)"
    )
    parser.add_argument("--profile", type=Path, default=ROOT / "profiles" / "offline_full.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ust_student_budget"))
    parser.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    parser.add_argument("--teacher-iterations", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--eval-triplets", type=int, default=256)
    parser.add_argument(
        "--schedules",
        nargs="+",
        default=["constant:1e-4", "warmup_cosine:1e-3"],
        help="name:peak_lr; constant is evaluated along one run, warmup_cosine is one run per budget",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=[1, 4, 15],
        help="budgets in epochs (54 steps each)",
    )
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--score-paddings", nargs="*", default=["reflect", "replicate"])
    parser.add_argument(
        "--score-padding-epochs",
        type=int,
        nargs="*",
        help="epochs at which zero-trained runs are also scored with --score-paddings (default: the first)",
    )
    parser.add_argument("--train-paddings", nargs="*", default=["reflect", "replicate"])
    parser.add_argument("--padding-epochs", type=int, default=1)
    parser.add_argument(
        "--padding-runs-only",
        action="store_true",
        help="only the --train-paddings runs (first schedule of --schedules)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--plot-only", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    main()
