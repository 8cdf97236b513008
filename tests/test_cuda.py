"""The method on a CUDA GPU: exactness of the dense networks, the bf16 tolerance of the anomaly
maps, teacher and student training, resuming, and the detector's fit / predict / export.

Every test is marked ``cuda`` (``pytest -m cuda`` selects them; benchmarks/gpu_run.sh runs them on a
lent GPU machine) and skips, naming the reason, where CUDA is not available. Unless a test says
otherwise, arithmetic is fp32 (TF32 off) with deterministic cuDNN kernels, so that CUDA results can
be held to the CPU's tolerances.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_networks import patchwise

from ust.method.dense import dense_net
from ust.method.networks import patch_net
from ust.method.students import StudentTeacher, fit_target_statistics, make_students
from ust.train.students import StudentTrainingConfig, train_students

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not CUDA,
        reason="CUDA not available: torch.cuda.is_available() is False on this machine "
        "(run on a GPU machine: benchmarks/gpu_run.sh)",
    ),
]

#: bf16 autocast against fp32 on the fused ẽ + ṽ maps of students whose residual is ~0.1 σ per
#: descriptor dimension (:func:`trained_like`): relative L2 error, and the share of pixels on which
#: the two disagree about exceeding the fp32 map's 99th percentile. Measured with CPU autocast
#: (oneDNN): 0.025 and 0.0015. The error grows as students converge: e and v are differences of
#: descriptors that bf16 holds to 2⁻⁸ (residual 0.05 σ: 0.14; 0.01 σ: the maps are unusable).
BF16_REL_L2 = 0.05
BF16_MASK_DISAGREEMENT = 0.005
#: multiplicative weight noise of :func:`trained_like` (residual ≈ 0.1 σ, e / d ≈ 0.01–0.02)
TRAINED_NOISE = 0.05


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off and deterministic cuDNN kernels for the test; the flags as found afterwards."""
    before = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    ) = before


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|, both on the CPU in float64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max())


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) textures in [0, 1]: blurred noise, so neighbouring pixels correlate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size + 8, size + 8, generator=g)
    x = F.avg_pool2d(x, 5, 1)[..., :size, :size]
    return ((x - x.amin()) / (x.amax() - x.amin())).clamp(0, 1)


# ------------------------------------------------------------------------------ dense networks
@pytest.mark.parametrize("p", [17, 33, 65])
def test_dense_equals_patchwise_on_cuda(p):
    """The dense network equals the patch network at every pixel on the GPU, as on the CPU
    (tests/test_networks.py), and equals the CPU's dense output."""
    torch.manual_seed(p)
    net = patch_net(p).eval()
    x = torch.randn(2, 3, 37, 42)
    with torch.no_grad():
        cpu = dense_net(net)(x)
        gpu_net = copy.deepcopy(net).cuda()
        dense = dense_net(gpu_net)(x.cuda())
        ref = patchwise(gpu_net, x.cuda())
    assert dense.device.type == "cuda" and dense.shape == (2, 128, 37, 42)
    assert rel_diff(dense, ref) <= 1e-4
    assert rel_diff(dense, cpu) <= 1e-4


# --------------------------------------------------------------------------------------- bf16
def trained_like(p: int, device: str, seed: int) -> StudentTeacher:
    """A random teacher (μ/σ fitted) and 3 students that regress its normalised descriptors up to
    a residual of about 0.1 σ per dimension: each is the teacher with its last layer scaled to the
    normalised targets, every weight then perturbed by :data:`TRAINED_NOISE` (relative)."""
    torch.manual_seed(seed)
    teacher = patch_net(p)
    model = StudentTeacher(teacher, make_students(teacher, 3, seed=seed))
    fit_target_statistics(model, smooth_images(2, 48, seed), batch_size=2)
    mean, std = model.target_mean, model.target_std
    t_convs = [m for m in model.teacher.features if isinstance(m, torch.nn.Conv2d)]
    for student in model.students:
        s_convs = [m for m in student.features if isinstance(m, torch.nn.Conv2d)]
        for s_conv, t_conv in zip(s_convs, t_convs, strict=True):
            s_conv.weight.data, s_conv.bias.data = t_conv.weight.clone(), t_conv.bias.clone()
        s_convs[-1].weight.data /= std[:, None, None, None]
        s_convs[-1].bias.data = (s_convs[-1].bias.data - mean) / std
        for q in student.features.parameters():
            q.data *= 1 + TRAINED_NOISE * torch.randn_like(q)
    model.calibrate(smooth_images(2, 48, seed + 1), batch_size=2)
    return model.to(device).eval()


