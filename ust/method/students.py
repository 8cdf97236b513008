"""Student ensembles (paper §3.2): M independently initialised copies of the teacher's architecture that
regress the teacher's d-dimensional descriptors, normalised per dimension by their mean and std over
all training pixels.

The same code serves dense maps (whole images through :func:`ust.method.dense.dense_net`) and the
one-vector-per-image mode of the MNIST/CIFAR experiments (images zoomed to p × p, H = W = 1).
Every method takes images in [0, 1] with 1 or 3 channels; ImageNet normalisation happens here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ust.data.transforms import imagenet_normalize, to_three_channels
from ust.io import atomic_torch_save, torch_load
from ust.method.dense import DenseNet, check_padding_mode, dense_net
from ust.method.networks import NetConfig, PatchNet
from ust.method.scoring import (
    RunningMoments,
    ScoreStats,
    fit_score_stats,
    normalized_score,
    predictive_variance,
    regression_error,
)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (independent streams for students, splits, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def make_students(teacher: PatchNet | NetConfig, m: int, *, seed: int = 0) -> nn.ModuleList:
    """M freshly initialised students with the teacher's architecture and no decoder.

    Student i is initialised from ``derive_seed(seed, i)``, so ensembles are reproducible and no two
    students (nor a student and the teacher) share a module or a parameter.
    """
    if m < 1:
        raise ValueError(f"an ensemble needs at least one student, got M={m}")
    config = teacher.config if isinstance(teacher, PatchNet) else teacher
    config = replace(config, with_decoder=False)
    students = []
    for i in range(m):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, i))
            students.append(PatchNet(config))
    return nn.ModuleList(students)


class StudentTeacher(nn.Module):
    """A frozen teacher, its descriptor statistics (μ, σ) and an ensemble of students.

    ``dense=True``: images (B, C, H, W) of any size give maps (B, d, H, W).
    ``dense=False``: images must be (B, C, p, p) and give (B, d, 1, 1) (one vector per image).
    """

    def __init__(self, teacher: PatchNet, students: nn.ModuleList, *, dense: bool = True):
        super().__init__()
        if teacher.decoder is not None:
            # The decoder is only used for distillation; keep the scoring model lean.
            teacher = _strip_decoder(teacher)
        for s in students:
            if s.config.p != teacher.config.p or s.config.d != teacher.config.d:
                raise ValueError(
                    f"student (p={s.config.p}, d={s.config.d}) does not match the teacher "
                    f"(p={teacher.config.p}, d={teacher.config.d})"
                )
        self.teacher = teacher.requires_grad_(False).eval()
        self.students = students
        self.dense = dense
        d = teacher.config.d
        self.register_buffer("target_mean", torch.zeros(d))
        self.register_buffer("target_std", torch.ones(d))
        # e_mean, e_std, v_mean, v_std on anomaly-free validation pixels (NaN until calibrated):
        # the model owns the normalisation of its scores, so whoever holds it can score an image.
        self.register_buffer("score_moments", torch.full((4,), float("nan"), dtype=torch.float64))
        # Plain attributes (not submodules): the dense wrappers share the patch networks' parameters
        # and must not appear a second time in state_dict().
        object.__setattr__(self, "_t", dense_net(self.teacher) if dense else None)
        object.__setattr__(self, "_s", [dense_net(s) for s in students] if dense else None)

    @property
    def p(self) -> int:
        return self.teacher.config.p

    @property
    def padding(self) -> str:
        """What the dense teacher and students read outside the image
        (:data:`ust.method.dense.PADDING_MODES`, docs/decisions.md#border-padding); ``"zero"`` for
        a vector-mode model. Settable: it switches every dense network of the model at once (the
        target statistics then belong to the old padding until refitted)."""
        return self._t.padding_mode if self.dense else "zero"

    @padding.setter
    def padding(self, mode: str) -> None:
        check_padding_mode(mode)
        if not self.dense:
            if mode != "zero":
                raise ValueError("padding applies to dense models; a vector-mode model reads none")
            return
        for net in (self._t, *self._s):
            net.padding_mode = mode

    @property
    def m(self) -> int:
        return len(self.students)

    @property
    def calibrated(self) -> bool:
        """True once :meth:`calibrate` (or a loaded file) set the e/v statistics."""
        return bool(torch.isfinite(self.score_moments).all())

    @property
    def score_stats(self) -> ScoreStats:
        """The e/v statistics of :meth:`calibrate` (docs/decisions.md#score-normalisation)."""
        if not self.calibrated:
            raise ValueError(
                "this Student-Teacher model has no e/v statistics yet: calibrate it on "
                "anomaly-free validation images first (StudentTeacher.calibrate)"
            )
        return ScoreStats(*(float(x) for x in self.score_moments.tolist()))

    def set_score_stats(self, stats: ScoreStats) -> None:
        """Store ``stats`` (e.g. read from an older file) as the model's e/v statistics."""
        values = [stats.e_mean, stats.e_std, stats.v_mean, stats.v_std]
        self.score_moments.copy_(torch.tensor(values, dtype=torch.float64))

    def calibrate(self, images: torch.Tensor, *, batch_size: int = 8) -> ScoreStats:
        """Fit and store the e/v statistics over all pixels of anomaly-free ``images``
        (N, C, H, W) in [0, 1] (paper Eq. 11); returns them."""
        stats = fit_validation_stats(self, images, batch_size=batch_size)
        self.set_score_stats(stats)
        return stats

    def anomaly_maps(
        self, images: torch.Tensor, *, batch_size: int = 8, progress: bool = False
    ) -> torch.Tensor:
        """Normalised scores ẽ + ṽ of a calibrated model: (N, C, H, W) in [0, 1] → (N, H, W) on
        the CPU, at the network's resolution."""
        return anomaly_scores(
            self, images, self.score_stats, batch_size=batch_size, progress=progress
        )

    def train(self, mode: bool = True) -> StudentTeacher:
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen, always
        return self

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        x = imagenet_normalize(to_three_channels(images.float()))
        if not self.dense and x.shape[-2:] != (self.p, self.p):
            raise ValueError(
                f"vector mode expects images zoomed to {self.p}×{self.p}, got "
                f"{tuple(x.shape[-2:])}; resize them first (ust.data.transforms.resize)"
            )
        return x

    def _run(self, net: PatchNet, dense: DenseNet | None, x: torch.Tensor) -> torch.Tensor:
        return dense(x) if dense is not None else net(x)[:, :, None, None]

    def teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        """Raw teacher descriptors y^T: (B, C, H, W) in [0, 1] → (B, d, H, W)."""
        with torch.no_grad():
            return self._run(self.teacher, self._t, self._prep(images))

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised targets (y^T − μ)/σ: (B, C, H, W) → (B, d, H, W)."""
        return self.normalize_features(self.teacher_features(images))

    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.target_mean[:, None, None]) / self.target_std[:, None, None]

    def student_prediction(self, i: int, images: torch.Tensor) -> torch.Tensor:
        """Prediction of student i: (B, C, H, W) → (B, d, H, W), with gradients."""
        dense = self._s[i] if self._s is not None else None
        return self._run(self.students[i], dense, self._prep(images))

    def predictions(self, images: torch.Tensor) -> torch.Tensor:
        """All students: (B, C, H, W) → (M, B, d, H, W)."""
        x = self._prep(images)
        dense = self._s or [None] * self.m
        return torch.stack([self._run(s, ds, x) for s, ds in zip(self.students, dense)])

    def raw_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Regression error e and predictive variance v, each (B, H, W)."""
        with torch.no_grad():
            preds = self.predictions(images)
            return regression_error(preds, self.targets(images)), predictive_variance(preds)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.raw_scores(images)


def _strip_decoder(teacher: PatchNet) -> PatchNet:
    net = PatchNet(replace(teacher.config, with_decoder=False))
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("decoder.")}
    net.load_state_dict(state)
    return net.to(next(teacher.parameters()).device)


def batch_indices(n: int, batch_size: int, order: torch.Tensor | None = None):
    idx = order if order is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield idx[start : start + batch_size]


def fit_target_statistics(
    model: StudentTeacher, images: torch.Tensor, *, batch_size: int = 8, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (d,) of the teacher's descriptors over all pixels of ``images``
    (N, C, H, W) in [0, 1]; stores them in the model and returns them
    (docs/decisions.md#student-target-normalisation)."""
    if len(images) == 0:
        raise ValueError("no training images: descriptor statistics need at least one image")
    device = model.target_mean.device
    moments = RunningMoments(dim=1)
    for idx in tqdm(
        list(batch_indices(len(images), batch_size)), desc="teacher stats", disable=not progress
    ):
        moments.update(model.teacher_features(images[idx].to(device)))
    mean, std = moments.mean.float(), moments.std.float().clamp_min(1e-6)
    model.target_mean.copy_(mean)
    model.target_std.copy_(std)
    return mean.cpu(), std.cpu()


def student_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images and positions of ‖μ^S − ỹ‖² (paper Eq. 7): (B, d, H, W) × 2 → scalar."""
    return (prediction - target).pow(2).sum(1).mean()


def fit_validation_stats(
    model: StudentTeacher, images: torch.Tensor, *, batch_size: int = 8
) -> ScoreStats:
    """e/v statistics over all pixels of anomaly-free validation ``images``
    (docs/decisions.md#score-normalisation)."""
    device = model.target_mean.device
    model.eval()
    return fit_score_stats(
        model.raw_scores(images[idx].to(device)) for idx in batch_indices(len(images), batch_size)
    )


def anomaly_scores(
    model: StudentTeacher,
    images: torch.Tensor,
    stats: ScoreStats,
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> torch.Tensor:
    """Normalised scores ẽ + ṽ for ``images`` (N, C, H, W) → (N, H, W) on the CPU."""
    device = model.target_mean.device
    model.eval()
    out = []
    for idx in tqdm(
        list(batch_indices(len(images), batch_size)), desc="scoring", disable=not progress
    ):
        e, v = model.raw_scores(images[idx].to(device))
        out.append(normalized_score(e, v, stats).cpu())
    return torch.cat(out)


def save_ensemble(model: StudentTeacher, path: str | os.PathLike, **extra) -> None:
    """Write teacher, students, target statistics and ``extra`` metadata to one file, atomically."""
    atomic_torch_save(
        {
            "teacher_config": asdict(model.teacher.config),
            "teacher": model.teacher.state_dict(),
            "students": model.students.state_dict(),
            "m": model.m,
            "dense": model.dense,
            "padding": model.padding,
            "target_mean": model.target_mean.cpu(),
            "target_std": model.target_std.cpu(),
            **({"score_stats": model.score_stats.to_dict()} if model.calibrated else {}),
            **extra,
        },
        Path(path),
    )


def load_ensemble(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[StudentTeacher, dict]:
    """Inverse of :func:`save_ensemble`; returns the model (calibrated when the file holds e/v
    statistics) and the stored metadata dict. An unreadable file raises
    :class:`ust.io.CorruptFileError` naming it."""
    state = torch_load(path)
    teacher = PatchNet(NetConfig(**state["teacher_config"]))
    teacher.load_state_dict(state["teacher"])
    model = StudentTeacher(teacher, make_students(teacher, state["m"]), dense=state["dense"])
    model.students.load_state_dict(state["students"])
    model.padding = state.get("padding", "zero")  # files written before padding modes: zero
    model.target_mean.copy_(state["target_mean"])
    model.target_std.copy_(state["target_std"])
    if state.get("score_stats"):
        model.set_score_stats(ScoreStats(**state["score_stats"]))
    return model.to(device).eval(), state
