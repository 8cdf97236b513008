"""One self-contained HTML page to review a batch of predictions (``ust predict --report``).

``report.html`` holds everything inline: every image and its overlay as base64 PNG (shrunk to at
most ``max_side`` pixels; the full-size overlays stay in ``overlays/``), the CSS and a few lines of
plain JavaScript; no server, network, CDN or other file is needed, so it can be mailed or archived
with a batch. Images are listed by score, highest first. A name filter and an "anomalous only" box
narrow the list; a threshold slider re-labels every image live (anomalous when its score is
strictly greater than the slider's value, as :meth:`ust.detector.Detector.predict` decides) and
shows the counts, so an engineer sees what another threshold would accept before changing it. The
slider starts at the threshold that made the decisions; "reset" returns to it.

Overlays are those of :func:`ust.detector.render.overlay` (one colour scale for all images, pixels
above the threshold outlined); the slider changes the labels, not the outlines.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch
from PIL import Image

from ust.detector.images import read_image
from ust.detector.render import CMAP, _rgb, overlay
from ust.io import atomic_write_text

MAX_SIDE = 384  # longest side (px) of the pictures embedded in the page


@dataclass
class ReportItem:
    """One image of the report.

    Attributes:
        name: shown, filtered on and used in alt texts (e.g. ``blur/000``).
        score: image score (score units).
        image: the input: a path (read like ``ust predict`` reads it), a (3, H, W) float tensor in
            [0, 1], or an (H, W[, 3]) array (uint8, or float in [0, 1]).
        overlay: the ready overlay (path to a PNG, or uint8 (H, W, 3)); or None to draw it from
            ``image`` and ``anomaly_map`` with :func:`ust.detector.render.overlay`.
        anomaly_map: float (H, W) map at the image's size; needed when ``overlay`` is None.
        anomalous: the decision; None means ``score > threshold``. It must agree with that rule,
            since the slider re-labels by it.
    """

    name: str
    score: float
    image: Any
    overlay: Any = None
    anomaly_map: np.ndarray | None = None
    anomalous: bool | None = None


def _to_rgb8(picture: Any) -> np.ndarray:
    """Path, tensor or array → uint8 (H, W, 3)."""
    if isinstance(picture, str | os.PathLike):
        picture = read_image(picture)
    if isinstance(picture, np.ndarray) and picture.dtype == np.uint8:
        picture = picture.astype(np.float64) / 255.0
    elif isinstance(picture, torch.Tensor) and picture.dim() == 3 and picture.shape[0] == 1:
        picture = picture.expand(3, -1, -1)
    return np.rint(255 * np.clip(_rgb(picture), 0.0, 1.0)).astype(np.uint8)


def png_data_uri(rgb: np.ndarray, max_side: int = MAX_SIDE) -> str:
    """uint8 (H, W, 3) → ``data:image/png;base64,…``, shrunk to at most ``max_side`` px."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay_rgb(
    item: ReportItem, image: np.ndarray, outline_at: float, value_range: tuple[float, float] | None
) -> np.ndarray:
    if item.overlay is not None:
        if isinstance(item.overlay, str | os.PathLike):
            with Image.open(item.overlay) as im:
                return np.asarray(im.convert("RGB"))
        return np.asarray(item.overlay, dtype=np.uint8)
    if item.anomaly_map is None or value_range is None:
        raise ValueError(
            f"report item {item.name!r}: give its overlay, or its anomaly_map and value_range"
        )
    return overlay(image.astype(np.float64) / 255.0, item.anomaly_map, outline_at, value_range)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _slider_range(scores: Sequence[float], threshold: float) -> tuple[float, float]:
    """From a little below the lowest score (all anomalous) to a little above the highest (none)."""
    lo, hi = min(*scores, threshold), max(*scores, threshold)
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
    return lo - pad, hi + pad