def fused(models: list[StudentTeacher], x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Mean over scales of ẽ + ṽ (float32), optionally under bf16 autocast."""
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        maps = []
        for m in models:
            e, v = m.raw_scores(x)
            s = m.score_stats
            maps.append(((e - s.e_mean) / s.e_std + (v - s.v_mean) / s.v_std).float())
    return torch.stack(maps).mean(0)


def bf16_errors(device: str) -> tuple[float, float]:
    """(relative L2 error, threshold disagreement) of bf16 against fp32 fused maps on ``device``."""
    models = [trained_like(p, device, p) for p in (17, 33, 65)]
    x = smooth_images(2, 64, 7).to(device)
    ref, low = fused(models, x, False), fused(models, x, True)
    rel_l2 = float(torch.linalg.vector_norm(low - ref) / torch.linalg.vector_norm(ref))
    t = torch.quantile(ref.flatten().double(), 0.99).float()
    disagreement = float(((low > t) != (ref > t)).float().mean())
    return rel_l2, disagreement


def test_bf16_maps_within_tolerance():
    """bf16 autocast keeps the fused maps of trained-like students within :data:`BF16_REL_L2`
    (relative L2) of fp32, and changes the 1 % most anomalous pixels on at most
    :data:`BF16_MASK_DISAGREEMENT` of all pixels."""
    rel_l2, disagreement = bf16_errors("cuda")
    assert 0 < rel_l2 <= BF16_REL_L2
    assert disagreement <= BF16_MASK_DISAGREEMENT


# ----------------------------------------------------------------------------------- training
def teacher_steps(device: str, out) -> dict:
    """Two pretraining steps of a small p = 17 teacher on ``device``; the summary."""
    from ust.method.teacher import TeacherConfig
    from ust.train.teacher import pretrain

    config = TeacherConfig(
        patch_size=17,
        d=32,
        images="embedded",
        iterations=2,
        batch_size=8,
        lambda_k=0.0,
        lambda_m=1.0,
        lambda_c=1.0,
        device=device,
        eval_triplets=0,
        log_every=1,
        checkpoint_every=2,
    )
    return pretrain(config, out, progress=False)


def test_one_teacher_step_on_cuda_matches_the_cpu(tmp_path):
    """Two pretraining steps on CUDA: the first step's loss equals the CPU's (same initialisation
    and triplets), the losses are finite, and the teacher file loads back onto the GPU."""
    from ust.method.teacher import load_teacher

    gpu = teacher_steps("cuda", tmp_path / "gpu" / "teacher.pt")
    cpu = teacher_steps("cpu", tmp_path / "cpu" / "teacher.pt")
    assert gpu["device"].startswith("cuda") and gpu["steps"] == 2
    assert np.isfinite(gpu["loss_final"]["loss"])
    first_gpu, first_cpu = gpu["loss_init"]["loss"], cpu["loss_init"]["loss"]
    assert abs(first_gpu - first_cpu) <= 1e-4 * abs(first_cpu)
    net = load_teacher(tmp_path / "gpu" / "teacher.pt", device="cuda")
    assert next(net.parameters()).device.type == "cuda"


def student_model(device: str) -> tuple[StudentTeacher, torch.Tensor]:
    """A p = 33 teacher (d = 16) with 2 students and μ/σ fitted on 4 images of 48² (returned)."""
    torch.manual_seed(0)
    teacher = patch_net(33, d=16)
    model = StudentTeacher(teacher, make_students(teacher, 2, seed=0)).to(device)
    images = smooth_images(4, 48, 3)
    fit_target_statistics(model, images, batch_size=4)
    return model, images


def predictions(model: StudentTeacher, images: torch.Tensor) -> torch.Tensor:
    """The students' predictions (M, B, d, H, W). Outputs, not weights, are compared: Adam's first
    steps move a weight by about lr whatever the size of its gradient, so a gradient within
    rounding of zero may move it either way on two devices while the outputs barely change."""
    with torch.no_grad():
        return model.eval().predictions(images.to(model.target_mean.device))


def test_one_student_epoch_on_cuda_matches_the_cpu():
    """One epoch of two students: the same epoch losses and predictions on CUDA as on the CPU
    (same initialisation and data order)."""
    config = StudentTrainingConfig(epochs=1, batch_size=2)
    gpu, images = student_model("cuda")
    cpu, _ = student_model("cpu")
    h_gpu = train_students(gpu, images, config, progress=False)
    h_cpu = train_students(cpu, images, config, progress=False)
    for a, b in zip(h_gpu, h_cpu, strict=True):
        assert abs(a[0] - b[0]) <= 1e-4 * abs(b[0])
    assert next(gpu.students.parameters()).device.type == "cuda"
    assert rel_diff(predictions(gpu, images), predictions(cpu, images)) <= 1e-3


class _Stop(Exception):
    """Raised after an epoch to simulate an interrupted run."""


def interrupted_and_resumed(device: str, ckpt) -> tuple[StudentTeacher, list, torch.Tensor]:
    """Two epochs, interrupted after the first and resumed by a fresh model from ``ckpt``."""

    def stop(epoch, _losses):
        if epoch == 0:
            raise _Stop

    config = StudentTrainingConfig(epochs=2, batch_size=1)
    first, images = student_model(device)
    with pytest.raises(_Stop):
        train_students(first, images, config, checkpoint=ckpt, on_epoch=stop, progress=False)
    resumed, _ = student_model(device)  # a new process would start from a fresh model
    history = train_students(resumed, images, config, checkpoint=ckpt, progress=False)
    return resumed, history, images


def test_student_training_resumes_on_cuda(tmp_path):
    """A run interrupted after its first epoch and resumed from the checkpoint ends where an
    uninterrupted run ends, up to float rounding (cuDNN is deterministic here, but the backward
    of the overlapping stride-1 max-pools adds atomically on CUDA)."""
    whole, images = student_model("cuda")
    config = StudentTrainingConfig(epochs=2, batch_size=1)
    h_whole = train_students(whole, images, config, checkpoint=tmp_path / "a.ckpt", progress=False)
    resumed, h_resumed, _ = interrupted_and_resumed("cuda", tmp_path / "b.ckpt")
    assert len(h_whole[0]) == 2
    assert np.allclose(h_resumed, h_whole, rtol=1e-4, atol=0)
    assert rel_diff(predictions(resumed, images), predictions(whole, images)) <= 1e-4


# ------------------------------------------------------------------------------------ detector
def fit_detector(device: str, work):
    """A 2-scale detector (p = 17, 33; d = 16) fitted on 10 textures of 40² for one epoch; and 3
    test images of 44²."""
    from ust.detector import Detector, DetectorConfig

    config = DetectorConfig(
        patch_sizes=(17, 33),
        image_size=32,
        students=2,
        training=StudentTrainingConfig(epochs=1, batch_size=2),
        inference_batch_size=4,
    )
    torch.manual_seed(0)
    teachers = {17: patch_net(17, d=16), 33: patch_net(33, d=16)}
    good, test = smooth_images(10, 40, 1), smooth_images(3, 44, 2)
    detector = Detector.fit(good, teachers, config, work_dir=work, device=device, progress=False)
    return detector, test


def exported_maps(detector, test: torch.Tensor, folder) -> dict[str, np.ndarray]:
    """Save ``detector``, load it on the CPU and export it: {format: maps of ``test``}."""
    from ust.detector import Detector
    from ust.detector.export import export_detector, run_exported

    detector.save(folder / "detector.pt")
    loaded = Detector.load(folder / "detector.pt", device="cpu")
    maps = {}
    for fmt in ("onnx", "torchscript"):
        path, _ = export_detector(loaded, folder / f"detector.{fmt}", fmt)
        maps[fmt] = run_exported(path, fmt, test)[0]
    return maps


def test_detector_fit_predict_export_on_cuda(tmp_path):
    """Fit and predict on CUDA equal the same detector's predictions on the CPU; the file loads
    on the CPU and its ONNX and TorchScript exports give the CUDA maps."""
    detector, test = fit_detector("cuda", tmp_path / "work")
    assert detector.device.type == "cuda"
    on_gpu = detector.predict(test)
    assert len(on_gpu) == 3 and on_gpu.maps[0].shape == (44, 44)
    on_cpu = copy.deepcopy(detector).to("cpu").predict(test)
    for a, b in zip(on_gpu.maps, on_cpu.maps, strict=True):
        assert rel_diff(torch.from_numpy(a), torch.from_numpy(b)) <= 1e-4
    ref = np.stack(on_gpu.maps)
    for fmt, maps in exported_maps(detector, test, tmp_path).items():
        assert np.abs(maps - ref).max() <= 1e-3 * np.abs(ref).max(), fmt
