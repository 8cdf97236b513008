"""Student ensembles, target normalisation, e/v scores, validation normalisation, fusion (paper §3.2-3.3)."""

import pytest
import torch

from ust.method.dense import dense_net
from ust.method.networks import patch_net
from ust.method.scoring import (
    RunningMoments,
    ScoreStats,
    fit_score_stats,
    fuse_multiscale,
    normalized_score,
    predictive_variance,
    regression_error,
)
from ust.method.students import (
    StudentTeacher,
    anomaly_scores,
    fit_target_statistics,
    fit_validation_stats,
    load_ensemble,
    make_students,
    save_ensemble,
)
from ust.train.students import StudentTrainingConfig, train_students


def small_model(m=3, dense=True, seed=0):
    torch.manual_seed(123)
    teacher = patch_net(17, d=8)
    return StudentTeacher(teacher, make_students(teacher, m, seed=seed), dense=dense)


def test_students_share_nothing_with_teacher_or_each_other():
    teacher = patch_net(33, d=16)
    model = StudentTeacher(teacher, make_students(teacher, 4))
    groups = [model.teacher, *model.students]
    ptrs = [{q.data_ptr() for q in g.parameters()} for g in groups]
    mods = [{id(m) for m in g.modules()} for g in groups]
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            assert not ptrs[i] & ptrs[j]
            assert not mods[i] & mods[j]
    # Independently initialised: different weights, same architecture, no decoder.
    w = [s.features[0].weight for s in model.students]
    assert not torch.equal(w[0], w[1])
    assert all(s.decoder is None for s in model.students)
    assert not any(q.requires_grad for q in model.teacher.parameters())
    # state_dict holds each parameter once (dense wrappers are not registered as submodules).
    keys = model.state_dict().keys()
    assert not any(k.startswith("_") for k in keys)


def test_make_students_deterministic_and_validates():
    a, b = (
        make_students(patch_net(17, d=8), 2, seed=5),
        make_students(patch_net(17, d=8), 2, seed=5),
    )
    assert torch.equal(a[1].features[0].weight, b[1].features[0].weight)
    with pytest.raises(ValueError, match="at least one student"):
        make_students(patch_net(17), 0)


def test_regression_error_and_variance_by_hand():
    # M = 2 students, B = 1, d = 2, one position: predictions (1, 3) and (3, 1), target (0, 0).
    preds = torch.tensor([[1.0, 3.0], [3.0, 1.0]]).view(2, 1, 2, 1, 1)
    target = torch.zeros(1, 2, 1, 1)
    # mean prediction (2, 2): e = 2² + 2² = 8.
    assert regression_error(preds, target).item() == pytest.approx(8.0)
    # v = mean ‖S_i‖² − ‖mean‖² = (10 + 10)/2 − 8 = 2.
    assert predictive_variance(preds).item() == pytest.approx(2.0)
    # Same via the definition on random data.
    p = torch.randn(5, 2, 7, 3, 4)
    v_def = p.pow(2).sum(2).mean(0) - p.mean(0).pow(2).sum(1)
    torch.testing.assert_close(predictive_variance(p), v_def, atol=1e-5, rtol=1e-5)
    assert regression_error(p[:1], p[0]).abs().max() == 0  # M = 1 is defined
    with pytest.raises(ValueError, match=r"\(M, B, d, H, W\)"):
        regression_error(p[0], p[0])


def test_running_moments_equal_numpy():
    torch.manual_seed(0)
    xs = [torch.randn(2, 4, 3, 5) * 3 + 1 for _ in range(3)]
    pooled = RunningMoments()
    per_dim = RunningMoments(dim=1)
    for x in xs:
        pooled.update(x)
        per_dim.update(x)
    allx = torch.cat(xs).double()
    assert float(pooled.mean) == pytest.approx(float(allx.mean()), abs=1e-10)
    assert float(pooled.std) == pytest.approx(float(allx.std(unbiased=False)), abs=1e-10)
    flat = allx.movedim(1, 0).reshape(4, -1)
    torch.testing.assert_close(per_dim.mean, flat.mean(1))
    torch.testing.assert_close(per_dim.std, flat.std(1, unbiased=False))


