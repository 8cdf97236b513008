"""Border padding of the dense networks and the students' training options for short budgets
(docs/decisions.md#border-padding, docs/decisions.md#student-budget)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ust.method.dense import PADDING_MODES, dense_net
from ust.method.networks import ARCHITECTURES, patch_net
from ust.method.students import StudentTeacher, fit_target_statistics, make_students
from ust.train.students import (
    StudentTrainingConfig,
    learning_rate,
    train_students,
)

# The layer tables of ust.method.networks with 8 channels per layer: the same kernels, pools,
# receptive fields and offsets (everything the padding depends on), at a fraction of the cost.
NARROW = {
    p: [
        (kind, *((8 if i == 0 and kind == "conv" else a) for i, a in enumerate(args)))
        for kind, *args in ARCHITECTURES[p]["default"][:-1]
    ]
    + [ARCHITECTURES[p]["default"][-1]]
    for p in (17, 33, 65)
}


@pytest.fixture
def narrow(monkeypatch):
    """``patch_net(p, d, variant="narrow")``: p's default layer table with 8 channels per layer."""
    for p, layers in NARROW.items():
        monkeypatch.setitem(ARCHITECTURES[p], "narrow", layers)

    def build(p: int, d: int = 4):
        torch.manual_seed(p)
        net = patch_net(p, d, variant="narrow", with_decoder=False).eval()
        assert (net.rf, net.offset) == (patch_net(p).rf, patch_net(p).offset)
        return net

    return build


