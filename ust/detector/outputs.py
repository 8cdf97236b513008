"""Output paths of the command line, checked before any work starts and written all at once.

:func:`check_output_file` and :func:`check_output_dir` raise a ValueError with a one-line message
(an existing folder where a file is expected or the reverse, a file in the way among the parents,
a folder that cannot be written) before anything is computed or created. :func:`staging_dir` and
:func:`publish_dir` build an output folder in a hidden sibling and move it into place at the end,
so an interrupted or failed run leaves no partial output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ust.io import replace_dir


def _existing_ancestor(path: Path, label: str) -> Path:
    """The nearest existing ancestor of ``path``; it must be a folder."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{label} {path}: {parent} is a file, not a folder")
    return parent


def _check_writable(folder: Path, path: Path, label: str) -> None:
    """Create and remove a probe file in ``folder`` (permission bits do not tell for root, ACLs,
    read-only mounts or pseudo file systems; trying does)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".ust-probe-")
    except OSError as e:
        raise ValueError(
            f"{label} {path}: cannot write to folder {folder} ({e.strerror or e})"
        ) from e
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, label: str = "--out") -> Path:
    """``path`` as an absolute path where a file can be written (nothing is created).

    Raises:
        ValueError: ``path`` is a folder, a parent is a file, or the folder is not writable.
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise ValueError(
            f"{label} {path} is a folder; give a file path (e.g. {path / 'detector.pt'})"
        )
    _check_writable(_existing_ancestor(path, label), path, label)
    return path


def check_output_dir(path: str | os.PathLike, label: str = "--out") -> Path:
    """``path`` as an absolute path of a folder that can be created or written (nothing is created).

    Raises:
        ValueError: ``path`` is an existing file, a parent is a file, or nothing can be written.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{label} {path} is a file; give a folder (it is created if missing)")
    folder = path if path.is_dir() else _existing_ancestor(path, label)
    _check_writable(folder, path, label)
    return path


def staging_dir(out: Path) -> Path:
    """A new hidden folder on ``out``'s file system (beside it, or in its nearest existing
    ancestor) in which the output is built; remove it with ``shutil.rmtree`` when done."""
    base = out.parent if out.parent.is_dir() else _existing_ancestor(out, "output")
    return Path(tempfile.mkdtemp(dir=base, prefix=f".{out.name}.tmp-"))


def publish_dir(staged: Path, out: Path, entries: list[str]) -> None:
    """Move the finished ``entries`` of ``staged`` into ``out``: the whole folder when ``out`` does
    not exist yet, else entry by entry (each older entry replaced whole)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, out)
        return
    for name in entries:
        source, target = staged / name, out / name
        if source.is_dir():
            replace_dir(source, target)
        elif source.exists():
            os.replace(source, target)
    shutil.rmtree(staged, ignore_errors=True)


def os_error_message(error: OSError) -> str:
    """One line for an OSError: ``<file>: <reason>``."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"
