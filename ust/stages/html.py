"""Executed notebooks as standalone HTML pages: ``python -m ust.stages.html results/notebooks
results/html`` writes one ``<name>.html`` per ``<name>.ipynb`` (nbconvert's ``lab`` template; the
figures are embedded as data URIs, so every page is one self-contained file).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ust.io import atomic_write_text
from ust.paths import resolve

__all__ = ["render_notebooks"]


def render_notebooks(
    src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, template: str = "lab"
) -> list[Path]:
    """Render every ``*.ipynb`` directly in ``src_dir`` (outputs as stored, nothing is executed) to
    ``<out_dir>/<stem>.html`` with nbconvert's HTML exporter (``template``: ``lab`` or
    ``classic``); each file is written atomically. Returns the written paths, sorted.

    Raises:
        FileNotFoundError: ``src_dir`` holds no notebook.
    """
    import nbformat
    from nbconvert import HTMLExporter

    notebooks = sorted(resolve(src_dir).glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks in {resolve(src_dir)}: run `dvc repro` first")
    exporter = HTMLExporter(template_name=template)
    out = resolve(out_dir)
    written = []
    for path in notebooks:
        body, _ = exporter.from_notebook_node(nbformat.read(path, as_version=4))
        written.append(atomic_write_text(out / f"{path.stem}.html", body))
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m ust.stages.html [SRC_DIR] [OUT_DIR] [--template lab|classic]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ust.stages.html", description="render executed notebooks to HTML"
    )
    parser.add_argument("src_dir", nargs="?", default="results/notebooks")
    parser.add_argument("out_dir", nargs="?", default="results/html")
    parser.add_argument("--template", default="lab", choices=("lab", "classic"))
    args = parser.parse_args(argv)
    written = render_notebooks(args.src_dir, args.out_dir, template=args.template)
    print(f"{len(written)} notebooks rendered to {resolve(args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