def padded_patchwise(net, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Reference: the image padded by (p−1)//2 top/left and p−1−(p−1)//2 bottom/right in ``mode``
    (``zero``: zeros), then the patch network on the p×p patch centred on every pixel."""
    p = net.p
    top = (p - 1) // 2
    widths = (top, p - 1 - top, top, p - 1 - top)
    xp = F.pad(x, widths) if mode == "zero" else F.pad(x, widths, mode=mode)
    b, _, h, w = x.shape
    wins = xp.unfold(2, p, 1).unfold(3, p, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, p, p)
    out = torch.cat([net(part) for part in wins.split(256)])
    return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("p", [17, 33, 65])
def test_dense_equals_patch_network_on_padded_image(narrow, p, mode):
    """Every output pixel is the patch network on its patch of the image padded in ``mode``."""
    net = narrow(p)
    size = (33, 35) if p == 65 else (19, 22)  # reflect mirrors up to (p − 1)//2 < side pixels
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        dense = dense_net(net, padding_mode=mode)(x)
        ref = padded_patchwise(net, x, mode)
    assert dense.shape == ref.shape == (1, 4, *size)
    assert (dense - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_padding_modes_differ_only_near_the_border(narrow, mode):
    net = narrow(33)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        zero = dense_net(net)(x)
        other = dense_net(net, padding_mode=mode)(x)
    before, after = net.rf // 2, net.rf - 1 - net.rf // 2  # 16, 15: the field's reach
    inner = (slice(before, 40 - after),) * 2
    torch.testing.assert_close(zero[..., inner[0], inner[1]], other[..., inner[0], inner[1]])
    assert not torch.allclose(zero[..., :before, :], other[..., :before, :])
    assert not torch.allclose(zero, other)


def test_full_width_network_and_gradients_with_reflect_padding():
    """The real p = 17 network (128 channels), float32, forward and input gradients."""
    torch.manual_seed(0)
    net = patch_net(17, 8, with_decoder=False).eval()
    x = torch.randn(1, 3, 12, 13, requires_grad=True)
    dense = dense_net(net, padding_mode="reflect")(x)
    ref = padded_patchwise(net, x, "reflect")
    assert (dense - ref).abs().max() <= 1e-4 * ref.abs().max()
    (g_dense,) = torch.autograd.grad(dense.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert (g_dense - g_ref).abs().max() <= 1e-3 * g_ref.abs().max()


def test_padding_mode_errors():
    net = patch_net(65, 4, with_decoder=False)
    with pytest.raises(ValueError, match="unknown padding mode"):
        dense_net(net, padding_mode="circular")
    with pytest.raises(ValueError, match="reflect padding"):
        dense_net(net, padding_mode="reflect")(torch.zeros(1, 3, 30, 40))
    assert dense_net(net, padding_mode="replicate")(torch.zeros(1, 3, 5, 7)).shape == (1, 4, 5, 7)
    assert dense_net(net).field_padding() == (30, 29, 30, 29)


# ---- student training options: padding and the learning-rate schedule ----


def tiny_model(padding: str = "zero", m: int = 2) -> tuple[StudentTeacher, torch.Tensor]:
    """Two students of the narrow p = 17 table (use with the ``narrow`` fixture)."""
    torch.manual_seed(0)
    teacher = patch_net(17, 4, variant="narrow", with_decoder=False)
    model = StudentTeacher(teacher, make_students(teacher, m, seed=0))
    images = torch.rand(3, 3, 20, 20)
    model.padding = padding
    fit_target_statistics(model, images)
    return model, images


def test_default_config_is_the_papers():
    cfg = StudentTrainingConfig()
    assert (cfg.schedule, cfg.padding, cfg.lr) == ("constant", "zero", 1e-4)
    with pytest.raises(ValueError, match="unknown schedule"):
        StudentTrainingConfig(schedule="cosine")
    with pytest.raises(ValueError, match="unknown padding"):
        StudentTrainingConfig(padding="mirror")


def test_explicit_defaults_train_identical_weights(narrow):
    """The new fields at their defaults leave training bit-identical."""
    states = []
    for cfg in (
        StudentTrainingConfig(epochs=2, lr=1e-3),
        StudentTrainingConfig(epochs=2, lr=1e-3, schedule="constant", padding="zero", warmup=0.3),
    ):
        model, images = tiny_model()
        train_students(model, images, cfg, progress=False)
        states.append(model.students.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])


def test_warmup_cosine_learning_rates():
    cfg = StudentTrainingConfig(lr=1e-3, schedule="warmup_cosine", warmup=0.1)
    rates = [learning_rate(cfg, k, 100) for k in range(1, 101)]
    assert rates[:10] == pytest.approx([1e-3 * k / 10 for k in range(1, 11)])
    assert rates[10] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 91)))
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # decays after the warm-up
    assert 0 < rates[-1] < 1e-6
    assert learning_rate(cfg, 500, 100) == rates[-1]
    assert learning_rate(StudentTrainingConfig(lr=3e-4), 7, 100) == 3e-4
    one = StudentTrainingConfig(lr=1e-3, schedule="warmup_cosine", warmup=0.0)
    assert learning_rate(one, 1, 1) == 1e-3


def test_schedule_sets_the_optimiser_rate_and_resumes_exactly(narrow, tmp_path):
    cfg = StudentTrainingConfig(epochs=3, lr=1e-3, schedule="warmup_cosine", warmup=0.2)
    model, images = tiny_model()
    seen = []
    train_students(model, images, cfg, progress=False)
    full = model.students.state_dict()
    constant, images = tiny_model()
    train_students(constant, images, StudentTrainingConfig(epochs=3, lr=1e-3), progress=False)
    assert not torch.equal(
        constant.students[0].features[0].weight, model.students[0].features[0].weight
    )

    # interrupted after the first epoch, resumed from the checkpoint: the same weights
    model, images = tiny_model()
    ckpt = tmp_path / "students.ckpt"

    def stop(epoch, losses):
        seen.append(epoch)
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_students(model, images, cfg, checkpoint=ckpt, progress=False, on_epoch=stop)
    model, images = tiny_model()
    train_students(model, images, cfg, checkpoint=ckpt, progress=False)
    for k, v in full.items():
        torch.testing.assert_close(model.students.state_dict()[k], v, rtol=0, atol=0)
    assert seen == [0]


def test_training_padding_is_applied_and_kept_for_scoring(narrow):
    model, images = tiny_model()
    before = model.target_mean.clone()
    cfg = StudentTrainingConfig(epochs=1, padding="reflect")
    train_students(model, images, cfg, progress=False)
    assert model.padding == "reflect"
    assert all(s.padding_mode == "reflect" for s in model._s)
    # the target statistics were refitted on the reflect-padded teacher descriptors
    assert not torch.equal(model.target_mean, before)
    reference, _ = tiny_model("reflect")
    torch.testing.assert_close(model.target_mean, reference.target_mean)
    # the same as training a model that was built with reflect padding from the start
    built, images = tiny_model("reflect")
    train_students(built, images, cfg, progress=False)
    for k, v in built.students.state_dict().items():
        torch.testing.assert_close(model.students.state_dict()[k], v, rtol=0, atol=0)
