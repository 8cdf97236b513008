"""Batched student ensembles (grouped convolutions), valid-mode dense evaluation and batched /
random-crop student training."""

import copy

import pytest
import torch
import torch.distributed as dist

from ust.method.dense import dense_net
from ust.method.ensemble import StudentEnsemble
from ust.method.networks import patch_net
from ust.method.students import (
    StudentTeacher,
    fit_target_statistics,
    make_students,
    student_loss,
)
from ust.train import distributed as ddp
from ust.train.students import (
    StudentTrainingConfig,
    crop_windows,
    train_students,
    train_students_for,
)

# Grouped and separate convolutions sum in different orders: equal up to float rounding.
TOL = {"atol": 1e-5, "rtol": 1e-4}


def assert_same_training(a_params, b_params, init_params, lr):
    """Weights trained by the same Adam steps, equal up to rounding. Adam's step is about
    lr·g/(|g| + ε): for a gradient component near 0 a rounding difference becomes a visible one (a
    fraction of lr) and the nets then drift apart slowly. So: no weight differs by more than 2·lr
    (observed ≤ 0.5·lr after 3 steps) and the mean difference is < 0.1 % of the mean distance the
    weights moved (observed ~0.002 %)."""
    a, b, a0 = (
        torch.cat([q.detach().flatten() for q in ps]) for ps in (a_params, b_params, init_params)
    )
    d = (a - b).abs()
    assert float(d.max()) <= 2 * lr, float(d.max())
    assert float(d.mean()) <= 1e-3 * float((a - a0).abs().mean())


def small_model(m=3, p=17, d=8, dense=True, seed=0):
    torch.manual_seed(123)
    teacher = patch_net(p, d=d)
    return StudentTeacher(teacher, make_students(teacher, m, seed=seed), dense=dense)


@pytest.mark.parametrize("p", [17, 33, 65])
def test_ensemble_forward_equals_separate_students(p):
    students = make_students(patch_net(p, d=8), 3, seed=p)
    ens = StudentEnsemble.from_students(students)
    assert (ens.m, ens.p, ens.d, ens.rf) == (3, p, 8, students[0].rf)
    patches = torch.randn(5, 3, p, p)
    image = torch.randn(2, 3, p + 5, p + 2)
    with torch.no_grad():
        torch.testing.assert_close(ens(patches), torch.stack([s(patches) for s in students], 1))
        dense = dense_net(ens)(image)
        assert dense.shape == (2, 3 * 8, p + 5, p + 2)
        ref = torch.stack([dense_net(s)(image) for s in students], 1)
        torch.testing.assert_close(ens.split(dense), ref, **TOL)
        valid = ens.split(dense_net(ens)(image, valid=True))
        ref = torch.stack([dense_net(s)(image, valid=True) for s in students], 1)
        torch.testing.assert_close(valid, ref, **TOL)


