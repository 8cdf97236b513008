"""Stage `photo_pool`: the offline teachers' photographs, built from package files.

``python -m ust.stages.photo_pool data/photo_pool`` writes the pool ``photo_pool`` describes
(the bundled training photographs plus the photographs of Debian wallpaper packages,
:func:`ust.data.photo_pool.build_photo_pool`) into that folder; ``teacher.images: data/photo_pool``
pretrains the teachers on it. The build is byte-deterministic, so the DVC output hash only changes
with the parameters or the code. With no ``photo_pool.packages`` the folder holds a note only, so
the stage's output exists in every profile.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ust.experiments.config import PHOTO_POOL, PipelineConfig, display_path, load_config
from ust.paths import resolve

NOTE = "NOT_BUILT.txt"


def run(out_dir: str | os.PathLike = PHOTO_POOL, config: PipelineConfig | None = None) -> Path:
    """The stage: the pool in ``out_dir`` when ``photo_pool.packages`` is set, else a note there."""
    from ust.data.photo_pool import build_photo_pool

    config = config or load_config()
    out = resolve(out_dir)
    pool = config.photo_pool
    if not pool.packages:
        if resolve(config.teacher.images) == out:
            raise ValueError(
                f"{config.source}: teacher.images is {config.teacher.images!r} but "
                "photo_pool.packages is empty, so no pool is built there; list packages in "
                "photo_pool.packages or set teacher.images: embedded"
            )
        if out.exists():
            for child in out.iterdir():  # a pool built by an earlier profile
                child.unlink()
        out.mkdir(parents=True, exist_ok=True)
        (out / NOTE).write_text(
            "photo_pool.packages is empty: no photo pool is built in this profile; this folder "
            "only exists so that the photo_pool stage has an output.\n"
        )
        return out
    counts = build_photo_pool(out, pool.packages, pool.max_side)
    print(f"photo pool in {display_path(out)}: {json.dumps(counts)}")
    return out


if __name__ == "__main__":  # pragma: no cover - exercised by the DVC pipeline tests
    run(*sys.argv[1:2])
