"""Atomic file writes: every output of ``ust`` is written to a temporary file in the target folder
and moved into place with ``os.replace``, so an interrupted run never leaves a half-written file;
whole output folders are built in a hidden temporary folder and swapped into place."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from ust.paths import resolve


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """``write(fh)`` fills a fresh hidden temp file beside ``path`` (binary), which then replaces
    ``path``; on any error the temp file is removed. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_savefig(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format follows ``path``'s suffix."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **savefig_kwargs))


class CorruptFileError(ValueError):
    """A file ``ust`` wrote earlier cannot be read back (truncated by a full disk, half copied)."""


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a file ``ust`` wrote; an unreadable file raises :class:`CorruptFileError`
    naming it instead of the zip or pickle reader's traceback (resume logic decides what next)."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CorruptFileError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from err


def set_aside(path: str | os.PathLike) -> Path:
    """Rename an unreadable ``path`` to ``<path>.corrupt`` (kept for inspection, out of the way)."""
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    return target


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
