"""Optional dvclive logging of the training loops, so ``dvc plots`` / ``dvc exp show`` see training.

The loops (:func:`ust.train.teacher.pretrain`, :func:`ust.train.students.train_students`,
:func:`ust.baselines.igd.train_igd`) take ``live_dir``: ``None`` (the default) logs nothing, a folder
gets dvclive's usual files there::

    <live_dir>/metrics.json                 latest value of every metric, the summary and "step"
    <live_dir>/plots/metrics/<name>.tsv     one row per logged step: "step<TAB><name>"

:func:`open_live` opens a ``dvclive.Live`` that only writes those files: it never opens the Git or DVC
repository around the working directory (no ``dvc init``, no ``git add`` under ``dvc exp run``, no
experiment saved, no VS Code signal file in ``.dvc/tmp``), writes no ``dvc.yaml`` (point the
pipeline's ``metrics:`` / ``plots:`` at the files above instead), makes no report, does not monitor the
system and posts nothing to DVC Studio. Hence no warnings about missing Git/DVC repositories either.

Steps are set explicitly (:func:`log_step`), equal to the loop's own counter (optimiser step of the
teacher, epoch 1, 2, … of students and IGD), not dvclive's ``next_step`` count. Every call writes its
rows and ``metrics.json`` at once, so ``Live.next_step()`` / ``Live.end()`` are never needed (they
would also write and delete VS Code signal files under the cwd's ``.dvc/tmp``, and ``end()`` under
``dvc exp run`` would ``git add`` the folder).

Resuming: dvclive's own ``resume=True`` continues from the ``step`` in ``metrics.json`` and appends to
the ``.tsv`` files, so rows logged after the last checkpoint of an interrupted run would appear twice
(and a run that logged only step 0 restarts at 0). The loops therefore open the folder afresh and
replay the loss log stored in their checkpoint (:func:`replay`) before continuing: the dvclive files
always hold each step exactly once, identical to what an uninterrupted run writes.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dvclive


@functools.cache
def _repo_free_live_class() -> type:
    """``dvclive.Live`` without its repository and Studio hooks (dvclive is imported lazily)."""
    import dvclive

    class RepoFreeLive(dvclive.Live):
        def _init_dvc(self) -> None:  # dvclive would open (or `dvc init`) the cwd's repository
            self._save_dvc_exp = False
            self._dvc_file = self._init_dvc_file()

        def _init_studio(self) -> None:  # nothing is ever posted to DVC Studio
            self._studio_events_to_skip.update(("start", "data", "done"))

    return RepoFreeLive


def open_live(directory: str | os.PathLike, *, resume: bool = False) -> dvclive.Live:
    """A ``dvclive.Live`` writing only ``metrics.json`` and ``plots/metrics/*.tsv`` under ``directory``.

    ``resume=False`` clears dvclive's previous files there (``metrics.json``, ``plots/``); the loops
    rebuild them from their checkpoint with :func:`replay` instead of using ``resume=True``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return _repo_free_live_class()(
        dir=str(directory),
        resume=resume,
        report=None,
        save_dvc_exp=False,
        dvcyaml=None,
        cache_images=False,
        monitor_system=False,
    )


def _loggable(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def log_step(live: dvclive.Live | None, step: int, values: Mapping[str, Any]) -> None:
    """Log ``values`` (name → number; ``None`` / NaN skipped) at ``step``; ``live=None`` does nothing.

    One row per metric goes to ``plots/metrics/<name>.tsv`` and ``metrics.json`` is rewritten.
    """
    if live is None:
        return
    _log_rows(live, step, values)
    live.make_summary()


def _log_rows(live: dvclive.Live, step: int, values: Mapping[str, Any]) -> None:
    live.step = int(step)
    for name, value in values.items():
        if _loggable(value):
            live.log_metric(name, value)


def log_summary(live: dvclive.Live | None, values: Mapping[str, Any]) -> None:
    """Add ``values`` (``None`` / NaN skipped) to ``metrics.json`` only (no plot rows)."""
    if live is None:
        return
    for name, value in values.items():
        if _loggable(value):
            live.log_metric(name, value, plot=False)
    live.make_summary()


def replay(
    directory: str | os.PathLike | None, steps: Iterable[tuple[int, Mapping[str, Any]]]
) -> dvclive.Live | None:
    """Open ``directory`` afresh and log the already trained ``(step, values)`` again (a resumed run).

    ``directory=None`` (no dvclive, or a rank other than 0) returns ``None`` without importing dvclive.
    """
    if directory is None:
        return None
    live = open_live(directory)
    for step, values in steps:
        _log_rows(live, step, values)
    live.make_summary()  # metrics.json once, with the last replayed step (if any)
    return live
