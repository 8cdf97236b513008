"""Stage `loco_data`: the offline MVTec LOCO AD-layout scene set, built from package photographs.

``python -m ust.stages.loco_data data/loco`` writes the scenes described by ``loco_data`` (categories
from ``loco.categories``) into that folder when ``loco_data.synthetic`` is true
(:func:`ust.data.loco_scenes.make_loco_set`, docs/decisions.md#loco-offline-set). The build is
byte-deterministic, so the DVC output hash only changes with the parameters or the code. With
``synthetic: false`` (the real MVTec LOCO AD) the folder holds a note only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ust.experiments.config import LocoDataConfig, PipelineConfig, load_config
from ust.paths import resolve

#: where the stage builds the offline set (``loco_data.root`` when synthetic)
LOCO_SET = "data/loco"
NOTE = "NOT_BUILT.txt"


def build_loco_set(root: str | os.PathLike, data: LocoDataConfig, categories) -> list[str]:
    """Write the scene set of ``loco_data`` section ``data`` for ``categories`` into ``root``
    (:func:`ust.data.loco_scenes.make_loco_set`); returns the category names."""
    from ust.data.loco_scenes import make_loco_set

    return make_loco_set(
        root,
        categories,
        image_size=data.image_size,
        n_train=data.n_train,
        n_validation=data.n_validation,
        n_test_good=data.n_test_good,
        n_test_per_kind=data.n_test_per_kind,
        seed=data.seed,
        texture_dir=data.texture_dir,
        overwrite=True,
    )


def run(out_dir: str | os.PathLike = LOCO_SET, config: PipelineConfig | None = None) -> Path:
    """The stage: the scene set in ``out_dir`` (``synthetic: true``), else a note there."""
    config = config or load_config()
    out = resolve(out_dir)
    data = config.loco_data
    out.mkdir(parents=True, exist_ok=True)
    if not data.synthetic:
        (out / NOTE).write_text(
            f"loco_data.synthetic is false: MVTec LOCO AD is read from {data.root}; this folder "
            "only exists so that the loco_data stage has an output.\n"
        )
        return out
    if resolve(data.root) != out:
        raise ValueError(
            f"`loco_data.root` is {data.root!r}, but the loco_data stage builds the scene set in "
            f"{out_dir}: set `loco_data.root: {out_dir}`"
        )
    build_loco_set(out, data, config.loco.categories)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = run(args[0] if args else LOCO_SET)
    print(f"loco_data: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised by the DVC pipeline tests
    raise SystemExit(main())
