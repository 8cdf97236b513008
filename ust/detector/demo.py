"""What notebook 50 needs when the pipeline has not run yet: good images and teachers, built at
smoke size (seconds on a CPU) with a printed message, and a few test images to predict on.

Relative paths are taken from the repository root (:func:`ust.paths.resolve`). Nothing is written
into the pipeline's own folders (``data/``, ``results/``): substitutes go under ``out_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ust.detector.images import find_images
from ust.paths import resolve

SMOKE_IMAGES = {"image_size": 64, "n_train": 12, "n_test_good": 2, "n_test_defect_per_type": 1}
SMOKE_TEACHER = {"iterations": 3, "batch_size": 8, "eval_triplets": 0}


def good_and_test_images(
    images_dir: str | os.PathLike, test_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> tuple[Path, Path]:
    """(folder of good images, folder of test images): the given ones when ``images_dir`` holds
    images, else the synthetic ``brick`` category built under ``<out_dir>/data`` at smoke size
    (:func:`ust.data.synthetic.make_synthetic_mvtec`)."""
    images, tests = resolve(images_dir), resolve(test_dir)
    if images.is_dir() and find_images(images):
        return images, tests
    from ust.data.synthetic import make_synthetic_mvtec

    root = resolve(out_dir) / "data"
    print(
        f"{images} has no images (the pipeline builds it: `dvc repro`); building a smoke-size "
        f"synthetic texture set in {root} instead"
    )
    make_synthetic_mvtec(root, categories=("brick",), **SMOKE_IMAGES)
    return root / "brick" / "train" / "good", root / "brick" / "test"


def teachers(
    teacher_dir: str | os.PathLike, patch_sizes: list[int], out_dir: str | os.PathLike
) -> dict[int, Path]:
    """Teacher file per p: from ``teacher_dir`` (``p<p>.pt`` or ``p<p>/<losses>/teacher.pt``), else
    a tiny self-supervised one (λ_m = λ_c = 1, 3 steps on the bundled photographs) trained into
    ``<out_dir>/teachers/p<p>.pt``: enough to run the code, not to detect anything."""
    from ust.method.teacher import find_teacher  # the one lookup rule for teacher folders

    found: dict[int, Path] = {}
    for p in patch_sizes:
        try:
            found[p] = find_teacher(resolve(teacher_dir), p)
            continue
        except FileNotFoundError:
            pass
        found[p] = _tiny_teacher(p, resolve(out_dir) / "teachers" / f"p{p}.pt")
    return found


def _tiny_teacher(p: int, path: Path) -> Path:
    from ust.method.teacher import TeacherConfig
    from ust.train.teacher import pretrain

    if path.is_file():
        return path
    print(
        f"no p={p} teacher found: training a smoke-size one into {path} (`ust teacher` makes real ones)"
    )
    config = TeacherConfig(
        patch_size=p, lambda_k=0.0, lambda_m=1.0, lambda_c=1.0, device="cpu", **SMOKE_TEACHER
    )
    pretrain(config, path, progress=False)
    return path


def sample_images(folder: str | os.PathLike, n: int) -> list[Path]:
    """Up to ``n`` images under ``folder``, spread evenly over its sorted list (so that several
    sub-folders, e.g. defect types, are represented)."""
    files = find_images(resolve(folder))
    if len(files) <= n:
        return files
    return [files[round(i * (len(files) - 1) / max(n - 1, 1))] for i in range(n)]
