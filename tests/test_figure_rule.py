"""Which test images the MVTec figures show (docs/decisions.md#figure-selection), what the figure
code may import, and progress bars in papermill runs (``TQDM_DISABLE``, ``ust/__init__.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ust.data.mvtec import anomaly_map_path, save_anomaly_map, validate_category
from ust.data.synthetic import make_synthetic_mvtec
from ust.report.figures_mvtec import draw_category_panels, first_of_each_defect
from ust.report.figures_summary import plot_defect_grid
from ust.report.views import mvtec as mvtec_view

ROOT = Path(__file__).resolve().parents[1]


def _samples(defects: str) -> list[SimpleNamespace]:
    """One sample per letter: g = good, other letters = that defect type; ids in order."""
    names = {"g": "good"}
    return [SimpleNamespace(defect=names.get(d, d), i=i) for i, d in enumerate(defects.split())]


def test_first_of_each_defect_good_first_then_each_type_in_order_of_appearance():
    shown = first_of_each_defect(_samples("blur blur foreign g g hole blur scratch hole"))
    assert [(s.defect, s.i) for s in shown] == [
        ("good", 3),
        ("blur", 0),
        ("foreign", 2),
        ("hole", 5),
        ("scratch", 7),
    ]


def test_first_of_each_defect_edge_cases():
    assert first_of_each_defect([]) == []
    only_defects = first_of_each_defect(_samples("crack crack cut"))
    assert [(s.defect, s.i) for s in only_defects] == [("crack", 0), ("cut", 2)]
    assert [s.defect for s in first_of_each_defect(_samples("g g"))] == ["good"]
    samples = _samples("hole g blur")
    first_of_each_defect(samples)
    assert [s.i for s in samples] == [0, 1, 2]  # the input is left alone


@pytest.fixture(scope="module")
def category_runs(tmp_path_factory):
    """A 32-px texture category (2 good, 2 × 5 defective test images) and three finished runs
    (p = 17, p = 33, multiscale) whose maps are constant per image, ``offset + row index``."""
    root = tmp_path_factory.mktemp("figure_rule")
    data = root / "data"
    make_synthetic_mvtec(
        data, ["brick"], image_size=32, n_train=2, n_test_good=2, n_test_defect_per_type=2
    )
    index = validate_category(data, "brick")
    runs = {}
    for name, offset in (("p17", 0.0), ("p33", 10.0), ("multi", 5.0)):
        for i, s in enumerate(index.test):
            path = anomaly_map_path(root / name / "maps", "brick", s.defect, s.image_id)
            save_anomaly_map(path, np.full(s.size, offset + i, dtype=np.float32))
        runs[name] = root / name
    return data, runs, index


def test_category_panels_show_good_and_every_defect_type_on_one_scale(category_runs, tmp_path):
    data, runs, index = category_runs
    figures = draw_category_panels(
        "brick", data, {17: runs["p17"], 33: runs["p33"]}, runs["multi"], tmp_path
    )
    rows = first_of_each_defect(index.test)
    assert [s.defect for s in rows] == ["good", *index.defect_types]
    assert all(s.path.stem == "000" for s in rows)  # the first image of its folder

    fig1 = figures["figure1"]
    image_axes = [ax for ax in fig1.axes if ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 3 * len(rows)
    assert [image_axes[3 * i].get_ylabel() for i in range(len(rows))] == [s.image_id for s in rows]
    assert len({image_axes[3 * i + 2].images[0].get_clim() for i in range(len(rows))}) == 1
    # the good row has no outline, every defect row has one (a red contour on the 2nd column)
    assert not image_axes[1].collections
    assert all(image_axes[3 * i + 1].collections for i in range(1, len(rows)))

    fig5 = figures["figure5"]
    maps = [
        ax.images[0] for ax in fig5.axes if ax.images and ax.images[0].get_cmap().name == "inferno"
    ]
    assert len(maps) == 3 * len(rows)  # p = 17, p = 33, multiscale per row
    values = [offset + index.test.index(s) for offset in (0.0, 10.0, 5.0) for s in rows]
    assert {m.get_clim() for m in maps} == {(min(values), max(values))}  # one scale for all
    assert (tmp_path / "figure1.png").stat().st_size > 0
    assert (tmp_path / "figure5_scales.png").stat().st_size > 0


def test_defect_grid_one_block_per_category_one_scale_each(tmp_path):
    """The README's Figure 1 / 5 layout: per category an input row (ground truth outlined) and one
    row per map kind; every map of a category on that category's colour scale."""
    rng = np.random.default_rng(0)

    def block(name, k, offset):
        masks = [np.zeros((8, 8)) for _ in range(k)]
        for m in masks[1:]:
            m[2:5, 2:5] = 1
        return {
            "name": name,
            "titles": ["good/000"] + [f"d{j}/000" for j in range(1, k)],
            "images": [rng.random((8, 8, 3)) for _ in range(k)],
            "masks": masks,
            "maps": {
                "p = 17": [np.full((4, 4), offset + j) for j in range(k)],
                "multiscale": [np.full((4, 4), offset + 10 + j) for j in range(k)],
            },
        }

    fig = plot_defect_grid([block("brick", 3, 0.0), block("rust", 2, 100.0)], tmp_path / "f.png")
    axes = np.array(fig.axes).reshape(6, 3)  # (1 + 2 map rows) × 2 categories, 3 columns
    assert [axes[r, 0].get_ylabel() for r in range(6)] == [
        "brick\ninput",
        "p = 17",
        "multiscale",
        "rust\ninput",
        "p = 17",
        "multiscale",
    ]
    assert [axes[0, j].get_title() for j in range(3)] == ["good/000", "d1/000", "d2/000"]
    assert not axes[0, 0].collections and axes[0, 1].collections  # outlines on defects only
    assert {axes[r, j].images[0].get_clim() for r in (1, 2) for j in range(3)} == {(0.0, 12.0)}
    assert {axes[r, j].images[0].get_clim() for r in (4, 5) for j in range(2)} == {(100.0, 111.0)}
    assert not axes[3, 2].axison  # rust has one image fewer: its third panel is hidden
    assert (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match="category brick: every row needs 3 panels"):
        bad = block("brick", 3, 0.0)
        bad["maps"]["p = 17"].pop()
        plot_defect_grid([bad], None)


