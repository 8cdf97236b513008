"""Training speed of GCAD (thesis chapter 7) at the thesis' network sizes on a tiny image set.

Prints one JSON line per image size: the seconds for E_loc's μ/σ pass over the images (one teacher
forward per image), for one training epoch without L_glo (the thesis' first 50 epochs: R_loc, E_glo
and U) and for one with it (R_glo too), each with Table 6.2's augmentation of screw_bag (flips,
rotation, colour jitter), so E_loc runs on every batch as in the thesis' augmented training; the
parameter counts; and what the thesis' 500-epoch schedule (50 epochs without L_glo, 450 with) would
take per 100 training images at this speed. The teacher is a randomly initialised p = 33 network
(speed does not depend on its weights).

    python benchmarks/gcad_speed.py [--sizes 128 256] [--images 4] [--threads 2] [--p 33]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from ust.method.gcad import GCAD, GCADConfig
from ust.method.networks import count_parameters, patch_net
from ust.train.gcad import (
    GLO_START_EPOCH,
    LOCO_AUGMENTATIONS,
    THESIS_EPOCHS,
    GCADTrainingConfig,
    train_gcad,
)


def measure(size: int, n_images: int, p: int, batch_size: int) -> dict:
    load = os.getloadavg()[0]  # other jobs on the machine slow every number down
    torch.manual_seed(0)
    images = torch.rand(n_images, 3, size, size)
    model = GCAD(patch_net(p), GCADConfig(image_size=size))
    t = time.perf_counter()
    model.fit_teacher_normalisation(images, batch_size=batch_size)
    stats_s = time.perf_counter() - t
    # Two epochs: L_glo off in epoch 0 and on in epoch 1 (schedule_scale 0.02: L_glo from epoch 1).
    config = GCADTrainingConfig(
        epochs=2,
        batch_size=batch_size,
        schedule_scale=1 / GLO_START_EPOCH,
        augment=LOCO_AUGMENTATIONS["screw_bag"],
    )
    stamps = [time.perf_counter()]
    history = train_gcad(
        model, images, config, on_epoch=lambda e, _: stamps.append(time.perf_counter())
    )
    without_glo, with_glo = stamps[1] - stamps[0], stamps[2] - stamps[1]
    per_image = (
        GLO_START_EPOCH * without_glo + (THESIS_EPOCHS - GLO_START_EPOCH) * with_glo
    ) / n_images
    return {
        "benchmark": "gcad_speed",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_before": round(load, 2),
        "image_size": size,
        "images": n_images,
        "batch_size": batch_size,
        "p": p,
        "augment": list(config.augment),
        "e_loc_stats_s": round(stats_s, 2),
        "epoch_s_without_glo": round(without_glo, 2),
        "epoch_s_with_glo": round(with_glo, 2),
        "s_per_image_per_epoch_with_glo": round(with_glo / n_images, 3),
        "thesis_schedule_hours_per_100_images": round(per_image * 100 / 3600, 1),
        "loss_epoch_1": round(history[1]["loss"], 4),
        "params": {
            name: count_parameters(getattr(model, name))
            for name in ("e_loc", "r_loc", "e_glo", "u", "r_glo")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--p", type=int, default=33)
    parser.add_argument("--batch-size", type=int, default=GCADTrainingConfig().batch_size)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        print(json.dumps(measure(size, args.images, args.p, args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