def test_ensemble_weights_round_trip_and_validation():
    students = make_students(patch_net(33, d=8, act_on_descriptor=True), 2, seed=1)
    state = torch.random.get_rng_state()
    ens = StudentEnsemble.from_students(students)
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing was randomly initialised
    # The first convolution reads the shared input, later ones are grouped; the descriptor keeps
    # its activation when the students have one.
    convs = [m for m in ens.features if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].groups == 1 and convs[0].out_channels == 2 * 128
    assert all(c.groups == 2 for c in convs[1:])
    assert isinstance(ens.features[-1], torch.nn.LeakyReLU)
    fresh = make_students(patch_net(33, d=8, act_on_descriptor=True), 2, seed=9)
    ens.write_students(fresh)
    for a, b in zip(students.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        convs[1].weight.add_(1.0)  # student 1's slice changes student 1 only
    ens.write_students(fresh)
    assert torch.equal(fresh[0].features[3].weight, students[0].features[3].weight + 1)
    assert torch.equal(fresh[1].features[3].weight, students[1].features[3].weight + 1)
    assert torch.equal(fresh[0].features[0].weight, students[0].features[0].weight)
    with pytest.raises(ValueError, match="M=2"):
        ens.write_students(fresh[:1])
    with pytest.raises(ValueError, match="differs"):
        ens.load_students(make_students(patch_net(33, d=16), 2))
    with pytest.raises(ValueError, match="at least one"):
        StudentEnsemble.from_students([])
    with pytest.raises(ValueError, match=r"\(B, 3, 33, 33\)"):
        ens(torch.zeros(1, 3, 20, 20))


@pytest.mark.parametrize("p", [17, 33, 65])
def test_valid_mode_is_the_interior_of_the_dense_output(p):
    torch.manual_seed(p)
    net = dense_net(patch_net(p, d=8))
    rf, top = net.patch.rf, net.pad_top
    for h, w in [(rf, rf + 3), (rf + 9, rf + 16)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            full, valid = net(x), net(x, valid=True)
        assert valid.shape == (2, 8, h - rf + 1, w - rf + 1)
        torch.testing.assert_close(
            valid, full[:, :, top : top + h - rf + 1, top : top + w - rf + 1]
        )
    with pytest.raises(ValueError, match="at least rf"):
        net(torch.zeros(1, 3, rf - 1, rf + 4), valid=True)


@pytest.mark.parametrize("p", [17, 33])
def test_crop_windows_match_full_image_targets(p):
    net = dense_net(patch_net(p, d=8))
    rf, top, crop = net.patch.rf, net.pad_top, 4
    x = torch.rand(2, 3, rf + 9, rf + 7)
    corners = torch.tensor([[0, 0], [9 - crop + 1, 7 - crop + 1]])  # extreme positions
    with torch.no_grad():
        full = net(x)
        windows, targets = crop_windows(x, full, corners, crop, rf, top)
        assert windows.shape == (2, 3, crop + rf - 1, crop + rf - 1)
        torch.testing.assert_close(net(windows, valid=True), targets)


def _separate_and_batched_steps(p, steps=3):
    """Students trained separately (own Adam) and as one ensemble (one Adam) on the same batches."""
    teacher = patch_net(p, d=8)
    students = make_students(teacher, 3, seed=4)
    twins = copy.deepcopy(students)
    ens = StudentEnsemble.from_students(twins)
    adam = dict(lr=1e-3, weight_decay=1e-2)
    opts = [torch.optim.Adam(s.parameters(), **adam) for s in students]
    opt = torch.optim.Adam(ens.parameters(), **adam)
    gen = torch.Generator().manual_seed(0)
    size = teacher.rf + 6
    for _ in range(steps):
        x = torch.rand(2, 3, size, size, generator=gen)
        target = torch.randn(2, 8, size, size, generator=gen)
        for s, o in zip(students, opts, strict=True):
            o.zero_grad()
            student_loss(dense_net(s)(x), target).backward()
            o.step()
        pred = ens.split(dense_net(ens)(x))
        opt.zero_grad()
        sum(student_loss(pred[:, i], target) for i in range(3)).backward()
        opt.step()
    ens.write_students(twins)
    return students, twins


@pytest.mark.parametrize("p", [17, 33])
def test_batched_adam_steps_equal_separate_students(p):
    students, twins = _separate_and_batched_steps(p)
    init = make_students(patch_net(p, d=8), 3, seed=4)
    assert_same_training(students.parameters(), twins.parameters(), init.parameters(), lr=1e-3)


def _trained(config, m=3, **kw):
    model = small_model(m=m)
    images = torch.rand(4, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    fit_target_statistics(model, images)
    history = train_students(model, images, config, progress=False, **kw)
    return model, history


@pytest.mark.parametrize("crop", [None, 3])
def test_batched_training_equals_separate_given_the_same_batches(crop):
    # batch = all images: every student of the separate run sees the batched run's batches
    init = small_model()
    full = StudentTrainingConfig(epochs=3, batch_size=4, lr=1e-3, seed=2, crop=crop)
    sep, h_sep = _trained(full)
    bat, h_bat = _trained(StudentTrainingConfig(**{**full.__dict__, "batched": True}))
    if crop is None:  # with crops the separate students draw their own windows
        assert_same_training(*(m.students.parameters() for m in (sep, bat, init)), lr=1e-3)
        torch.testing.assert_close(h_bat, h_sep, **TOL)
    # smaller batches: batched student 0 shares separate student 0's order (and crops)
    half = StudentTrainingConfig(epochs=3, batch_size=2, lr=1e-3, seed=2, crop=crop)
    sep, _ = _trained(half)
    bat, _ = _trained(StudentTrainingConfig(**{**half.__dict__, "batched": True}))
    assert_same_training(*(m.students[0].parameters() for m in (sep, bat, init)), lr=1e-3)
    assert not torch.equal(sep.students[1].features[0].weight, bat.students[1].features[0].weight)


def test_batched_vector_mode_equals_separate():
    images = torch.rand(6, 3, 17, 17, generator=torch.Generator().manual_seed(2))
    cfg = StudentTrainingConfig(epochs=2, batch_size=6, lr=1e-3)
    models = []
    init = small_model(m=2, dense=False).students.parameters()
    for batched in (False, True):
        model = small_model(m=2, dense=False)
        fit_target_statistics(model, images)
        cfg_b = StudentTrainingConfig(**{**cfg.__dict__, "batched": batched})
        train_students(model, images, cfg_b, progress=False)
        models.append(model)
    assert_same_training(*(m.students.parameters() for m in models), init, lr=1e-3)


@pytest.mark.parametrize("batched,crop", [(True, None), (True, 3), (False, 3)])
def test_checkpoint_resume_is_exact(tmp_path, batched, crop):
    cfg = StudentTrainingConfig(epochs=3, batch_size=2, lr=1e-3, seed=3, batched=batched, crop=crop)
    full, h_full = _trained(cfg)
    ckpt = tmp_path / "students.ckpt"
    _trained(StudentTrainingConfig(**{**cfg.__dict__, "epochs": 1}), checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert len(state["optimizers"]) == (1 if batched else 3)
    state["config"]["epochs"] = 3  # resume the "interrupted" run as the 3-epoch run
    torch.save(state, ckpt)
    resumed, h_resumed = _trained(cfg, checkpoint=ckpt)
    assert h_resumed == h_full
    for a, b in zip(full.students.parameters(), resumed.students.parameters(), strict=True):
        assert torch.equal(a, b)


def test_crop_training_lowers_the_loss():
    ramp = torch.linspace(0, 1, 28).view(1, 1, 1, 28).expand(6, 3, 28, 28)
    noise = torch.rand(6, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    images = (0.5 * ramp + 0.05 * noise).clamp(0, 1)
    for batched in (False, True):
        model = small_model(m=2)
        fit_target_statistics(model, images)
        cfg = StudentTrainingConfig(
            epochs=12, batch_size=3, lr=3e-3, weight_decay=0.0, crop=4, batched=batched
        )
        history = train_students(model, images, cfg, progress=False)
        assert all(h[-1] < 0.5 * h[0] for h in history), history


def test_crop_is_validated():
    model = small_model(m=1)
    images = torch.rand(2, 3, 20, 20)
    fit_target_statistics(model, images)
    with pytest.raises(ValueError, match=r"crop=5 must lie in \[1, 4\]"):
        train_students(model, images, StudentTrainingConfig(epochs=1, crop=5), progress=False)
    vector = small_model(m=1, dense=False)
    with pytest.raises(ValueError, match="dense model"):
        train_students(vector, torch.rand(2, 3, 17, 17), StudentTrainingConfig(crop=1))


def test_old_checkpoint_without_new_fields_resumes(tmp_path):
    cfg = StudentTrainingConfig(epochs=2, batch_size=2, lr=1e-3)
    ckpt = tmp_path / "students.ckpt"
    _trained(StudentTrainingConfig(**{**cfg.__dict__, "epochs": 1}), checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    for key in ("batched", "crop", "fused_adam"):
        del state["config"][key]
    state["config"]["epochs"] = 2
    torch.save(state, ckpt)
    _, history = _trained(cfg, checkpoint=ckpt)
    assert len(history[0]) == 2


def test_batched_ddp_one_rank_matches_single_process(tmp_path, monkeypatch):
    """One DDP wrapper around the whole ensemble; with one rank (gloo, in-process) DDP must not
    change the arithmetic."""
    cfg = StudentTrainingConfig(epochs=2, batch_size=2, lr=1e-3, batched=True, crop=3)
    ref, h_ref = _trained(cfg)
    wrapped = []
    wrap = ddp.wrap_ddp
    monkeypatch.setattr(
        ddp, "wrap_ddp", lambda *a, **k: wrapped.append(wrap(*a, **k)) or wrapped[-1]
    )
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        info = ddp.current()
        model, history = _trained(cfg, distributed=info, checkpoint=tmp_path / "s.ckpt")
    finally:
        ddp.cleanup()
    assert [type(w).__name__ for w in wrapped] == ["DistributedDataParallel"]
    assert isinstance(wrapped[0].module.owner, StudentEnsemble)
    assert history == h_ref
    for a, b in zip(ref.students.parameters(), model.students.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fused_adam_equals_default_adam():
    init = small_model()
    cfg = StudentTrainingConfig(epochs=2, batch_size=2, lr=1e-3, weight_decay=1e-2, batched=True)
    plain, _ = _trained(cfg)
    fused, _ = _trained(StudentTrainingConfig(**{**cfg.__dict__, "fused_adam": True}))
    assert_same_training(*(m.students.parameters() for m in (plain, fused, init)), lr=1e-3)


@pytest.mark.parametrize("batched", [False, True])
def test_train_for_a_time_budget(batched):
    model = small_model(m=2)
    before = copy.deepcopy(model.students)
    images = torch.rand(3, 3, 20, 20)
    fit_target_statistics(model, images)
    cfg = StudentTrainingConfig(batch_size=2, lr=1e-3, batched=batched, crop=2)
    done = train_students_for(model, images, cfg, seconds=0.0)  # one step per training unit
    assert done["steps"] == (1 if batched else 2)
    assert done["epochs"] == pytest.approx(2 / 3) and done["loss"] > 0
    for a, b in zip(before, model.students, strict=True):  # batched weights were written back
        assert not torch.equal(a.features[0].weight, b.features[0].weight)