def test_single_scale_view_uses_the_rule(category_runs):
    data, runs, index = category_runs
    fig = mvtec_view.anomaly_maps(data, "brick", runs["p17"])
    assert len(fig.axes) == 3 * (1 + len(index.defect_types))  # 3 panels per row
    assert len(fig.axes[2].child_axes) == 1  # one scale, one colour bar beside the first row
    assert mvtec_view.example_samples(index) == first_of_each_defect(index.test)


def test_figure_code_never_imports_the_method_training_or_stages():
    code = (
        "import sys; import ust.report.figures_mvtec, ust.report.views.mvtec; "
        "bad = sorted(m for m in sys.modules if m.startswith(('ust.method', 'ust.train', "
        "'ust.stages'))); print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("value,off", [("1", True), ("", False), ("0", False)])
def test_tqdm_disable_turns_off_every_bar_of_the_process(value, off):
    """papermill runs (dvc.yaml sets TQDM_DISABLE=1): bars asked for with progress=True stay off,
    and nothing reaches stderr."""
    code = (
        "import ust.method.students\n"
        "from tqdm.auto import tqdm, trange\n"
        "bars = [tqdm(range(3), disable=False), trange(2, disable=False)]\n"
        "off = all(b.disable for b in bars)  # before use: a finished bar reports disable=True\n"
        "[list(b) for b in bars]\n"
        "print(off)\n"
    )
    env = {**os.environ, "TQDM_DISABLE": value}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(off)
    assert (done.stderr == "") == off
