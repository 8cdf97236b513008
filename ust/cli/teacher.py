"""``ust teacher``: pretrain a patch teacher T̂ from the command line (:func:`ust.train.teacher.pretrain`)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from pathlib import Path


def _lambda(value: str) -> float:
    v = float(value)
    if v < 0:
        raise argparse.ArgumentTypeError(f"loss weights must be >= 0, got {value}")
    return v


#: ``--decorrelation`` → (``decorrelation_normalized``, ``decorrelation_squared``) of TeacherConfig
DECORRELATION_FORMS = {
    "auto": ("auto", True),
    "mean": (True, True),
    "sum": (False, True),
    "sum-unsquared": (False, False),
}


def _decorrelation_choice(cfg) -> str:
    """The ``--decorrelation`` value of a TeacherConfig's L_c settings."""
    pair = (cfg.decorrelation_normalized, cfg.decorrelation_squared)
    return next(k for k, v in DECORRELATION_FORMS.items() if v == pair)


def _positive_int(value: str) -> int:
    v = int(value)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return v


def add_teacher_command(subparsers: argparse._SubParsersAction) -> None:
    """``ust teacher``: pretrain a patch teacher T̂ (paper §3.1) with :func:`ust.train.teacher.pretrain`."""
    from ust.method.teacher import TeacherConfig

    d = TeacherConfig()
    p = subparsers.add_parser(
        "teacher",
        help="pretrain a teacher patch network (distillation / triplet / decorrelation losses)",
        description=(
            "Pretrain a teacher T̂ on random patch triplets. Loss L = λ_k·L_k + λ_m·L_m + λ_c·L_c; "
            "the MVTec setting is --lambda-k 1 --lambda-m 0 --lambda-c 1 (needs ImageNet ResNet-18 "
            "weights); the offline self-supervised one is --lambda-k 0 --lambda-m 1 --lambda-c 1. "
            "Writes OUT, a resume checkpoint OUT.ckpt and the loss curve OUT_loss.csv; re-running the "
            "same command resumes from the checkpoint. Prints a JSON summary."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_options(p, d)
    _add_loss_options(p, d)
    _add_run_options(p, d)
    p.set_defaults(func=run_teacher)


def _add_data_options(p: argparse.ArgumentParser, d) -> None:
    """Images, patch size, output file and the optimiser."""
    from ust.method.networks import PATCH_SIZES

    p.add_argument(
        "--images",
        default=d.images,
        help="a folder of images (ImageNet ImageFolder tree or flat, searched recursively; relative "
        "to the current directory), or 'embedded' (photographs bundled with "
        "scikit-image/scikit-learn, not the paper's data)",
    )
    p.add_argument("--patch-size", type=int, choices=PATCH_SIZES, default=d.patch_size)
    p.add_argument(
        "--out", required=True, help="teacher file to write (e.g. results/teacher/p33.pt)"
    )
    p.add_argument("--iterations", type=int, default=d.iterations, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="triplets per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (constant)")
    p.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="Adam L2 weight decay"
    )


def _add_loss_options(p: argparse.ArgumentParser, d) -> None:
    """Loss weights and forms, and the distillation target's ResNet-18."""
    p.add_argument(
        "--lambda-k", type=_lambda, default=d.lambda_k, help="weight of L_k (distillation)"
    )
    p.add_argument("--lambda-m", type=_lambda, default=d.lambda_m, help="weight of L_m (triplet)")
    p.add_argument(
        "--lambda-c", type=_lambda, default=d.lambda_c, help="weight of L_c (decorrelation)"
    )
    p.add_argument("--margin", type=float, default=d.margin, help="triplet margin δ")
    p.add_argument(
        "--decorrelation",
        choices=tuple(DECORRELATION_FORMS),
        default=_decorrelation_choice(d),
        help="L_c form: 'mean' = mean squared off-diagonal correlation (sum / d(d-1)), "
        "'sum' = the thesis' Σ C_kl², 'sum-unsquared' = the paper's Σ C_kl, "
        "'auto' = 'sum' when --lambda-k > 0 (as printed) and 'mean' otherwise "
        "(docs/decisions.md#decorrelation-normalisation)",
    )
    p.add_argument(
        "--resnet-weights",
        default=d.resnet_weights,
        help="local ResNet-18 state dict (.pth); default: the torch hub cache "
        "($TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth)",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="let torchvision download the ImageNet ResNet-18 weights into the hub cache",
    )
    p.add_argument(
        "--resnet-input-size",
        type=int,
        default=d.resnet_input_size,
        help="side the patch is resized to for ResNet-18 (0 = native patch size)",
    )


def _add_run_options(p: argparse.ArgumentParser, d) -> None:
    """Device, precision, seed, workers, checkpoints and logging."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA or recent CPUs)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions on CUDA")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of initialisation and sampling")
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader workers")
    p.add_argument(
        "--checkpoint-every", type=_positive_int, default=d.checkpoint_every, help="steps"
    )
    p.add_argument(
        "--log-every", type=_positive_int, default=d.log_every, help="CSV row every N steps"
    )
    p.add_argument(
        "--eval-triplets",
        type=int,
        default=d.eval_triplets,
        help="held-out triplets for the triplet accuracy before/after (0 = skip)",
    )
    p.add_argument(
        "--live-dir",
        default=None,
        help="also log the losses and accuracies with dvclive into this folder "
        "(metrics.json, plots/metrics/*.tsv; e.g. results/teacher/dvclive)",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def teacher_config_from_args(args: argparse.Namespace):
    """Map parsed ``ust teacher`` arguments onto a :class:`ust.method.teacher.TeacherConfig`."""
    from ust.method.teacher import TeacherConfig

    values = {f.name: getattr(args, f.name) for f in fields(TeacherConfig) if hasattr(args, f.name)}
    normalized, squared = DECORRELATION_FORMS[args.decorrelation]
    values["decorrelation_normalized"] = normalized
    values["decorrelation_squared"] = squared
    if values.get("images", "embedded") != "embedded":  # the command line means the current dir
        values["images"] = str(Path(values["images"]).expanduser().absolute())
    values["resnet_input_size"] = args.resnet_input_size or None
    return TeacherConfig(**values)


def run_teacher(args: argparse.Namespace) -> int:
    from ust.train.teacher import pretrain

    summary = pretrain(
        teacher_config_from_args(args),
        args.out,
        resume=not args.no_resume,
        progress=not args.no_progress,
        live_dir=args.live_dir,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(json.dumps(summary, indent=2))
    return 0
