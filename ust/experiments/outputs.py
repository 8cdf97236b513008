"""Run folders: JSON and CSV files written atomically, and output folders built in a hidden temporary
folder and swapped into place whole, so that a crash never leaves a mixture of old and new files."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ust.io import atomic_write, atomic_write_text
from ust.paths import resolve

#: key under which every trained model's result records its optimiser steps (per network; the report
#: labels rows below ``ust.report.claims.MIN_OPTIMIZER_STEPS`` as under-trained)
STEPS_KEY = "optimizer_steps"


def epoch_steps(n_items: int, epochs: int, batch_size: int) -> int:
    """Optimiser steps of ``epochs`` passes over ``n_items`` in batches of ``batch_size`` (the last
    batch may be smaller): ``epochs × ⌈n_items / batch_size⌉``."""
    return int(epochs) * math.ceil(int(n_items) / int(batch_size))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | os.PathLike, *, sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON atomically (numpy scalars converted, NaN → null); relative
    paths are taken from the repository root."""
    text = json.dumps(_clean(data), indent=2, sort_keys=sort_keys) + "\n"
    return atomic_write_text(resolve(path), text)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value stored in ``path`` (relative paths from the repository root)."""
    return json.loads(resolve(path).read_text())


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(data))


def jsonable(obj: Any) -> Any:
    """Round-trip through JSON (tuples → lists) so configs compare equal to what was stored."""
    return json.loads(json.dumps(obj))


def fresh_dir(parent: Path, name: str) -> Path:
    """A new hidden sibling folder ``.<name>.tmp-<hex>`` of ``parent/name`` (stale ones removed)."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in list(parent.glob(f".{name}.tmp-*")) + list(parent.glob(f".{name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an older ``target`` whole."""
    if target.exists():
        trash = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
        os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def single_scale_run_dir(results_dir: str | os.PathLike, category: str, p: int) -> Path:
    """Folder of the single-scale MVTec run of ``category`` at receptive field ``p``:
    ``<results_dir>/<category>/p<p>`` (the ``mvtec@<category>-<p>`` stage writes
    ``results/mvtec/<category>/p<p>``)."""
    return resolve(results_dir) / category / f"p{int(p)}"