def _item_html(item: ReportItem, anomalous: bool, pictures: tuple[str, str]) -> str:
    name = html.escape(item.name, quote=True)
    decision = "anomalous" if anomalous else "accepted"
    return (
        f'<figure class="item {decision}" data-name="{name}" data-score="{float(item.score)!r}">'
        f'<figcaption><span class="name">{name}</span> <span class="score">score '
        f'{_fmt(item.score)}</span> <span class="decision">{decision}</span></figcaption>'
        f'<div class="pics"><img alt="{name}: image" src="{pictures[0]}">'
        f'<img alt="{name}: overlay" src="{pictures[1]}"></div></figure>'
    )


def _colour_scale_html(value_range: tuple[float, float] | None, outline_at: float) -> str:
    if value_range is None:
        return ""
    import matplotlib

    cmap = matplotlib.colormaps[CMAP]
    stops = ", ".join(
        "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in cmap(i / 10)[:3])) for i in range(11)
    )
    return (
        f'<p class="scale">overlay colour scale {_fmt(value_range[0])} '
        f'<span class="bar" style="background: linear-gradient(to right, {stops})"></span> '
        f"{_fmt(value_range[1])}; outlined: pixels above {_fmt(outline_at)}</p>"
    )


def _check_items(items: Sequence[ReportItem], threshold: float) -> list[bool]:
    """Each item's decision (``score > threshold`` unless given, and then it must agree)."""
    if not items:
        raise ValueError("a report needs at least one image")
    decisions = []
    for item in items:
        if not math.isfinite(item.score):
            raise ValueError(f"report item {item.name!r}: score {item.score} is not finite")
        rule = item.score > threshold
        if item.anomalous is not None and bool(item.anomalous) != rule:
            raise ValueError(
                f"report item {item.name!r}: decision {'anomalous' if item.anomalous else 'accepted'}"
                f" disagrees with score {item.score:.6g} > threshold {threshold:.6g}"
            )
        decisions.append(rule)
    return decisions


def write_report(
    path: str | os.PathLike,
    items: Sequence[ReportItem],
    threshold: float,
    *,
    title: str = "ust predict",
    threshold_range: tuple[float, float] | None = None,
    value_range: tuple[float, float] | None = None,
    outline_threshold: float | None = None,
    max_side: int = MAX_SIDE,
) -> Path:
    """Write the report page of ``items`` to ``path`` (one HTML file, atomically).

    Args:
        path: the HTML file (parents created).
        items: the images, any order (listed by score, highest first; ties by name).
        threshold: the decision threshold; the slider starts there.
        title: page title and heading.
        threshold_range: (min, max) of the slider; default: the scores and the threshold, padded
            by 5 % so that both "all anomalous" and "all accepted" can be reached.
        value_range: (vmin, vmax) of the overlays' colour scale: shown as a legend, and needed to
            draw the overlays of items given by map.
        outline_threshold: the score above which overlays drawn here outline pixels; default
            ``threshold``.
        max_side: longest side (px) of the embedded pictures.

    Raises:
        ValueError: no items, a non-finite score, a decision that disagrees with
            ``score > threshold``, a threshold outside ``threshold_range``, or an item with
            neither overlay nor map.
    """
    threshold = float(threshold)
    decisions = _check_items(items, threshold)
    lo, hi = threshold_range or _slider_range([i.score for i in items], threshold)
    if not lo <= threshold <= hi:
        raise ValueError(f"threshold {threshold:.6g} outside the slider's range [{lo}, {hi}]")
    outline_at = threshold if outline_threshold is None else float(outline_threshold)
    order = sorted(range(len(items)), key=lambda i: (-items[i].score, items[i].name))
    body = []
    for i in order:  # one image in memory at a time
        rgb = _to_rgb8(items[i].image)
        pics = rgb, _overlay_rgb(items[i], rgb, outline_at, value_range)
        body.append(
            _item_html(items[i], decisions[i], tuple(png_data_uri(p, max_side) for p in pics))
        )
    n_anomalous = sum(decisions)
    page = PAGE.substitute(
        title=html.escape(title),
        lo=repr(float(lo)),
        hi=repr(float(hi)),
        t=repr(threshold),
        t_shown=_fmt(threshold),
        n=len(items),
        n_anomalous=n_anomalous,
        n_accepted=len(items) - n_anomalous,
        scale=_colour_scale_html(value_range, outline_at),
        items="\n".join(body),
    )
    return atomic_write_text(path, page)