def test_score_normalisation_and_fusion():
    e = torch.tensor([[[1.0, 3.0]]])
    v = torch.tensor([[[2.0, 6.0]]])
    stats = fit_score_stats([(e, v)])
    assert stats == ScoreStats(2.0, 1.0, 4.0, 2.0)
    torch.testing.assert_close(normalized_score(e, v, stats), torch.tensor([[[-2.0, 2.0]]]))
    a, b = torch.ones(1, 2, 2), 3 * torch.ones(1, 2, 2)
    torch.testing.assert_close(fuse_multiscale([a, b]), 2 * torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        fuse_multiscale([a, torch.ones(1, 3, 3)])
    with pytest.raises(ValueError, match="empty"):
        fit_score_stats([])


def test_target_statistics_over_all_pixels():
    model = small_model()
    images = torch.rand(3, 3, 12, 10)
    mean, std = fit_target_statistics(model, images, batch_size=2)
    feats = model.teacher_features(images)
    flat = feats.movedim(1, 0).reshape(8, -1).double()
    torch.testing.assert_close(mean, flat.mean(1).float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(std, flat.std(1, unbiased=False).float(), atol=1e-6, rtol=1e-5)
    targets = model.targets(images)
    torch.testing.assert_close(targets.mean((0, 2, 3)), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        targets.std((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-4, rtol=0
    )


def test_dense_predictions_match_dense_net():
    model = small_model(m=2)
    images = torch.rand(2, 1, 9, 11)  # grayscale is replicated to 3 channels
    preds = model.predictions(images)
    assert preds.shape == (2, 2, 8, 9, 11)
    x = model._prep(images)
    torch.testing.assert_close(preds[1], dense_net(model.students[1])(x))


def test_training_lowers_loss_and_scores_anomalies_higher():
    torch.manual_seed(0)
    model = small_model(m=2)
    # Normal images: smooth horizontal gradients; anomaly: a bright square in the middle.
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(8, 3, 16, 16)
    images = (ramp * 0.5 + 0.05 * torch.rand(8, 3, 16, 16)).clamp(0, 1)
    fit_target_statistics(model, images[:6])
    cfg = StudentTrainingConfig(epochs=15, batch_size=3, lr=3e-3, weight_decay=0.0, seed=0)
    history = train_students(model, images[:6], cfg, progress=False)
    assert len(history) == 2 and len(history[0]) == 15
    assert all(h[-1] < 0.5 * h[0] for h in history)
    stats = fit_validation_stats(model, images[6:])
    anomalous = images[6:].clone()
    anomalous[:, :, 5:11, 5:11] = 1.0
    normal_map = anomaly_scores(model, images[6:], stats)
    anomaly_map = anomaly_scores(model, anomalous, stats)
    assert normal_map.shape == (2, 16, 16)
    assert anomaly_map[:, 6:10, 6:10].mean() > normal_map[:, 6:10, 6:10].mean() + 1.0


def test_vector_mode_one_descriptor_per_image():
    model = small_model(m=3, dense=False)
    images = torch.rand(10, 3, 17, 17)
    fit_target_statistics(model, images)
    e, v = model.raw_scores(images)
    assert e.shape == v.shape == (10, 1, 1)
    train_students(model, images, StudentTrainingConfig(epochs=2, batch_size=4), progress=False)
    with pytest.raises(ValueError, match=r"zoomed to 17×17"):
        model.raw_scores(torch.rand(2, 3, 20, 20))


def test_checkpoint_resume_is_exact(tmp_path):
    images = torch.rand(4, 3, 10, 10)
    cfg = StudentTrainingConfig(epochs=4, batch_size=2, lr=1e-3, seed=3)

    full = small_model(m=2)
    fit_target_statistics(full, images)
    train_students(full, images, cfg, progress=False)

    part = small_model(m=2)
    fit_target_statistics(part, images)
    ckpt = tmp_path / "students.ckpt"
    # "Interrupt" after 2 epochs by training a shorter schedule on the same checkpoint file...
    short = StudentTrainingConfig(**{**cfg.__dict__, "epochs": 2})
    train_students(part, images, short, checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=False)
    state["config"]["epochs"] = 4  # ...then resume it as the 4-epoch run it belongs to.
    torch.save(state, ckpt)
    resumed = small_model(m=2)
    fit_target_statistics(resumed, images)
    history = train_students(resumed, images, cfg, checkpoint=ckpt, progress=False)
    assert len(history[0]) == 4
    for a, b in zip(full.students.parameters(), resumed.students.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="different configuration"):
        train_students(resumed, images, StudentTrainingConfig(epochs=9), checkpoint=ckpt)


def test_save_and_load_ensemble(tmp_path):
    model = small_model(m=2)
    images = torch.rand(2, 3, 8, 8)
    fit_target_statistics(model, images)
    save_ensemble(model, tmp_path / "ens.pt", category="demo")
    loaded, meta = load_ensemble(tmp_path / "ens.pt")
    assert meta["category"] == "demo"
    for a, b in zip(model.raw_scores(images), loaded.raw_scores(images), strict=True):
        torch.testing.assert_close(a, b)


def test_teacher_decoder_is_dropped_and_mismatch_rejected():
    teacher = patch_net(17, d=8)
    model = StudentTeacher(teacher, make_students(teacher, 1))
    assert model.teacher.decoder is None
    with pytest.raises(ValueError, match="does not match the teacher"):
        StudentTeacher(patch_net(33, d=8), make_students(teacher, 1))
