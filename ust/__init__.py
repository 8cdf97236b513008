"""ust: a reproducible companion to "Uninformed Students" (Bergmann et al., CVPR 2020).

The public API, importable from the top level (each name is loaded on first use, so ``import ust``
stays cheap and a DVC stage's dependencies are exactly the modules it imports):

* the method — :func:`patch_net`, :func:`dense_net`, :class:`TeacherConfig`, :func:`load_teacher`,
  :class:`StudentTeacher`, :func:`make_students`, :func:`anomaly_scores`;
* training — :func:`pretrain`, :func:`train_students`, :class:`StudentTrainingConfig`;
* evaluation — :func:`au_pro`, :func:`pro_curve`, :func:`pixel_roc_auc`, :func:`image_roc_auc`,
  :func:`roc_auc`, :func:`evaluate_maps`;
* your own images — :class:`Detector` (fit on good images, save/load, predict, export) and
  :class:`DetectorConfig`.

``docs/architecture.md`` maps every paper concept to its file.

Progress bars: with the environment variable ``TQDM_DISABLE`` set to a true value (``1``; the DVC
stages set it for their papermill runs) every ``tqdm.auto`` bar of the process is off, including the
bars ``ust`` asks for with ``progress=True``, and a Jupyter kernel without ipywidgets does not warn
"IProgress not found" (:func:`_progress_bars_off`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

_API = {
    "patch_net": "ust.method.networks",
    "PatchNet": "ust.method.networks",
    "dense_net": "ust.method.dense",
    "TeacherConfig": "ust.method.teacher",
    "load_teacher": "ust.method.teacher",
    "StudentTeacher": "ust.method.students",
    "make_students": "ust.method.students",
    "anomaly_scores": "ust.method.students",
    "pretrain": "ust.train.teacher",
    "train_students": "ust.train.students",
    "StudentTrainingConfig": "ust.train.students",
    "au_pro": "ust.eval.metrics",
    "pro_curve": "ust.eval.metrics",
    "pixel_roc_auc": "ust.eval.metrics",
    "image_roc_auc": "ust.eval.metrics",
    "roc_auc": "ust.eval.metrics",
    "evaluate_maps": "ust.eval.metrics",
    "Detector": "ust.detector",
    "DetectorConfig": "ust.detector",
}
__all__ = ["__version__", *_API]


def _progress_bars_off() -> None:
    """Make ``tqdm.auto.tqdm`` (and ``trange``) a console bar that never draws.

    tqdm itself reads ``TQDM_DISABLE`` only as the default of ``disable``, and every bar of ``ust``
    passes ``disable=not progress`` explicitly; inside a Jupyter kernel ``tqdm.auto`` also warns
    at import when ipywidgets is missing and then writes text bars to stderr, which papermill keeps
    in the executed notebook. Importing it here with that warning silenced and replacing its class
    once removes both, for every module that imports ``tqdm.auto`` afterwards.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "IProgress not found": no bar is ever drawn
        import tqdm.auto as auto
    from tqdm.std import tqdm as console

    class Off(console):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})

    auto.tqdm = Off  # tqdm.auto.trange calls the module's tqdm, so it is off too


if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no", "off"):
    _progress_bars_off()


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ust' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