# The page. string.Template: `$name` are filled in; the CSS and script use no `$`.
PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ccc;
  padding: 0.6em 1em; z-index: 1; }
h1 { font-size: 1.2em; margin: 0 0 0.4em 0; }
.controls { display: flex; flex-wrap: wrap; gap: 0.6em 1.5em; align-items: center; }
#threshold { width: 22em; }
#counts { font-weight: bold; }
.scale { margin: 0.4em 0 0 0; font-size: 0.9em; }
.bar { display: inline-block; width: 12em; height: 0.8em; vertical-align: middle; }
main { display: flex; flex-wrap: wrap; gap: 1em; padding: 1em; }
.item { margin: 0; padding: 0.5em; background: #fff; border: 3px solid #2a8a3a; border-radius: 4px; }
.item.anomalous { border-color: #c62828; }
.item[hidden] { display: none; }
.decision { font-weight: bold; color: #2a8a3a; }
.anomalous .decision { color: #c62828; }
.pics { display: flex; gap: 0.3em; margin-top: 0.3em; }
.pics img { width: 220px; height: 220px; object-fit: contain; background: #eee; }
</style>
</head>
<body>
<header>
<h1>$title</h1>
<div class="controls">
<label>threshold <input type="range" id="threshold" min="$lo" max="$hi" step="any" value="$t"
  data-initial="$t"></label>
<span><span id="threshold-value">$t_shown</span>
  <button type="button" id="reset">reset to $t_shown</button></span>
<span id="counts"><span id="count-anomalous">$n_anomalous</span> anomalous /
  <span id="count-accepted">$n_accepted</span> accepted</span>
<label>name <input type="search" id="name-filter" placeholder="filter by name"></label>
<label><input type="checkbox" id="anomalous-only"> anomalous only</label>
<span>showing <span id="count-shown">$n</span> of $n</span>
</div>
$scale
</header>
<main id="items">
$items
</main>
<script>
(function () {
  var slider = document.getElementById("threshold");
  var filter = document.getElementById("name-filter");
  var only = document.getElementById("anomalous-only");
  var items = Array.prototype.slice.call(document.querySelectorAll(".item"));
  function text(id, value) { document.getElementById(id).textContent = value; }
  function update() {
    var t = parseFloat(slider.value), q = filter.value.trim().toLowerCase();
    var anomalous = 0, shown = 0;
    items.forEach(function (item) {
      var a = parseFloat(item.dataset.score) > t;
      if (a) { anomalous += 1; }
      item.classList.toggle("anomalous", a);
      item.classList.toggle("accepted", !a);
      item.querySelector(".decision").textContent = a ? "anomalous" : "accepted";
      var show = (!q || item.dataset.name.toLowerCase().indexOf(q) >= 0) && (!only.checked || a);
      item.hidden = !show;
      if (show) { shown += 1; }
    });
    text("threshold-value", Number(t.toPrecision(6)).toString());
    text("count-anomalous", anomalous);
    text("count-accepted", items.length - anomalous);
    text("count-shown", shown);
  }
  slider.addEventListener("input", update);
  filter.addEventListener("input", update);
  only.addEventListener("change", update);
  document.getElementById("reset").addEventListener("click", function () {
    slider.value = slider.dataset.initial;
    update();
  });
  update();
})();
</script>
</body>
</html>
""")
