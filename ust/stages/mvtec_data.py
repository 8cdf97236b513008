"""Stage `mvtec_data`: the offline MVTec-layout texture set, built from package files.

``python -m ust.stages.mvtec_data data/textures_mvtec`` writes the set described by ``mvtec_data``
(categories from ``mvtec.categories``) into that folder when ``mvtec_data.synthetic`` is true: the
three grayscale skimage textures and the colour photographs of Debian's colobot-common-textures,
cut at native resolution (:func:`ust.data.synthetic.make_synthetic_mvtec`,
docs/decisions.md#synthetic-mvtec). The build is byte-deterministic, so the DVC output hash only
changes with the parameters or the code. With ``synthetic: false`` (the real MVTec AD) the folder
holds a note only, so the stage's output exists in every profile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ust.experiments.config import TEXTURE_SET, PipelineConfig, display_path, load_config
from ust.paths import resolve

NOTE = "NOT_BUILT.txt"


def build_texture_set(root: str | os.PathLike, config: PipelineConfig) -> list[str]:
    """Write the ``mvtec_data`` texture set for ``mvtec.categories`` into ``root`` (an identical
    existing tree is kept untouched); returns the category names."""
    from ust.data.synthetic import make_synthetic_mvtec

    data = config.mvtec_data
    return make_synthetic_mvtec(
        root,
        categories=config.mvtec.categories,
        image_size=data.image_size,
        crop_size=data.crop_size,
        n_train=data.n_train,
        n_test_good=data.n_test_good,
        n_test_defect_per_type=data.n_test_defect_per_type,
        seed=data.seed,
        texture_dir=data.texture_dir,
        overwrite=True,
    )


def run(out_dir: str | os.PathLike = TEXTURE_SET, config: PipelineConfig | None = None) -> Path:
    """The stage: the texture set in ``out_dir`` (``synthetic: true``), else a note there."""
    config = config or load_config()
    out = resolve(out_dir)
    data = config.mvtec_data
    if not data.synthetic:
        out.mkdir(parents=True, exist_ok=True)
        for child in out.iterdir():  # a set built by an earlier profile is not this profile's data
            if child.name != NOTE:
                raise FileExistsError(
                    f"{display_path(out)} holds {child.name} from an earlier texture-set build; "
                    f"`dvc repro` removes it first (or delete {display_path(out)} by hand)"
                )
        (out / NOTE).write_text(
            f"mvtec_data.synthetic is false: the MVTec AD data are read from {data.root}; "
            "this folder only exists so that the mvtec_data stage has an output.\n"
        )
        return out
    if resolve(data.root) != out:
        raise ValueError(
            f"{config.source}: mvtec_data.root is {data.root!r} but the texture set is built in "
            f"{display_path(out)}; set mvtec_data.root: {display_path(out)} (or synthetic: false)"
        )
    names = build_texture_set(out, config)
    print(f"texture set in {display_path(out)}: {', '.join(names)}")
    return out


if __name__ == "__main__":  # pragma: no cover - exercised by the DVC pipeline tests
    run(*sys.argv[1:2])
