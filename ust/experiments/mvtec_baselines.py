"""MVTec AD baselines of Table 2 (paper §4.2): feature-distribution models on the p = 65 teacher's
dense descriptors (1-NN, K-Means, OC-SVM, ℓ2-AE, VAE) and the SSIM autoencoder on the images, plus
a no-learning floor that is not in the paper: ``raw_nn``, the nearest raw-pixel training patch
(:mod:`ust.baselines.raw_patches`), which needs no teacher.

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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ust.baselines.raw_patches import RawPatchSettings, sample_bank, score_image
from ust.data.dataset import load_images
from ust.data.mvtec import CategoryIndex, validate_category
from ust.data.transforms import upsample_map
from ust.experiments.config import MVTecBaselinesConfig
from ust.experiments.outputs import STEPS_KEY, epoch_steps
from ust.experiments.protocol import (
    METRIC_KEYS,
    EvaluationSettings,
    PrecomputedMaps,
    evaluate,
    save_maps,
)
from ust.io import write_json
from ust.method.networks import PatchNet
from ust.method.students import (
    StudentTeacher,
    derive_seed,
    fit_target_statistics,
)
from ust.method.teacher import resolve_teacher
from ust.train.fit import FitSettings

if TYPE_CHECKING:
    from ust.baselines.ssim_ae import SSIMAE, SSIMAEConfig

#: the paper's baselines on teacher descriptors (the default methods of the runner)
BASELINE_METHODS: tuple[str, ...] = ("1nn", "kmeans", "ocsvm", "l2ae", "vae")
#: methods that need no teacher: the raw-pixel patch nearest-neighbour floor
RAW_METHODS: tuple[str, ...] = ("raw_nn",)
#: every method :func:`run_feature_baselines` accepts
KNOWN_METHODS: tuple[str, ...] = BASELINE_METHODS + RAW_METHODS
#: MVTec AD's texture categories (the others are objects); docs/decisions.md#ssim-ae-protocol
MVTEC_TEXTURES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
#: objects the SSIM-AE mirrors left-right / top-bottom (the thesis' per-category augmentation table)
MVTEC_HFLIP: tuple[str, ...] = ("bottle", "hazelnut", "screw", "toothbrush", "transistor", "zipper")
MVTEC_VFLIP: tuple[str, ...] = ("bottle", "hazelnut", "screw", "zipper")
#: salt of the descriptor pool's seed (derive_seed(seed, 65)); fixed, whatever the teacher's p
POOL_SEED_SALT = 65


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


@dataclass(frozen=True)
class FeatureBaselineSettings(MVTecBaselinesConfig):
    """Settings of :func:`run_feature_baselines`: the ``mvtec_baselines`` section
    (:class:`ust.experiments.config.MVTecBaselinesConfig`, defaults the paper's: ``methods``,
    ``n_1nn``/``n_fit`` descriptors, the autoencoders' ``ae_*``, the OC-SVM's ``ocsvm_*`` and the
    raw-pixel floor's ``raw_*``) plus what the run shares with the students and the protocol.

    Attributes:
        image_size, val_fraction, seed: as for the students (:class:`ust.train.fit.FitSettings`):
            the same image zoom and the same seeded training split (``seed`` also draws
            ``raw_nn``'s memory bank).
        inference_batch_size: images per forward pass of the teacher.
        chunk_size: descriptor rows per call of a shallow model's score.
        integration_limit: FPR limit of AU-PRO.
        save_maps: also write ``<out_dir>/maps_<method>/<category>/test/<defect>/<id>.tiff``.
    """

    image_size: int = FitSettings.image_size
    val_fraction: float = FitSettings.val_fraction
    seed: int = FitSettings.seed
    inference_batch_size: int = FitSettings.inference_batch_size
    chunk_size: int = 65_536
    integration_limit: float = 0.3
    save_maps: bool = False

    @classmethod
    def from_sections(cls, base: MVTecBaselinesConfig, fit: FitSettings) -> FeatureBaselineSettings:
        """The ``mvtec_baselines`` section with the students' ``fit`` settings
        (:class:`ust.train.fit.FitSettings`: image size, split, seed)."""
        return cls(
            **{f.name: getattr(base, f.name) for f in fields(MVTecBaselinesConfig)},
            image_size=fit.image_size,
            val_fraction=fit.val_fraction,
            seed=fit.seed,
        )

    def raw_settings(self) -> RawPatchSettings:
        """``raw_*`` and ``seed`` as :class:`ust.baselines.raw_patches.RawPatchSettings`."""
        return RawPatchSettings(
            patch=self.raw_patch,
            grid=self.raw_grid,
            n_bank=self.raw_bank,
            stride=self.raw_stride,
            padding=self.raw_padding,
            seed=self.seed,
        )


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` in lower case; ValueError for none or an unknown one."""
    methods = [m.lower() for m in methods]
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown baseline(s) {unknown}; choose among {KNOWN_METHODS}")
    return methods


def _fit_size(name: str, settings: FeatureBaselineSettings) -> int:
    return settings.n_1nn if name == "1nn" else settings.n_fit


def _shallow_options(name: str, settings: FeatureBaselineSettings, device: torch.device) -> dict:
    """Keyword arguments of :func:`ust.baselines.shallow.make_shallow` beyond PCA and seed."""
    if name == "1nn":
        return {"device": str(device)}
    if name == "ocsvm":
        return {"solver": settings.ocsvm_solver, "n_components": settings.ocsvm_components}
    return {}


def fit_feature_baselines(
    model: StudentTeacher,
    train_imgs: torch.Tensor,
    methods: Sequence[str],
    settings: FeatureBaselineSettings,
    device: torch.device,
    progress: bool,
) -> tuple[dict[str, tuple[Callable[..., np.ndarray], int | None]], dict[str, dict]]:
    """Fit each method on a seeded subset of the training descriptors; returns
    ({name: (score function, rows per call)}, {name: {"n_fit", "fit_seconds", "score_seconds"}}).

    The autoencoders batch internally and see a whole image per call (rows ``None``): the VAE's
    sampling noise then depends on the image only, not on chunking.
    """
    from ust.baselines.autoencoders import make_autoencoder, train_autoencoder
    from ust.baselines.shallow import make_shallow

    seed = settings.seed
    pool = _sample_descriptors(
        model,
        train_imgs,
        max(_fit_size(m, settings) for m in methods),
        derive_seed(seed, POOL_SEED_SALT),
        batch_size=settings.inference_batch_size,
        progress=progress,
    )
    scorers: dict[str, tuple[Callable[..., np.ndarray], int | None]] = {}
    info: dict[str, dict] = {}
    for name in methods:
        X = pool[: _fit_size(name, settings)]
        t0 = time.perf_counter()
        if name in ("1nn", "kmeans", "ocsvm"):
            kw = _shallow_options(name, settings, device)
            est = make_shallow(name, pca_variance=0.95, max_samples=None, seed=seed, **kw).fit(X)
            scorers[name] = (est.score, settings.chunk_size)
        else:
            ae = make_autoencoder(name, in_dim=X.shape[1], seed=derive_seed(seed, 7))
            train_autoencoder(
                ae,
                X,
                epochs=settings.ae_epochs,
                lr=settings.ae_lr,
                batch_size=settings.ae_batch,
                weight_decay=settings.ae_weight_decay,
                seed=seed,
                device=device,
                progress=progress,
            )
            scorers[name] = (ae.score, None)
        info[name] = {
            "n_fit": len(X),
            **({"solver": settings.ocsvm_solver} if name == "ocsvm" else {}),
            **(
                {STEPS_KEY: epoch_steps(len(X), settings.ae_epochs, settings.ae_batch)}
                if name not in ("1nn", "kmeans", "ocsvm")
                else {}
            ),
            "fit_seconds": time.perf_counter() - t0,
            "score_seconds": 0.0,
        }
    return scorers, info


def score_feature_baselines(
    model: StudentTeacher,
    test_imgs: torch.Tensor,
    scorers: dict[str, tuple[Callable[..., np.ndarray], int | None]],
    info: dict[str, dict],
    settings: FeatureBaselineSettings,
    device: torch.device,
    progress: bool,
) -> dict[str, list[np.ndarray]]:
    """Score every pixel of every test image with each method: {name: [(h, w) float32 maps]} at
    the network resolution; adds the scoring time to ``info[name]["score_seconds"]``."""
    small: dict[str, list[np.ndarray]] = {m: [] for m in scorers}
    h, w = test_imgs.shape[-2:]
    batch_size = settings.inference_batch_size
    for start in tqdm(
        range(0, len(test_imgs), batch_size), desc="baseline maps", disable=not progress
    ):
        feats = model.targets(test_imgs[start : start + batch_size].to(device))
        for offset, f in enumerate(feats):
            desc = f.permute(1, 2, 0).reshape(-1, f.shape[0]).cpu().numpy()
            for name, (fn, rows) in scorers.items():
                if name == "vae":
                    fn = functools.partial(fn, seed=derive_seed(settings.seed, start + offset))
                t0 = time.perf_counter()
                s = _score_descriptors(fn, desc, rows)
                info[name]["score_seconds"] += time.perf_counter() - t0
                small[name].append(s.reshape(h, w).astype(np.float32))
    return small


def raw_nn_maps(
    train_imgs: torch.Tensor,
    test_imgs: torch.Tensor,
    settings: FeatureBaselineSettings,
    device: torch.device,
) -> tuple[list[np.ndarray], dict]:
    """The ``raw_nn`` floor's (h, w) maps of ``test_imgs`` at the network resolution, computed on
    ``device``, and its record ``{"n_fit" (bank size), "patch", "grid", "stride", "padding",
    "fit_seconds", "score_seconds"}``."""
    raw = settings.raw_settings()
    t0 = time.perf_counter()
    bank = sample_bank(train_imgs.to(device), raw)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps = [score_image(img.to(device), bank, raw) for img in test_imgs]
    info = {
        "n_fit": len(bank),
        "patch": raw.patch,
        "grid": raw.cells(),
        "stride": raw.stride,
        "padding": raw.padding,
        "fit_seconds": fit_seconds,
        "score_seconds": time.perf_counter() - t0,
    }
    return maps, info


def _check_feature_settings(
    methods: Sequence[str], settings: FeatureBaselineSettings, has_teacher: bool
) -> None:
    """ValueError for an unknown OC-SVM solver, bad ``raw_*`` settings (``raw_nn`` only) or a
    teacher method without a teacher."""
    from ust.baselines.shallow import OCSVM_SOLVERS

    if settings.ocsvm_solver not in OCSVM_SOLVERS:
        raise ValueError(f"unknown OC-SVM solver {settings.ocsvm_solver!r}; use {OCSVM_SOLVERS}")
    if "raw_nn" in methods:
        settings.raw_settings().check()
        if settings.raw_patch > settings.image_size:
            raise ValueError(
                f"raw_nn: patch {settings.raw_patch} is larger than image_size "
                f"{settings.image_size}"
            )
    needs = [m for m in methods if m in BASELINE_METHODS]
    if needs and not has_teacher:
        raise ValueError(f"baseline(s) {needs} need a teacher; got teacher=None")


def run_feature_baselines(
    data_root: str | os.PathLike,
    category: str,
    teacher: PatchNet | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    settings: FeatureBaselineSettings = FeatureBaselineSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, dict]:
    """Feature-distribution baselines of [P] Table 2 on the teacher's dense descriptors, and the
    raw-pixel floor ``raw_nn``.

    The teacher (p = 65 in the paper) describes every pixel of the training part of ``train/good``
    (the same seeded 90 % split as the students); descriptors are normalised per dimension by their
    mean/std over all training pixels, exactly as the students' targets. Fitting uses seeded random
    subsets of pixels: ``n_1nn`` (5000) vectors as the 1-NN dictionary and ``n_fit`` (50 000) for
    K-Means and OC-SVM and for the ℓ2-AE / VAE (the paper's "all descriptors" in batches of 512 is
    read as this subset, a reproduction choice; see ``docs/decisions.md``). Shallow models reduce
    with PCA (95 % variance) first; the autoencoders see the raw normalised 128-d vectors. Every
    pixel of a test image's (image_size²) descriptor map is scored: by the shallow models in chunks
    of ``chunk_size`` rows, by the autoencoders one image per call (they batch internally; the VAE's
    5 posterior samples are seeded per image, so results do not depend on any chunking).
    ``raw_nn`` (not in the paper, no teacher) scores each pixel of the same image_size² images by
    the distance of its raw colour patch to the nearest of ``raw_bank`` training patches
    (:mod:`ust.baselines.raw_patches`). Every map is upsampled bilinearly to the original size and
    evaluated like the students' maps.

    Args:
        teacher: a :class:`PatchNet` (copied, never modified), a teacher file, or ``None`` when
            ``methods`` is only ``raw_nn`` (a given teacher is then not used).
        settings: see :class:`FeatureBaselineSettings`.

    Returns:
        ``{method: {"au_pro", "pixel_auroc", "image_auroc", "n_fit", "fit_seconds",
        "score_seconds", ...}}`` in the order of ``methods``, also written to
        ``<out_dir>/baselines.json``.
    """
    methods = check_methods(settings.methods)
    _check_feature_settings(methods, settings, teacher is not None)
    index = validate_category(data_root, category)
    device = torch.device(device)
    train_paths, _ = index.split(settings.val_fraction, settings.seed)
    size = settings.image_size
    train_imgs = load_images(train_paths, size, desc="train images", progress=progress)
    test_paths = [s.path for s in index.test]
    test_imgs = load_images(test_paths, size, desc="test images", progress=progress)

    small, info = {}, {}
    feature_methods = [m for m in methods if m in BASELINE_METHODS]
    if feature_methods:
        small, info = teacher_baseline_maps(
            teacher, train_imgs, test_imgs, feature_methods, settings, device, progress
        )
    if "raw_nn" in methods:
        small["raw_nn"], info["raw_nn"] = raw_nn_maps(train_imgs, test_imgs, settings, device)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in methods:
        maps = [upsample_map(m, s.size) for m, s in zip(small[name], index.test)]
        results[name] = {**_evaluate_maps(index, maps, out, name, settings), **info[name]}
    write_json(results, out / "baselines.json", sort_keys=False)
    return results


def teacher_baseline_maps(
    teacher: PatchNet | str | os.PathLike,
    train_imgs: torch.Tensor,
    test_imgs: torch.Tensor,
    methods: Sequence[str],
    settings: FeatureBaselineSettings,
    device: torch.device,
    progress: bool,
) -> tuple[dict[str, list[np.ndarray]], dict[str, dict]]:
    """Fit the teacher-descriptor ``methods`` on ``train_imgs`` and score ``test_imgs``: ({name:
    [(h, w) maps]}, {name: record}) as :func:`fit_feature_baselines` and
    :func:`score_feature_baselines`, after fitting the descriptors' μ/σ on ``train_imgs``."""
    model = _teacher_only(resolve_teacher(teacher, device), device)
    batch_size = settings.inference_batch_size
    fit_target_statistics(model, train_imgs, batch_size=batch_size, progress=progress)
    scorers, info = fit_feature_baselines(model, train_imgs, methods, settings, device, progress)
    small = score_feature_baselines(model, test_imgs, scorers, info, settings, device, progress)
    return small, info


def _evaluate_maps(
    index: CategoryIndex, maps: Sequence[np.ndarray], out: Path, name: str, settings
) -> dict[str, float]:
    """The protocol's metrics of a baseline's test ``maps`` (original sizes, in ``index.test``
    order), written to ``<out>/maps_<name>`` first when ``settings.save_maps``."""
    if settings.save_maps:
        save_maps(out, f"maps_{name}", index.category, index.test, maps)
    method = PrecomputedMaps(index.test, maps)
    result = evaluate(method, index, None, EvaluationSettings(settings.integration_limit))
    return {k: result[k] for k in METRIC_KEYS}


@dataclass(frozen=True)
class SSIMAEBaselineSettings:
    """Settings of :func:`run_ssim_ae_baseline` (defaults: the thesis,
    docs/decisions.md#ssim-ae-protocol).

    Attributes:
        image_size: side the grayscale images are zoomed to.
        patch: texture patch side, default 128 or ``image_size`` if smaller; must be 128 or 256
            (the only input sizes of the architecture). Objects use the whole image
            (``image_size``, also 128 or 256).
        stride: step between evaluated texture patches in pixels (thesis ch. 3: 30).
        autoencoder: an :class:`ust.baselines.ssim_ae.SSIMAEConfig` (copied; ``None`` = its
            defaults); its input size, channels, protocol, flips, seed and progress are set by the
            run (its ``max_rotation``/``max_translation`` are the objects' augmentation ranges).
        texture_categories: categories trained on random crops and evaluated patch-wise; every
            other category is an object: augmented whole images, evaluated whole.
        hflip_categories, vflip_categories: objects also mirrored left-right / top-bottom.
        object_latent_dim: latent size d of the whole-image (object) autoencoder (thesis ch. 4:
            128); textures keep ``autoencoder.latent_dim``.
        val_fraction, seed: the seeded training split, as for the students.
        integration_limit: FPR limit of AU-PRO.
        save_maps: also write ``<out_dir>/maps_ssim_ae/<category>/test/<defect>/<id>.tiff``.
    """

    image_size: int = 256
    patch: int | None = None
    stride: int = 30
    autoencoder: SSIMAEConfig | None = None
    texture_categories: tuple[str, ...] = MVTEC_TEXTURES
    hflip_categories: tuple[str, ...] = MVTEC_HFLIP
    vflip_categories: tuple[str, ...] = MVTEC_VFLIP
    object_latent_dim: int = 128
    val_fraction: float = 0.1
    seed: int = 0
    integration_limit: float = 0.3
    save_maps: bool = False

    def autoencoder_config(self, category: str, *, progress: bool) -> SSIMAEConfig:
        """The :class:`ust.baselines.ssim_ae.SSIMAEConfig` of ``category``: crops of
        :meth:`patch_size` for a texture; for an object, whole ``image_size`` images with the
        category's flips and d = ``object_latent_dim``."""
        from ust.baselines.ssim_ae import SSIMAEConfig

        cfg = copy.deepcopy(self.autoencoder) if self.autoencoder is not None else SSIMAEConfig()
        cfg.in_channels, cfg.seed, cfg.progress = 1, self.seed, progress
        if category in self.texture_categories:
            cfg.protocol, cfg.input_size = "crops", self.patch_size()
            cfg.hflip = cfg.vflip = False  # crops are not augmented
            return cfg
        if self.image_size not in (128, 256):
            raise ValueError(
                f"SSIM-AE on object {category!r} takes whole images: image_size must be 128 or 256, "
                f"got {self.image_size}"
            )
        cfg.protocol, cfg.input_size = "whole", self.image_size
        cfg.latent_dim = self.object_latent_dim
        cfg.hflip = category in self.hflip_categories
        cfg.vflip = category in self.vflip_categories
        return cfg

    def patch_size(self) -> int:
        """The texture patch side (checked: 128 or 256 and ≤ ``image_size``)."""
        patch = min(128, self.image_size) if self.patch is None else int(self.patch)
        if patch not in (128, 256) or patch > self.image_size:
            raise ValueError(
                f"SSIM-AE patch must be 128 or 256 and ≤ image_size={self.image_size}, got {patch}"
            )
        return patch


def _ssim_ae_maps(
    model: SSIMAE,
    test_imgs: torch.Tensor,
    index: CategoryIndex,
    stride: int,
    cfg: SSIMAEConfig,
    progress: bool,
) -> list[np.ndarray]:
    """1 − SSIM maps of (N, 1, S, S) test images, each upsampled to its original (H, W) size:
    patch-wise with ``stride`` for a crop model, one patch = the whole image for a whole-image
    model (its input size is S)."""
    from ust.baselines.ssim_ae import ssim_ae_anomaly_map

    return [
        upsample_map(
            ssim_ae_anomaly_map(model, img, stride=stride, win_size=cfg.win_size, K=cfg.K), s.size
        )
        for img, s in tqdm(
            list(zip(test_imgs, index.test)), desc="SSIM-AE maps", disable=not progress
        )
    ]


def run_ssim_ae_baseline(
    data_root: str | os.PathLike,
    category: str,
    out_dir: str | os.PathLike,
    settings: SSIMAEBaselineSettings = SSIMAEBaselineSettings(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """SSIM-autoencoder baseline ([P] Table 2; docs/decisions.md#ssim-ae-protocol).

    Grayscale images (BT.601 luma) zoomed to ``image_size``². Textures
    (``settings.texture_categories``): the AE (thesis Table 3.1) is trained on random ``patch``²
    crops of the 90 % training split (``settings.autoencoder``, default ch. 3: d = 100, 10 000
    crops, 200 epochs, Adam 2e-4, wd 1e-5, batch 64) and test images are evaluated patch-wise with
    ``stride``, the per-pixel 1 − SSIM averaged over overlapping patches. Objects (every other
    category): the AE takes the whole ``image_size``² image (d = ``object_latent_dim``) and is
    trained on as many randomly rotated, translated and, per ``hflip_categories`` /
    ``vflip_categories``, mirrored copies of the training images; a test image is reconstructed
    whole. Maps are upsampled to the original size. The training state is checkpointed in
    ``out_dir`` after every epoch (a later call resumes).

    Returns:
        ``{"au_pro", "pixel_auroc", "image_auroc", "protocol", "patch", "stride", "latent_dim",
        "augmentation", "train_seconds", "score_seconds"}`` (``augmentation``: rotation,
        translation and flips of the object protocol, ``None`` for textures), also written to
        ``<out_dir>/ssim_ae.json``.
    """
    from ust.baselines.ssim_ae import to_grayscale, train_ssim_ae

    cfg = settings.autoencoder_config(category, progress=progress)
    image_size, seed = settings.image_size, settings.seed
    index = validate_category(data_root, category)
    train_paths, _ = index.split(settings.val_fraction, seed)
    train_imgs = to_grayscale(
        load_images(train_paths, image_size, desc="train images", progress=progress)
    )
    test_imgs = to_grayscale(
        load_images([s.path for s in index.test], image_size, desc="test images", progress=progress)
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, _ = train_ssim_ae(train_imgs, cfg, device=device, checkpoint_dir=out)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps = _ssim_ae_maps(model, test_imgs, index, settings.stride, cfg, progress)
    score_seconds = time.perf_counter() - t0
    whole = cfg.protocol == "whole"
    augmentation = {
        "max_rotation": cfg.max_rotation,
        "max_translation": cfg.max_translation,
        "hflip": cfg.hflip,
        "vflip": cfg.vflip,
    }
    result = {
        **_evaluate_maps(index, maps, out, "ssim_ae", settings),
        "protocol": cfg.protocol,
        "patch": cfg.input_size,
        "stride": None if whole else settings.stride,
        "latent_dim": cfg.latent_dim,
        "augmentation": augmentation if whole else None,
        "train_seconds": train_seconds,
        "score_seconds": score_seconds,
        # one Adam step per batch of the num_patches samples, every epoch (last batch smaller)
        STEPS_KEY: epoch_steps(cfg.num_patches, cfg.epochs, cfg.batch_size),
    }
    write_json(result, out / "ssim_ae.json", sort_keys=False)
    return result
