"""MVTec AD baselines of Table 2 (paper §4.2): feature-distribution models on the p = 65 teacher's
dense descriptors (1-NN, K-Means, OC-SVM, ℓ2-AE, VAE) and the SSIM autoencoder on the images.

:func:`run_feature_baselines` writes ``baselines.json`` and :func:`run_ssim_ae_baseline`
``ssim_ae.json`` (optionally with ``maps_<method>/...`` TIFFs), in the same map layout and with the
same metrics as the students' runs.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ust.data.mvtec import (
    CategoryIndex,
    save_anomaly_map,
    validate_category,
)
from ust.experiments.mvtec_single import (
    as_teacher,
    compute_metrics,
    load_images,
    load_masks,
    map_paths,
    upsample_map,
)
from ust.experiments.outputs import fresh_dir, replace_dir, write_json
from ust.method.networks import PatchNet
from ust.method.students import (
    StudentTeacher,
    derive_seed,
    fit_target_statistics,
)

BASELINE_METHODS: tuple[str, ...] = ("1nn", "kmeans", "ocsvm", "l2ae", "vae")


# ------------------------------------------------------------------------------------- baselines
def _teacher_only(teacher: PatchNet, device: torch.device) -> StudentTeacher:
    """A :class:`StudentTeacher` without students: dense teacher features and their μ/σ."""
    return StudentTeacher(teacher, nn.ModuleList(), dense=True).to(device)


def _sample_descriptors(
    model: StudentTeacher,
    images: torch.Tensor,
    n_samples: int,
    seed: int,
    *,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """A seeded random subset of the normalised dense descriptors of ``images`` (N, 3, h, w).

    Draws ``min(n_samples, N·h·w)`` distinct pixel positions uniformly over all images and returns
    their (y^T − μ)/σ descriptors, shape (n, d) float32, in random order (so any prefix is itself a
    uniform random subset).
    """
    n, _, h, w = images.shape
    total = n * h * w
    k = min(int(n_samples), total)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=k, replace=False))
    device = model.target_mean.device
    parts = []
    for start in tqdm(
        range(0, n, batch_size), desc="teacher descriptors", disable=not progress, leave=False
    ):
        batch = images[start : start + batch_size]
        lo, hi = start * h * w, (start + len(batch)) * h * w
        sel = chosen[(chosen >= lo) & (chosen < hi)] - lo
        if len(sel) == 0:
            continue
        feats = model.targets(batch.to(device)).permute(0, 2, 3, 1).reshape(-1, model.teacher.d)
        parts.append(feats[torch.from_numpy(sel).to(device)].cpu().numpy())
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    return samples[rng.permutation(k)]


def _score_descriptors(
    score: Callable[[np.ndarray], np.ndarray], desc: np.ndarray, chunk_size: int | None
) -> np.ndarray:
    """Scores of (n, d) descriptors → (n,), ``chunk_size`` rows at a time (None: all at once)."""
    step = len(desc) if chunk_size is None else max(1, int(chunk_size))
    return np.concatenate(
        [np.asarray(score(desc[i : i + step])) for i in range(0, len(desc), step)]
    )


def run_feature_baselines(
    data_root: str | os.PathLike,
    category: str,
    teacher65: PatchNet | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    methods: Sequence[str] = BASELINE_METHODS,
    n_1nn: int = 5000,
    n_fit: int = 50_000,
    ae_epochs: int = 100,
    ae_lr: float = 1e-4,
    ae_batch: int = 512,
    ae_weight_decay: float = 1e-5,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 8,
    chunk_size: int = 65_536,
    integration_limit: float = 0.3,
    save_maps: bool = False,
) -> dict[str, dict]:
    """Feature-distribution baselines of [P] Table 2 on the teacher's dense descriptors (SPEC §7.1).

    The teacher (p = 65 in the paper) describes every pixel of the training part of ``train/good``
    (the same seeded 90 % split as the students); descriptors are normalised per dimension by their
    mean/std over all training pixels, exactly as the students' targets. Fitting uses seeded random
    subsets of pixels: ``n_1nn`` (5000) vectors as the 1-NN dictionary and ``n_fit`` (50 000) for
    K-Means and OC-SVM (register A19) and for the ℓ2-AE / VAE (the paper's "all descriptors" in
    batches of 512 is read as this subset, a reproduction choice). Shallow models reduce with PCA
    (95 % variance) first; the autoencoders see the raw normalised 128-d vectors. Every pixel of a
    test image's (image_size²) descriptor map is scored: by the shallow models in chunks of
    ``chunk_size`` rows, by the autoencoders one image per call (they batch internally; the VAE's
    5 posterior samples are seeded per image, so results do not depend on any chunking). The map
    is upsampled bilinearly to the original size and evaluated like the students' maps.

    Args:
        methods: subset of ``("1nn", "kmeans", "ocsvm", "l2ae", "vae")``.
        ae_epochs, ae_lr, ae_batch, ae_weight_decay: autoencoder training ([P] App. C: 100, 1e-4,
            512, 1e-5).
        save_maps: also write ``<out_dir>/maps_<method>/<category>/test/<defect>/<id>.tiff``.
        (others as in :func:`run_single_scale`)

    Returns:
        ``{method: {"au_pro", "pixel_auroc", "image_auroc", "n_fit", "fit_seconds",
        "score_seconds"}}``, also written to ``<out_dir>/baselines.json``.
    """
    from ust.baselines.autoencoders import make_autoencoder, train_autoencoder
    from ust.baselines.shallow import make_shallow

    methods = [m.lower() for m in methods]
    unknown = [m for m in methods if m not in BASELINE_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown baseline(s) {unknown}; choose among {BASELINE_METHODS}")
    index = validate_category(data_root, category)
    device = torch.device(device)
    teacher = as_teacher(teacher65, device)
    train_paths, _ = index.split(val_fraction, seed)
    train_imgs = load_images(train_paths, image_size, "train images", progress)
    test_imgs = load_images([s.path for s in index.test], image_size, "test images", progress)

    model = _teacher_only(teacher, device)
    fit_target_statistics(model, train_imgs, batch_size=batch_size, progress=progress)
    sizes = {"1nn": n_1nn, "kmeans": n_fit, "ocsvm": n_fit, "l2ae": n_fit, "vae": n_fit}
    pool = _sample_descriptors(
        model,
        train_imgs,
        max(sizes[m] for m in methods),
        derive_seed(seed, 65),
        batch_size=batch_size,
        progress=progress,
    )

    # name → (score function, rows per call). The autoencoders batch internally and see a whole
    # image per call: the VAE's sampling noise then depends on the image only, not on chunking.
    scorers: dict[str, tuple[Callable[..., np.ndarray], int | None]] = {}
    info: dict[str, dict] = {}
    for name in methods:
        X = pool[: sizes[name]]
        t0 = time.perf_counter()
        if name in ("1nn", "kmeans", "ocsvm"):
            kw = {"device": str(device)} if name == "1nn" else {}
            est = make_shallow(name, pca_variance=0.95, max_samples=None, seed=seed, **kw).fit(X)
            scorers[name] = (est.score, chunk_size)
        else:
            ae = make_autoencoder(name, in_dim=X.shape[1], seed=derive_seed(seed, 7))
            train_autoencoder(
                ae,
                X,
                epochs=ae_epochs,
                lr=ae_lr,
                batch_size=ae_batch,
                weight_decay=ae_weight_decay,
                seed=seed,
                device=device,
                progress=progress,
            )
            scorers[name] = (ae.score, None)
        info[name] = {
            "n_fit": len(X),
            "fit_seconds": time.perf_counter() - t0,
            "score_seconds": 0.0,
        }

    small: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    h, w = test_imgs.shape[-2:]
    for start in tqdm(
        range(0, len(test_imgs), batch_size), desc="baseline maps", disable=not progress
    ):
        feats = model.targets(test_imgs[start : start + batch_size].to(device))
        for offset, f in enumerate(feats):
            desc = f.permute(1, 2, 0).reshape(-1, f.shape[0]).cpu().numpy()
            for name in methods:
                fn, rows = scorers[name]
                if name == "vae":
                    image_seed = derive_seed(seed, start + offset)
                    fn = functools.partial(fn, seed=image_seed)
                t0 = time.perf_counter()
                s = _score_descriptors(fn, desc, rows)
                info[name]["score_seconds"] += time.perf_counter() - t0
                small[name].append(s.reshape(h, w).astype(np.float32))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    masks = load_masks(index.test)
    results: dict[str, dict] = {}
    for name in methods:
        maps = [upsample_map(m, s.size) for m, s in zip(small[name], index.test)]
        if save_maps:
            _save_map_folder(out, f"maps_{name}", index, maps)
        results[name] = {**compute_metrics(maps, masks, integration_limit), **info[name]}
    write_json(results, out / "baselines.json", sort_keys=False)
    return results


def _save_map_folder(
    out: Path, folder: str, index: CategoryIndex, maps: Sequence[np.ndarray]
) -> None:
    tmp = fresh_dir(out, folder)
    for path, m in zip(map_paths(tmp, index.category, index.test), maps):
        save_anomaly_map(path, m)
    replace_dir(tmp, out / folder)


def run_ssim_ae_baseline(
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    patch: int | None = None,
    stride: int = 30,
    config: Any = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    integration_limit: float = 0.3,
    save_maps: bool = False,
) -> dict:
    """SSIM-autoencoder baseline ([P] Table 2) with the thesis ch. 3 protocol (SPEC §7.2, A24).

    Grayscale images (BT.601 luma) zoomed to ``image_size``²; the AE (thesis Table 3.1) is trained on
    random ``patch``² crops of the 90 % training split (``config``: an
    :class:`ust.baselines.ssim_ae.SSIMAEConfig`, default ch. 3: d = 100, 10 000 crops, 200 epochs,
    Adam 2e-4, wd 1e-5, batch 64); test images are evaluated patch-wise with ``stride`` and the
    per-pixel 1 − SSIM averaged over overlapping patches, then upsampled to the original size.
    The training state is checkpointed in ``out_dir`` after every epoch (a later call resumes).

    Args:
        patch: patch side, default 128 or ``image_size`` if smaller; must be 128 or 256 (the only
            input sizes of the architecture).
        stride: step between evaluated patches in pixels (thesis ch. 3: 30).
        save_maps: also write ``<out_dir>/maps_ssim_ae/<category>/test/<defect>/<id>.tiff``.

    Returns:
        ``{"au_pro", "pixel_auroc", "image_auroc", "patch", "stride", "train_seconds",
        "score_seconds"}``, also written to ``<out_dir>/ssim_ae.json``.
    """
    from ust.baselines.ssim_ae import SSIMAEConfig, ssim_ae_anomaly_map, to_grayscale, train_ssim_ae

    patch = min(128, image_size) if patch is None else int(patch)
    if patch not in (128, 256) or patch > image_size:
        raise ValueError(
            f"SSIM-AE patch must be 128 or 256 and ≤ image_size={image_size}, got {patch}"
        )
    index = validate_category(data_root, category)
    train_paths, _ = index.split(val_fraction, seed)
    train_imgs = to_grayscale(load_images(train_paths, image_size, "train images", progress))
    test_imgs = to_grayscale(
        load_images([s.path for s in index.test], image_size, "test images", progress)
    )
    cfg = copy.deepcopy(config) if config is not None else SSIMAEConfig()
    cfg.input_size, cfg.in_channels, cfg.seed, cfg.progress = patch, 1, seed, progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, _ = train_ssim_ae(train_imgs, cfg, device=device, checkpoint_dir=out)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps = [
        upsample_map(
            ssim_ae_anomaly_map(model, img, stride=stride, win_size=cfg.win_size, K=cfg.K), s.size
        )
        for img, s in tqdm(
            list(zip(test_imgs, index.test)), desc="SSIM-AE maps", disable=not progress
        )
    ]
    score_seconds = time.perf_counter() - t0
    if save_maps:
        _save_map_folder(out, "maps_ssim_ae", index, maps)
    result = {
        **compute_metrics(maps, load_masks(index.test), integration_limit),
        "patch": patch,
        "stride": stride,
        "train_seconds": train_seconds,
        "score_seconds": score_seconds,
    }
    write_json(result, out / "ssim_ae.json", sort_keys=False)
    return result
