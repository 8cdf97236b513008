"""Predicting a batch of image files into an output folder (what ``ust predict`` does).

Output layout (``<name>``: the image's path relative to the folder it was found in, without
suffix, or the stem of a file given directly)::

    <out>/maps/<name>.tiff       float32 fused anomaly map at the image's original size (score units)
    <out>/overlays/<name>.png    the image, the heat map on a fixed colour scale and the outline of
                                 the pixels above the pixel threshold (ust.detector.render)
    <out>/scores.csv             image,score,anomalous,threshold,name: one row per readable image;
                                 ``anomalous`` is ``score > threshold``, the image threshold

An unreadable image is reported and skipped; the others are still written. The folder is built in a
hidden sibling and moved into place at the end (:mod:`ust.detector.outputs`), so a failed run
leaves no partial output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ust.data.mvtec import save_anomaly_map
from ust.detector.images import ImageReadError, NamedPath, collect_images, read_image
from ust.detector.model import Detector
from ust.detector.outputs import check_output_dir, publish_dir, staging_dir
from ust.detector.render import overlay, save_overlay
from ust.io import write_csv

CSV_HEADER = ("image", "score", "anomalous", "threshold", "name")
ENTRIES = ["maps", "overlays", "scores.csv"]


@dataclass
class PredictSummary:
    """What :func:`predict_to_folder` wrote: ``rows`` as in ``scores.csv`` (score as float,
    anomalous as bool), ``skipped`` one message per unreadable image, the image threshold the
    decisions used (``threshold``) and the pixel threshold the outlines used."""

    out_dir: Path
    threshold: float
    pixel_threshold: float
    rows: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def n_anomalous(self) -> int:
        return sum(bool(r["anomalous"]) for r in self.rows)


def _read_batch(items: Sequence[NamedPath], summary: PredictSummary, on_skip) -> list:
    loaded = []
    for item in items:
        try:
            loaded.append((item, read_image(item.path)))
        except ImageReadError as e:
            summary.skipped.append(str(e))
            if on_skip is not None:
                on_skip(str(e))
    return loaded


def _write_batch(detector: Detector, loaded: list, staged: Path, summary: PredictSummary) -> None:
    """Score the loaded images together and write their map, overlay and row."""
    t, tp = summary.threshold, summary.pixel_threshold
    value_range = detector.display_range(tp)
    images = [image for _, image in loaded]
    pred = detector.predict(images, threshold=tp, image_threshold=t, batch_size=len(loaded))
    for (item, image), amap, score, flag in zip(loaded, pred.maps, pred.scores, pred.anomalous):
        save_anomaly_map(staged / "maps" / f"{item.name}.tiff", amap)
        picture = overlay(image, amap, tp, value_range)
        save_overlay(staged / "overlays" / f"{item.name}.png", picture)
        summary.rows.append(
            {
                "image": str(item.path),
                "score": float(score),
                "anomalous": bool(flag),
                "threshold": t,
                "name": item.name,
            }
        )


def predict_to_folder(
    detector: Detector,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    threshold: float | None = None,
    image_threshold: float | None = None,
    progress: bool = True,
    on_skip: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Predict every image of ``paths`` (files, or folders searched recursively) into ``out_dir``.

    Args:
        detector: a fitted detector.
        paths: image files and folders.
        out_dir: output folder (created; existing ``maps``, ``overlays`` and ``scores.csv`` in it
            are replaced whole, other content is left alone).
        batch_size: images read and scored at once.
        threshold: pixel threshold of the outlines; default: the detector's.
        image_threshold: threshold of the image decisions; default: the detector's.
        progress: tqdm progress bar.
        on_skip: called with the message of each unreadable image as it is skipped.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: no images found, none readable, or ``out_dir`` unusable (nothing is written).
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    items = collect_images(paths)
    out = check_output_dir(out_dir)
    tp = detector.threshold if threshold is None else float(threshold)
    t = detector.image_threshold if image_threshold is None else float(image_threshold)
    summary = PredictSummary(out, t, tp)
    staged = staging_dir(out)
    try:
        bar = tqdm(total=len(items), desc="predict", unit="image", disable=not progress)
        for start in range(0, len(items), batch_size):
            loaded = _read_batch(items[start : start + batch_size], summary, on_skip)
            if loaded:
                _write_batch(detector, loaded, staged, summary)
            bar.update(len(items[start : start + batch_size]))
        bar.close()
        if not summary.rows:
            raise ValueError(f"none of the {len(items)} image(s) could be read; nothing written")
        rows = [
            (r["image"], f"{r['score']:.6g}", str(r["anomalous"]).lower(), f"{t:.6g}", r["name"])
            for r in summary.rows
        ]
        write_csv(staged / "scores.csv", CSV_HEADER, rows)
        publish_dir(staged, out, ENTRIES)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return summary
