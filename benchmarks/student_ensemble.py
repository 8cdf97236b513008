"""Student training speed: M separate students against one batched ensemble, and crop training.

Prints one JSON line per (p, batch): seconds per training step (forward, backward and Adam for all M
students on one batch of whole images, run through ``ust.train.students.train_students_for`` so the
real training code is timed) and training images/s (an image counts once for all M students) for
separate students (``batched=False``: M networks, M Adams) and the batched ensemble
(``batched=True``: grouped convolutions, one Adam), and the speed-up. The modes alternate within
every round and the best of each is kept, so a busy machine affects all alike. Then one line per
(p, mode) for random-crop training (``crop=c``), where the batched ensemble is also timed with
torch's fused Adam (``fused_adam=True``; small steps make the optimiser a larger share): samples/s,
supervised output pixels/s (compare with image side² × images/s of whole-image training) and the
speed-up over separate students.

With ``--au-pro-data ROOT --category X --seconds S`` it instead compares whole-image and crop
training at equal wall time on one category of an MVTec-layout folder: one scale's students are
trained for S seconds each way (same teacher, initialisation and seed; ``--train-batch`` whole
images or ``--crop-batch`` crops per step), the test set is scored
(ẽ + ṽ maps, e/v statistics from the validation split) and AU-PRO / pixel / image ROC-AUC are
printed. Without ``--teacher`` the teacher is a randomly initialised patch network (enough to
compare the two training regimes, not to reproduce the paper's numbers).

    python benchmarks/student_ensemble.py [--quick] [--size 128] [--batches 1 4] [--rounds 1]
    python benchmarks/student_ensemble.py --au-pro-data /tmp/tex --category brick --seconds 120
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import replace
from pathlib import Path

import torch
from dense_speed import tune_malloc  # benchmarks/ is on sys.path when run as a script

from ust.method.networks import patch_net
from ust.method.students import (
    StudentTeacher,
    anomaly_scores,
    fit_target_statistics,
    fit_validation_stats,
    make_students,
)
from ust.train.students import StudentTrainingConfig, train_students_for


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def fresh_model(p: int, m: int, images: torch.Tensor, teacher=None, seed: int = 0):
    """A student-teacher model (random teacher unless given) with fitted target statistics."""
    if teacher is None:
        torch.manual_seed(seed)
        teacher = patch_net(p)
    model = StudentTeacher(teacher, make_students(teacher, m, seed=seed))
    fit_target_statistics(model, images, batch_size=4)
    return model


def step_seconds(model: StudentTeacher, images: torch.Tensor, config: StudentTrainingConfig):
    """Wall time of one step per training unit: all M students, one batch of ``images``."""
    return train_students_for(model, images, config, seconds=0.0)["seconds"]


def best_times(model, images, configs: dict[str, StudentTrainingConfig], rounds: int) -> dict:
    """Best step time per named config, the configs alternating within every round."""
    best = {name: float("inf") for name in configs}
    for _ in range(rounds):
        for name, cfg in configs.items():
            best[name] = min(best[name], step_seconds(model, images, cfg))
    return best


MODES = {  # name: (batched, fused_adam)
    "separate": (False, False),
    "batched": (True, False),
    "batched_fused": (True, True),
}
WHOLE = ("separate", "batched")  # whole images: the optimiser step is a small share, skip fused


def mode_configs(
    base: StudentTrainingConfig, modes=tuple(MODES), **fields
) -> dict[str, StudentTrainingConfig]:
    return {
        name: replace(base, batched=MODES[name][0], fused_adam=MODES[name][1], **fields)
        for name in modes
    }


def speed(args) -> None:
    base = StudentTrainingConfig(lr=1e-4)
    for p in args.p:
        warm = torch.rand(1, 3, args.size, args.size)
        model = fresh_model(p, args.students, warm)
        for cfg in mode_configs(base, WHOLE, batch_size=1).values():  # untimed warm-up
            step_seconds(model, warm, cfg)
        for b in args.batches:
            images = torch.rand(b, 3, args.size, args.size)
            model = fresh_model(p, args.students, images)
            t = best_times(model, images, mode_configs(base, WHOLE, batch_size=b), args.rounds)
            emit(
                benchmark="student_training",
                p=p,
                image=args.size,
                students=args.students,
                batch=b,
                **{f"{k}_s_per_step": round(v, 3) for k, v in t.items()},
                **{f"{k}_images_per_s": round(b / v, 3) for k, v in t.items()},
                speedup=round(t["separate"] / t["batched"], 3),
            )
        crop_speed(args, p, base)


def crop_speed(args, p: int, base: StudentTrainingConfig) -> None:
    """Random-crop training: samples/s and supervised output pixels/s per mode."""
    images = torch.rand(args.crop_batch, 3, args.size, args.size)
    model = fresh_model(p, args.students, images)
    cfgs = mode_configs(base, batch_size=args.crop_batch, crop=args.crop)
    t = best_times(model, images, cfgs, args.rounds + 1)  # cheap: one more round as warm-up
    for mode, seconds in t.items():
        emit(
            benchmark="student_crop_training",
            p=p,
            image=args.size,
            crop=args.crop,
            input_side=args.crop + model.students[0].rf - 1,
            students=args.students,
            batch=args.crop_batch,
            mode=mode,
            s_per_step=round(seconds, 3),
            samples_per_s=round(args.crop_batch / seconds, 2),
            output_pixels_per_s=round(args.crop_batch * args.crop**2 / seconds),
            speedup_vs_separate=round(t["separate"] / seconds, 3),
        )


def load_category(root: Path, category: str, size: int, seed: int) -> dict:
    """One category of an MVTec-layout folder at ``size`` px: train / val / test images, masks."""
    from ust.data.dataset import load_images
    from ust.data.mvtec import validate_category
    from ust.experiments.protocol import ground_truth

    index = validate_category(root, category)
    train_paths, val_paths = index.split(0.1, seed)
    return {
        "index": index,
        "train": load_images(train_paths, size),
        "val": load_images(val_paths, size),
        "test": load_images([s.path for s in index.test], size),
        "masks": ground_truth(index, index.test),
    }


def train_and_score(data: dict, p: int, students: int, teacher, cfg, seconds: float) -> dict:
    """Train one scale's students for ``seconds`` on ``data["train"]``, score the test set (ẽ + ṽ
    maps, statistics from the validation split): AU-PRO, pixel and image ROC-AUC, training record."""
    from ust.data.transforms import upsample_map
    from ust.experiments.protocol import compute_metrics

    model = fresh_model(p, students, data["train"], teacher, seed=cfg.seed)
    done = train_students_for(model, data["train"], cfg, seconds)
    stats = fit_validation_stats(model, data["val"], batch_size=4)
    scores = anomaly_scores(model, data["test"], stats, batch_size=4)
    test = data["index"].test
    maps = [upsample_map(s, smp.size) for s, smp in zip(scores, test, strict=True)]
    return {
        "train_seconds": round(done["seconds"], 1),
        "steps": done["steps"],
        "epochs": round(done["epochs"], 2),
        "final_loss": round(done["loss"], 4),
        "n_train": len(data["train"]),
        "n_test": len(data["test"]),
        **{k: round(v, 4) for k, v in compute_metrics(maps, data["masks"], 0.3).items()},
    }


def au_pro_comparison(args) -> None:
    """Whole-image vs crop training of one scale at equal wall time, scored by AU-PRO."""
    data = load_category(args.au_pro_data, args.category, args.size, args.seed)
    teacher = None
    if args.teacher is not None:
        from ust.method.teacher import load_teacher

        teacher = load_teacher(args.teacher, "cpu")
    p = teacher.config.p if teacher is not None else args.p[0]
    base = StudentTrainingConfig(
        batch_size=args.train_batch, lr=args.lr, weight_decay=1e-5, seed=args.seed
    )
    base = replace(base, batched=not args.separate)
    modes = {
        "full_image": base,
        "crop": replace(base, crop=args.crop, batch_size=args.crop_batch),
    }
    for mode, cfg in modes.items():
        emit(
            benchmark="student_crop_au_pro",
            category=args.category,
            p=p,
            image=args.size,
            mode=mode,
            crop=cfg.crop,
            batch=cfg.batch_size,
            batched=cfg.batched,
            **train_and_score(data, p, args.students, teacher, cfg, args.seconds),
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64×64 images, batch 1, p 17/33")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--p", type=int, nargs="+", default=[17, 33, 65])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=1, help="timed steps per mode (best kept)")
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--crop", type=int, default=32, help="crop side in output pixels")
    parser.add_argument("--crop-batch", type=int, default=4, help="crops per training step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--au-pro-data", type=Path, help="MVTec-layout root: AU-PRO comparison")
    parser.add_argument("--category", help="category of --au-pro-data")
    parser.add_argument("--seconds", type=float, default=60.0, help="training seconds per mode")
    parser.add_argument("--teacher", type=Path, help="teacher file (default: random teacher)")
    parser.add_argument(
        "--train-batch", type=int, default=1, help="AU-PRO mode: whole images per step"
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="AU-PRO mode: Adam learning rate")
    parser.add_argument("--separate", action="store_true", help="AU-PRO mode: unbatched students")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.size, args.batches, args.p, args.crop, args.crop_batch = 64, [1], [17, 33], 16, 4
    if args.au_pro_data is not None and args.category is None:
        parser.error("--au-pro-data needs --category")
    return args


def start(threads: int) -> None:
    """Use ``threads`` CPU threads and print the environment line every benchmark here starts with."""
    torch.set_num_threads(threads)
    emit(
        benchmark="environment",
        torch=torch.__version__,
        threads=threads,
        cpu=platform.processor() or platform.machine(),
        malloc_tuned=tune_malloc(),
    )


def main() -> None:
    args = parse_args()
    start(args.threads)
    if args.au_pro_data is not None:
        au_pro_comparison(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
