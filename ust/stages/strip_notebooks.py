"""Notebook housekeeping for the DVC + papermill pipeline: output-free copies, ``parameters`` cells.

``python -m ust.stages.strip_notebooks strip notebooks build/notebooks`` writes output-free copies that the DVC
stages depend on, so saving a notebook with outputs in JupyterLab does not invalidate a stage.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbstripout import strip_output

from ust.io import atomic_write_text
from ust.paths import resolve


def stripped(path: str | os.PathLike) -> nbformat.NotebookNode:
    """The notebook at ``path`` without outputs, execution counts or volatile metadata."""
    nb = nbformat.read(str(path), as_version=4)
    nb = strip_output(nb, keep_output=False, keep_count=False, keep_id=True)
    nb.metadata.pop("widgets", None)
    return nb


def strip_notebooks(src: str | os.PathLike, dst: str | os.PathLike) -> list[Path]:
    """Write a stripped copy of every ``src/*.ipynb`` into ``dst`` (atomic per file)."""
    src, dst = resolve(src), resolve(dst)
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for nb_path in sorted(src.glob("*.ipynb")):
        written.append(atomic_write_text(dst / nb_path.name, nbformat.writes(stripped(nb_path))))
    return written


def parameters_cell(path: str | os.PathLike) -> str:
    """Source of the cell tagged ``parameters`` (ValueError if there is none)."""
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell.source
    raise ValueError(f"{path} has no cell tagged 'parameters' (papermill needs one)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ust.stages.strip_notebooks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("strip", help="write output-free copies of the notebooks")
    s.add_argument("src")
    s.add_argument("dst")
    args = parser.parse_args(argv)
    for path in strip_notebooks(args.src, args.dst):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
