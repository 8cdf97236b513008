"""Every path of the project resolved against the repository root, never the current directory."""

from __future__ import annotations

import os
from pathlib import Path


def _find_root() -> Path:
    env = os.environ.get("UST_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    for cand in (here, *here.parents):
        if (cand / "dvc.yaml").exists() and (cand / "ust").is_dir():
            return cand
    return Path.cwd().resolve()


ROOT: Path = _find_root()


def resolve(path: str | os.PathLike) -> Path:
    """Return ``path`` as an absolute path; relative paths are taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (ROOT / p)
