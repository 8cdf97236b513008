"""Glue between ``params.yaml`` and the library, called by the notebooks so that they stay thin:
one module per DVC stage, and what they share in :mod:`.shared` (kept out of this file, which every
stage module imports, so that a light stage does not depend on the training code).

Identity (patch size, loss configuration, category, output folder) comes in as papermill
parameters; hyperparameters come from the active ``params.yaml``, read and validated once per call
by :func:`ust.experiments.config.load_config` (typed sections), then passed to the experiment
functions as settings objects.

Substitutes for interactive runs: a stage whose ``out_dir`` lies outside the pipeline's outputs
(``results/``, ``figures/``; e.g. the notebooks' ``scratch/`` defaults) and whose input is missing
(the pipeline has not run) builds that input at smoke size (``profiles/smoke.yaml``) under
``<out_dir>/substitutes/`` and says so. Under DVC every ``out_dir`` is in ``results/``: a missing
input raises the usual error and nothing is substituted.
"""

from __future__ import annotations

import os
from pathlib import Path

from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)
from ust.paths import resolve


def output_dir(path: str | os.PathLike) -> Path:
    """Resolve a stage output folder against the repository root and create it."""
    out = resolve(path)
    out.mkdir(parents=True, exist_ok=True)
    return out
