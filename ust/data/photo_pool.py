"""The offline photo pool for teacher pretraining: the bundled photographs plus the photographs of
Debian wallpaper packages, in one folder (docs/decisions.md#offline-teacher-images).

:func:`build_photo_pool` writes PNG files, longest side at most ``max_side`` px (never upsampled):

* ``embedded_<name>.png``: the bundled training photographs (:data:`ust.data.patches.EMBEDDED_IMAGES`
  without :data:`~ust.data.patches.HELDOUT_IMAGES`, which stay a held-out yardstick no pool has seen);
* ``<package>_<stem>.png``: the photographs :data:`PHOTO_PACKAGES` lists for each package asked for.
  The lists are explicit (other packages put wallpapers in the same folders) and leave out rendered
  or abstract pictures.

The texture set's sources (the skimage textures, ``colobot-common-textures``) are never read. The
build is byte-deterministic; it is written next to ``out`` and renamed into place, so a failed build
leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ust.data.patches import EMBEDDED_IMAGES, HELDOUT_IMAGES, _embedded_image


@dataclass(frozen=True)
class PhotoPackage:
    """The photographs one Debian package installs in ``folder``."""

    folder: str
    files: tuple[str, ...]


PHOTO_PACKAGES = {
    # MATE's nature wallpapers: all 12 are photographs (leaves, flowers, grass, water, sky, wood).
    "mate-backgrounds": PhotoPackage(
        "/usr/share/backgrounds/mate/nature",
        (
            "Aqua.jpg",
            "Blinds.jpg",
            "Dune.jpg",
            "FreshFlower.jpg",
            "Garden.jpg",
            "GreenMeadow.jpg",
            "LadyBird.jpg",
            "RainDrops.jpg",
            "Storm.jpg",
            "TwoWings.jpg",
            "Wood.jpg",
            "YellowFlower.jpg",
        ),
    ),
    # Ubuntu 16.04's contest wallpapers: 14 photographs of objects, rooms, animals and landscapes
    # (the package's 15th file, umang_by_Abhishek_Mudgal.jpg, is a rendered abstract).
    "lomiri-wallpapers-16.04": PhotoPackage(
        "/usr/share/backgrounds",
        (
            "Bridge_by_Sander_Klootwijk.jpg",
            "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg",
            "aitzgorri_by_Aitzol_Berasategi.jpg",
            "analogpattern_by_Peter_Nerlich.jpg",
            "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg",
            "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        ),
    ),
}


def package_files(package: str) -> list[Path]:
    """The photographs of ``package``; a clear error when it is unknown or not installed."""
    if package not in PHOTO_PACKAGES:
        raise ValueError(
            f"unknown photo package {package!r}: expected one of {', '.join(PHOTO_PACKAGES)}"
        )
    spec = PHOTO_PACKAGES[package]
    files = [Path(spec.folder) / name for name in spec.files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"photograph {missing[0]} of Debian's {package} not found ({len(missing)} of "
            f"{len(files)} missing): install it with `apt-get install {package}` "
            "(`make system-data` does when run as root)"
        )
    return files


def _save(image, path: Path, max_side: int) -> None:
    from PIL import Image

    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.LANCZOS)  # keeps the aspect ratio
    image.save(path, format="PNG")


def build_photo_pool(
    out: str | os.PathLike, packages: list[str] | tuple[str, ...], max_side: int = 1024
) -> dict[str, int]:
    """Write the pool into ``out`` (replacing it); returns the number of photographs per source
    (``embedded`` and each package)."""
    from PIL import Image

    if max_side < 64:
        raise ValueError(f"max_side must be at least 64 px, got {max_side}")
    sources = {package: package_files(package) for package in packages}  # fail before writing
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        names = [n for n in EMBEDDED_IMAGES if n not in HELDOUT_IMAGES]
        for name in names:
            array = _embedded_image(name).permute(1, 2, 0).numpy()
            _save(Image.fromarray(array), Path(tmp) / f"embedded_{name}.png", max_side)
        counts["embedded"] = len(names)
        for package, files in sources.items():
            for f in files:
                with Image.open(f) as image:
                    _save(image, Path(tmp) / f"{package}_{f.stem}.png", max_side)
            counts[package] = len(files)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
        os.mkdir(tmp)  # TemporaryDirectory removes it on exit
    return counts
