"""What a teacher's pretraining budget and photo pool buy: held-out triplet accuracy and texture AU-PRO.

For every photo pool (``embedded``: the bundled photographs, 15 for training and 3 held out; or a
folder, e.g. Debian's ``mate-backgrounds`` nature photographs or the pipeline's ``data/photo_pool``,
built by ``UST_PARAMS=profiles/default.yaml python -m ust.stages.photo_pool``) one
self-supervised (λ_m = λ_c = 1) teacher is pretrained with the pipeline's recipe and checkpointed at
every budget of ``--budgets`` (the run resumes, so budgets 200 and 1000 cost 1000 steps in all;
budget 0 is the random initialisation). At each budget:

* held-out triplet accuracy on the pool's own held-out photographs and on the embedded held-out
  photographs (the common yardstick: the same 2000 triplets for every pool at one ``--seed``);
* with ``--data ROOT --category X`` (at the budgets of ``--score-budgets``, default all): one
  scale's students (``--students``, whole images, batch 1,
  Adam ``--lr``) trained for ``--seconds`` on that category of an MVTec-layout folder, then the
  test set scored: AU-PRO to FPR 0.3, pixel and image ROC-AUC.

One JSON line per (pool, budget):

    python benchmarks/teacher_budget.py --data data/textures_mvtec --category brick \\
        --pools embedded /usr/share/backgrounds/mate/nature data/photo_pool --budgets 0 200 1000 \\
        --seconds 150 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from student_ensemble import (  # benchmarks/ is on sys.path when run as a script
    emit,
    load_category,
    start,
    train_and_score,
)

from ust.method.teacher import (
    TeacherConfig,
    heldout_triplets,
    init_teacher,
    load_teacher,
    triplet_accuracy,
)
from ust.train.students import StudentTrainingConfig
from ust.train.teacher import pretrain


def teacher_config(args, pool: str) -> TeacherConfig:
    """The pipeline's offline recipe (profiles/offline_full.yaml ``teacher``) on ``pool``."""
    return TeacherConfig(
        patch_size=args.p,
        images=pool,
        lambda_k=0.0,
        lambda_m=1.0,
        lambda_c=1.0,
        decorrelation_normalized=True,
        batch_size=64,
        lr=2e-4,
        weight_decay=1e-5,
        seed=args.seed,
        device="cpu",
        eval_triplets=args.eval_triplets,
        checkpoint_every=50,
    )


def teachers_at_budgets(args, pool: str, out: Path):
    """Yield (budget, teacher network, pretraining seconds so far) for every budget, ascending."""
    cfg = teacher_config(args, pool)
    seconds = 0.0
    for budget in sorted(args.budgets):
        if budget == 0:
            torch.manual_seed(args.seed)
            yield budget, init_teacher(cfg).eval(), 0.0
            continue
        start = time.perf_counter()
        pretrain(replace(cfg, iterations=budget), out, progress=False)
        seconds += time.perf_counter() - start
        yield budget, load_teacher(out, "cpu").eval(), seconds


def main() -> None:
    args = parse_args()
    start(args.threads)
    yardstick = heldout_triplets(teacher_config(args, "embedded")).batch(range(args.eval_triplets))
    data = None
    if args.data is not None:
        data = load_category(args.data, args.category, args.size, args.seed)
    student_cfg = StudentTrainingConfig(batch_size=1, lr=args.lr, weight_decay=1e-5, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for i, pool in enumerate(args.pools):
            own = heldout_triplets(teacher_config(args, pool)).batch(range(args.eval_triplets))
            for budget, teacher, seconds in teachers_at_budgets(
                args, pool, Path(tmp) / f"teacher{i}.pt"
            ):
                row = {
                    "benchmark": "teacher_budget",
                    "pool": pool,
                    "p": args.p,
                    "seed": args.seed,
                    "iterations": budget,
                    "pretrain_seconds": round(seconds, 1),
                    "triplet_acc_own_heldout": round(triplet_accuracy(teacher, own), 4),
                    "triplet_acc_embedded_heldout": round(triplet_accuracy(teacher, yardstick), 4),
                }
                if data is not None and (
                    args.score_budgets is None or budget in args.score_budgets
                ):
                    row |= {
                        "category": args.category,
                        "image": args.size,
                        "students": args.students,
                    }
                    row |= train_and_score(
                        data, args.p, args.students, teacher, student_cfg, args.seconds
                    )
                emit(**row)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pools", nargs="+", default=["embedded"], help="'embedded' or folders of photographs"
    )
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=[0, 200, 1000],
        help="teacher iterations (0: random initialisation)",
    )
    parser.add_argument(
        "--score-budgets",
        type=int,
        nargs="+",
        help="budgets whose teachers also get the AU-PRO column (default: all)",
    )
    parser.add_argument("--p", type=int, default=17, help="receptive field of teacher and students")
    parser.add_argument("--eval-triplets", type=int, default=2000)
    parser.add_argument("--data", type=Path, help="MVTec-layout root for the AU-PRO column")
    parser.add_argument("--category", help="category of --data")
    parser.add_argument("--size", type=int, default=128, help="image side for the students")
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=150.0, help="student training seconds")
    parser.add_argument("--lr", type=float, default=1e-4, help="students' Adam learning rate")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data is not None and args.category is None:
        parser.error("--data needs --category")
    if min(args.budgets) < 0:
        parser.error("--budgets must be >= 0")
    return args


if __name__ == "__main__":
    main()
