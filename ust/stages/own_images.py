"""The README's "Your own images" example, produced by really running the three commands.

``python -m ust.stages.own_images figures/own_images`` fits a detector with ``ust fit`` on the
anomaly-free training images of the first MVTec-layout category of ``params.yaml`` (the teachers of
the pipeline, the students' settings of ``mvtec_train``), scores that category's test images with
``ust predict``, evaluates it on the labelled test images with ``ust evaluate --model`` (the
confusion counts at the stored thresholds), exports the detector with ``ust export --format onnx
--check``, and writes ``example.md`` (the commands, what they printed, the first rows of
``scores.csv``) and one overlay image into the output folder. The README embeds ``example.md`` verbatim (``readme_sync``), so nothing
in that section is typed by hand.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ust.experiments.config import load_config
from ust.io import atomic_write, atomic_write_text
from ust.paths import ROOT, resolve

SCORE_ROWS = 6
PROGRESS = re.compile(r"^[\w ]+:\s+\d+%\|")  # tqdm bars on stderr are not part of the example


def _run(args: list[str]) -> str:
    """Run ``ust <args>`` in the repository root; its stdout+stderr (raises on a failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "ust.cli", *args], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"`ust {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    lines = (done.stdout + "\n" + done.stderr).replace("\r", "\n").splitlines()
    return "\n".join(ln for ln in lines if ln.strip() and not PROGRESS.match(ln))


def _rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def _commands(category: str, work: Path) -> list[list[str]]:
    """The four command lines, with the active profile's student settings."""
    cfg = load_config()
    train = cfg.mvtec_train_for(category)
    root = resolve(cfg.mvtec_data.root) / category
    model = work / "detector.pt"
    sizes = [str(p) for p in cfg.mvtec.patch_sizes]
    return [
        ["fit", "--images", _rel(root / "train" / "good"), "--out", _rel(model),
         "--teacher-dir", "results/teachers", "--patch-sizes", *sizes,
         "--image-size", str(train.image_size), "--epochs", str(train.epochs),
         "--batch-size", str(train.batch_size),
         *(["--crop", str(train.crop)] if train.crop is not None else []),
         "--students", str(train.students), "--seed", str(train.seed), "--no-progress"],
        ["predict", "--model", _rel(model), _rel(root / "test"), "--out", _rel(work / "pred")],
        ["evaluate", "--model", _rel(model), "--data-root", _rel(root.parent), "--category",
         category, "--out", _rel(work / "eval")],
        ["export", "--model", _rel(model), "--format", "onnx", "--out",
         _rel(work / "detector.onnx"), "--check"],
    ]  # fmt: skip


def _scores_head(scores: Path) -> str:
    with open(scores, newline="") as f:
        rows = list(csv.reader(f))
    return "\n".join(",".join(r) for r in rows[: SCORE_ROWS + 1])


def write_example(out_dir: str | Path, category: str | None = None) -> Path:
    """Run the example and write ``example.md`` and ``overlay.png`` into ``out_dir``."""
    out = resolve(out_dir)
    category = category or load_config().mvtec.categories[0]
    scratch = resolve("build")
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="own-images-") as tmp:
        work = Path(tmp)
        fit, predict, evaluate, export = _commands(category, work)
        said = [
            ln for ln in _run(fit).splitlines() if ln.startswith(("image threshold", "ust fit:"))
        ]
        printed = {
            "fit": "\n".join(said),
            "predict": _run(predict),
            "evaluate": _run(evaluate),
            "export": _run(export),
        }
        scores = _scores_head(work / "pred" / "scores.csv")
        overlays = sorted((work / "pred" / "overlays").rglob("*.png"))
        anomalous = [p for p in overlays if "good" not in p.parts] or overlays
        out.mkdir(parents=True, exist_ok=True)
        data = anomalous[0].read_bytes()
        atomic_write(out / "overlay.png", lambda fh: fh.write(data))
        shown = lambda cmd: " ".join(cmd).replace(_rel(work), "out")  # noqa: E731
        text = (
            f"Run on the `{category}` category of the pipeline's MVTec-layout set with the "
            "pipeline's teachers and the active profile's student settings "
            "(`python -m ust.stages.own_images`):\n\n```console\n"
            f"$ ust {shown(fit)}\n{printed['fit']}\n$ ust {shown(predict)}\n"
            f"{printed['predict']}\n$ ust {shown(evaluate)}\n{printed['evaluate']}\n"
            f"$ ust {shown(export)}\n{printed['export']}\n$ head -n {SCORE_ROWS + 1} "
            f"out/pred/scores.csv\n{scores}\n```\n\n"
            f"![overlay of {anomalous[0].name}](overlay.png)\n"
        ).replace(str(work), "out")
    return atomic_write_text(out / "example.md", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ust.stages.own_images", description=__doc__)
    parser.add_argument("out_dir", nargs="?", default="figures/own_images")
    parser.add_argument("--category", default=None)
    args = parser.parse_args(argv)
    print(write_example(args.out_dir, args.category))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
