"""What every run folder of the pipeline records: the optimiser-step count and the run folder names.
The file writing itself (atomic JSON, CSV and folder swaps) lives in :mod:`ust.io`."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ust.paths import resolve

#: key under which every trained model's result records its optimiser steps (per network; the report
#: labels rows below ``ust.report.claims.MIN_OPTIMIZER_STEPS`` as under-trained)
STEPS_KEY = "optimizer_steps"


def epoch_steps(n_items: int, epochs: int, batch_size: int) -> int:
    """Optimiser steps of ``epochs`` passes over ``n_items`` in batches of ``batch_size`` (the last
    batch may be smaller): ``epochs × ⌈n_items / batch_size⌉``."""
    return int(epochs) * math.ceil(int(n_items) / int(batch_size))


def single_scale_run_dir(results_dir: str | os.PathLike, category: str, p: int) -> Path:
    """Folder of the single-scale MVTec run of ``category`` at receptive field ``p``:
    ``<results_dir>/<category>/p<p>`` (the ``mvtec@<category>-<p>`` stage writes
    ``results/mvtec/<category>/p<p>``)."""
    return resolve(results_dir) / category / f"p{int(p)}"
