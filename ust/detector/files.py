"""The detector file: one ``torch.save`` file holding a checksummed payload.

Layout (a dict, readable with ``torch.load(path, weights_only=True)``)::

    format        "ust.detector/2" (files written as "ust.detector/1" load too)
    ust_version   ust.__version__ of the writer; a file from another version is refused
    sha256        hex SHA-256 of ``payload``; a mismatch means the file is corrupt
    payload       bytes: torch.save of the detector's content (plain dicts, lists, floats, tensors)

The payload is serialised separately so that its hash covers every byte of the content (weights,
statistics, thresholds, configuration). It holds ``config`` (``DetectorConfig.to_dict``: since
format 2 with ``method`` and, for GCAD, ``gcad``), ``calibration`` and ``scales``: per patch size
one entry whose ``kind`` says the model: ``"st"`` (teacher, students, μ/σ, e/v statistics) or
``"gcad"`` (teacher configuration, GCAD architecture and the model's whole ``state_dict``). Format 1
(Student–Teacher only) had no ``method`` and no ``kind``: such a file is read as ``st``. Nothing in the file is executed on loading
(``weights_only=True`` at both levels).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from ust.io import atomic_write

FORMAT = "ust.detector/2"
#: the formats this version reads (1: Student–Teacher scales only, without ``kind``/``method``)
READABLE_FORMATS = ("ust.detector/1", FORMAT)
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container


class DetectorFileError(ValueError):
    """A file that cannot be loaded as a detector; the message names the file and the reason."""


def _ust_version() -> str:
    import ust  # at call time, so that the running version is the one compared

    return ust.__version__


def write_detector_file(payload: dict[str, Any], path: str | os.PathLike) -> str:
    """Write ``payload`` atomically to ``path`` (parents created); returns its SHA-256 (hex)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    outer = {"format": FORMAT, "ust_version": _ust_version(), "sha256": digest, "payload": data}
    atomic_write(path, lambda fh: torch.save(outer, fh))
    return digest


def _read_outer(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"detector file {path} does not exist; fit one with `ust fit`")
    if path.is_dir():
        raise DetectorFileError(f"{path} is a folder, not a detector file")
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == _ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        what = "is corrupt or truncated" if is_zip else "is not a ust detector file"
        raise DetectorFileError(
            f"{path} {what} (torch.load failed: {type(e).__name__}); fit a detector with `ust fit`"
        ) from e


def _check_outer(outer: Any, path: Path) -> None:
    if not isinstance(outer, dict) or outer.get("format") not in READABLE_FORMATS:
        hint = ""
        if isinstance(outer, dict) and {"state_dict", "net_config"} <= set(outer):
            hint = " (it is a teacher file: pass it to `ust fit --teacher-dir`)"
        elif isinstance(outer, dict) and "students" in outer:
            hint = " (it is a student ensemble of one scale)"
        raise DetectorFileError(f"{path} is not a ust detector file{hint}; fit one with `ust fit`")
    version, running = outer.get("ust_version"), _ust_version()
    if version != running:
        raise DetectorFileError(
            f"{path} was written by ust {version}, this is ust {running}: refit it with `ust fit` "
            f"(or load it with ust {version})"
        )
    data = outer.get("payload")
    if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != outer.get("sha256"):
        raise DetectorFileError(
            f"{path} is corrupt: its content does not match the stored SHA-256; refit or restore it"
        )


def read_detector_file(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(payload, SHA-256 hex) of a file written by :func:`write_detector_file`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DetectorFileError: not a detector file, written by another ust version, or corrupt.
    """
    path = Path(path)
    outer = _read_outer(path)
    _check_outer(outer, path)
    try:
        payload = torch.load(io.BytesIO(outer["payload"]), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DetectorFileError(f"{path} is corrupt: its payload cannot be read ({e})") from e
    return payload, outer["sha256"]
