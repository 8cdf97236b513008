"""Where a scale's anomaly map goes wrong: per defect type, and the image border band against the
interior.

A p×p network reads zero padding for every pixel closer than (p − 1)/2 to the image border; at
p = 65 on a 128-px image that is most of the image. For every category and scale of a finished
MVTec-layout run (``results/mvtec/<category>/p<p>/maps`` and ``results/mvtec_multiscale/<category>/maps``,
the TIFF maps at ground-truth resolution) this prints one JSON line with

* the pixel ROC-AUC and AU-PRO (FPR 0.3) of the whole maps, as the pipeline reports them;
* the same on the interior only: maps and masks cropped by ``band`` = (p − 1)/2 pixels, scaled
  from network input to ground-truth resolution (65 for the multiscale map, its widest field);
* the mean score of anomaly-free pixels in the border band and in the interior, and the share of
  the defect pixels that lie in the band;
* AU-PRO and pixel ROC-AUC per defect type (the good test images with that type's images), as
  MVTec AD's per-type tables do.

It reads files only (no network runs):

    python benchmarks/map_diagnostics.py --results results --data data/textures_mvtec
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from ust.data.mvtec import validate_category
from ust.eval.metrics import au_pro, pixel_roc_auc
from ust.experiments.protocol import ground_truth


def read_maps(map_dir: Path, category: str, samples) -> list[np.ndarray]:
    """The TIFF maps of ``samples``, in their order (``maps/<category>/test/<type>/<stem>.tiff``)."""
    root = map_dir / category / "test"
    return [
        tifffile.imread(root / s.path.parent.name / f"{s.path.stem}.tiff").astype(np.float64)
        for s in samples
    ]


def band_of(p: int, network_size: int, gt_size: int) -> int:
    """Border band in ground-truth pixels: the (p − 1)/2 network pixels whose field reads padding."""
    return int(round((p - 1) / 2 * gt_size / network_size))


def analyse(maps: list[np.ndarray], masks: list[np.ndarray], band: int) -> dict:
    """The metrics of the module docstring; the interior ones are None when the band leaves no
    interior or no defect pixel in it."""
    if 2 * band >= min(masks[0].shape) or not any(g[band:-band, band:-band].any() for g in masks):
        return {"band_px": band, "interior": None}
    inner = (slice(band, -band or None),) * 2
    in_band = np.ones(masks[0].shape, bool)
    in_band[inner] = False
    good_band = np.concatenate([m[in_band & ~g] for m, g in zip(maps, masks, strict=True)])
    good_inner = np.concatenate([m[~in_band & ~g] for m, g in zip(maps, masks, strict=True)])
    defect = np.concatenate([g.ravel() for g in masks])
    defect_band = sum(int(g[in_band].sum()) for g in masks)
    return {
        "band_px": band,
        "pixel_auroc": round(pixel_roc_auc(maps, masks), 4),
        "pixel_auroc_interior": round(
            pixel_roc_auc([m[inner] for m in maps], [g[inner] for g in masks]), 4
        ),
        "au_pro": round(au_pro(maps, masks, integration_limit=0.3), 4),
        "au_pro_interior": round(
            au_pro([m[inner] for m in maps], [g[inner] for g in masks], integration_limit=0.3), 4
        ),
        "good_score_band": round(float(good_band.mean()), 3),
        "good_score_interior": round(float(good_inner.mean()), 3),
        "defect_share_in_band": round(defect_band / max(int(defect.sum()), 1), 3),
    }


def by_defect(maps: list[np.ndarray], masks: list[np.ndarray], samples) -> dict:
    """{"au_pro_<type>", "pixel_auroc_<type>"}: each defect type scored with the good images."""
    row = {}
    for defect in sorted({s.defect for s in samples} - {"good"}):
        keep = [i for i, s in enumerate(samples) if s.defect in ("good", defect)]
        sub_maps, sub_masks = [maps[i] for i in keep], [masks[i] for i in keep]
        row[f"au_pro_{defect}"] = round(au_pro(sub_maps, sub_masks, integration_limit=0.3), 4)
        row[f"pixel_auroc_{defect}"] = round(pixel_roc_auc(sub_maps, sub_masks), 4)
    return row


def scale_dirs(results: Path, category: str) -> dict[str, tuple[Path, int]]:
    """{scale name: (maps folder, receptive field)} for the scales this run has."""
    found = {}
    for run in sorted((results / "mvtec" / category).glob("p*/run_config.json")):
        p = json.loads(run.read_text())["p"]
        found[f"p{p}"] = (run.parent / "maps", p)
    multi = results / "mvtec_multiscale" / category / "maps"
    if multi.is_dir() and found:
        found["multiscale"] = (multi, max(p for _, p in found.values()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--data", type=Path, default=Path("data/textures_mvtec"))
    args = parser.parse_args()
    for category_dir in sorted((args.results / "mvtec").iterdir()):
        category = category_dir.name
        index = validate_category(args.data, category)
        masks = ground_truth(index, index.test)
        for scale, (map_dir, p) in scale_dirs(args.results, category).items():
            config = json.loads(
                (args.results / "mvtec" / category / f"p{p}/run_config.json").read_text()
            )
            band = band_of(p, config["image_size"], masks[0].shape[0])
            maps = read_maps(map_dir, category, index.test)
            row = analyse(maps, masks, band) | by_defect(maps, masks, index.test)
            print(
                json.dumps(
                    {
                        "benchmark": "map_diagnostics",
                        "category": category,
                        "scale": scale,
                        "p": p,
                        **row,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
