"""Stage `teacher@p<p>-<losses>` (notebook 10): the teacher configuration of one stage."""

from __future__ import annotations

from typing import Any

from ust.experiments.config import LOSS_LETTERS, load_config, loss_weights  # noqa: F401
from ust.io import read_json, write_json  # noqa: F401  (notebooks call them)


def teacher_config(patch_size: int, losses: str, **overrides: Any):
    """The :class:`ust.method.teacher.TeacherConfig` of one teacher stage: the ``teacher`` section
    with receptive field ``patch_size`` and the Table 1 loss letters ``losses`` (``overrides``
    replace further fields)."""
    return load_config().teacher_for(patch_size, losses, **overrides)


def write_nearest_neighbours(out_dir, config, n: int = 400):
    """``<out_dir>/nearest_neighbours.npz``: six query patches of the held-out images and their
    five nearest neighbours in the descriptor space of ``<out_dir>/teacher.pt``
    (:func:`ust.method.teacher.nearest_neighbours`), for the report to draw. ``config``: the
    :class:`TeacherConfig` of the run; ``n``: anchors of ``n`` held-out triplets are the
    candidate patches. Returns the path."""
    import numpy as np

    from ust.method import teacher
    from ust.paths import resolve

    out = resolve(out_dir)
    net = teacher.load_teacher(out / "teacher.pt")
    anchors = teacher.heldout_triplets(config, n=n).batch(range(n))[0]
    path = out / "nearest_neighbours.npz"
    np.savez_compressed(path, **teacher.nearest_neighbours(net, anchors))
    return path
