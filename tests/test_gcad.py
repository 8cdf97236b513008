"""GCAD (thesis chapter 7): module sizes and shapes, E_loc normalisation folding, Eq. 7.1–7.4, the
skip-weight and L_glo schedule, training, exact resume, corrupt checkpoints, calibration and the fit
recipe. Full-size networks are only built on the meta device (no memory, no compute); everything
that trains uses tiny widths and 32² images."""

import copy
import math

import pytest
import torch

from ust.io import torch_load
from ust.method.dense import dense_net
from ust.method.gcad import (
    GCAD,
    GCADConfig,
    GlobalEncoder,
    UNet,
    Upsampler,
    feature_loss,
    fold_normalisation,
    load_gcad,
    save_gcad,
    total_loss,
)
from ust.method.networks import count_parameters, patch_net
from ust.train.fit import FitData
from ust.train.gcad import (
    GCAD_CHECKPOINT,
    GCAD_FILE,
    LOCO_AUGMENTATIONS,
    MVTEC_AD_AUGMENTATIONS,
    GCADFitSettings,
    GCADTrainingConfig,
    augment_batch,
    fit_gcad,
    optimizer_steps,
    skip_weights,
    train_gcad,
)

TINY = GCADConfig(
    image_size=32,
    g=4,
    d_glo=3,
    encoder_channels=(4, 4, 8, 8, 8),
    unet_depth=3,
    unet_width=4,
    upsampler_width=8,
)


def conv(cin, cout, k):
    """Parameters of a k×k (transposed) convolution with bias."""
    return cin * cout * k * k + cout


# The layer lists, written out: (cin, cout, k) per convolution or transposed convolution.
UNET_BODY = [
    # down path: two 3×3 convolutions per level, 64 … 1024 channels
    (3, 64, 3), (64, 64, 3),
    (64, 128, 3), (128, 128, 3),
    (128, 256, 3), (256, 256, 3),
    (256, 512, 3), (512, 512, 3),
    (512, 1024, 3), (1024, 1024, 3),
    # up path: 2×2 stride-2 transposed convolution, then two 3×3 on the concatenation
    (1024, 512, 2), (1024, 512, 3), (512, 512, 3),
    (512, 256, 2), (512, 256, 3), (256, 256, 3),
    (256, 128, 2), (256, 128, 3), (128, 128, 3),
    (128, 64, 2), (128, 64, 3), (64, 64, 3),
]  # fmt: skip


def e_glo_layers(side):
    """E_glo at image side ``side``: bottleneck kernel side/32."""
    k = side // 32
    return [
        (3, 32, 4), (32, 32, 4), (32, 64, 4), (64, 64, 4), (64, 64, 4),  # 4×4 stride 2
        (64, 32, k),  # to the g = 32 context vector
        (32, 64, k),  # transposed, back to side/32
        (64, 64, 4), (64, 64, 4), (64, 32, 4), (32, 32, 4), (32, 10, 4),  # transposed 4×4
        (32, 32, 1), (32, 32, 1), (64, 64, 1), (64, 64, 1), (64, 64, 1),  # skips u … y
    ]  # fmt: skip


U_LAYERS = [(10, 128, 1), (128, 128, 1), (128, 128, 1)]


def tiny_teacher(seed=0):
    torch.manual_seed(seed)
    return patch_net(17, d=8)


def pictures(n, seed, size=32):
    """Smooth random images in [0, 1] (a coarse grid zoomed up), so the maps are not pure noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


_NORMALISED = {}


def tiny_model(seed=0):
    """A fresh tiny GCAD model, E_loc normalised on pictures(6, 1) (built once, then copied)."""
    if seed not in _NORMALISED:
        model = GCAD(tiny_teacher(), TINY, seed=seed)
        model.fit_teacher_normalisation(pictures(6, 1))
        _NORMALISED[seed] = model
    model = copy.deepcopy(_NORMALISED[seed])
    assert model._t.patch is model.e_loc  # the dense wrapper follows the copy
    return model


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        # bit for bit (NaN buffers of an uncalibrated model included)
        assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape, key
        assert sa[key].numpy().tobytes() == sb[key].numpy().tobytes(), key


# --- sizes and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("side", [256, 128])
def test_parameter_counts_and_shapes_of_every_module(side):
    with torch.device("meta"):
        model = GCAD(patch_net(33), GCADConfig(image_size=side))
    unet = sum(conv(*layer) for layer in UNET_BODY)
    assert count_parameters(model.r_loc) == unet + conv(64, 128, 1) == 31_040_000
    assert count_parameters(model.r_glo) == unet + conv(64, 10, 1) == 31_032_330
    expected_e_glo = sum(conv(*layer) for layer in e_glo_layers(side))
    assert count_parameters(model.e_glo) == expected_e_glo
    assert expected_e_glo == {256: 644_394, 128: 447_786}[side]
    assert count_parameters(model.u) == sum(conv(*layer) for layer in U_LAYERS) == 34_432
    teacher = patch_net(33, with_decoder=False)
    assert count_parameters(model.e_loc) == count_parameters(teacher)
    assert not any(q.requires_grad for q in model.e_loc.parameters())

    seen = {}

    def record_latent(module, inputs, output):
        seen["latent"] = output.shape

    model.r_loc.down[-1].register_forward_hook(record_latent)
    x = torch.rand(2, 3, side, side, device="meta")
    prep = model._prep(x)
    assert model.targets(x).shape == (2, 128, side, side)
    assert model.r_loc(prep).shape == (2, 128, side, side)
    assert seen["latent"] == (2, 1024, side // 16, side // 16)  # 16×16×1024 at 256²
    assert model.e_glo.context(prep)[0].shape == (2, 32, 1, 1)
    assert model.e_glo(prep).shape == (2, 10, side, side)
    assert model.u(model.e_glo(prep)).shape == (2, 128, side, side)
    assert model.r_glo(prep).shape == (2, 10, side, side)
    a_loc, a_glo = model.raw_scores(x)
    assert a_loc.shape == a_glo.shape == (2, side, side)
    with pytest.raises(ValueError, match=f"takes {side}×{side} images"):
        model.raw_scores(torch.rand(1, 3, side // 2, side // 2, device="meta"))


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of 32"):
        GCADConfig(image_size=100)
    assert GCADConfig(encoder_channels=[1, 2, 3, 4, 5]).encoder_channels == (1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="unknown augmentations"):
        GCADTrainingConfig(augment=("mixup",))


def test_skip_weights_act_where_documented():
    torch.manual_seed(0)
    enc = GlobalEncoder(TINY)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        enc.set_skip_weights([0.0] * 5)
        closed = enc(x)
        for skip in enc.skips:  # with all weights 0 the skip convolutions cannot matter
            skip.weight.add_(1.0)
        assert torch.equal(enc(x), closed)
        enc.set_skip_weights([0, 0, 0, 0, 1.0])  # y, the lowest level, now adds its features
        assert not torch.allclose(enc(x), closed)
    with pytest.raises(ValueError, match="5 skip weights"):
        enc.set_skip_weights([1.0, 1.0])


def test_unet_and_upsampler_small_real_forward():
    torch.manual_seed(0)
    net = UNet(3, 5, depth=3, width=4)
    assert net(torch.rand(1, 3, 16, 24)).shape == (1, 5, 16, 24)
    assert Upsampler(3, 7, 6)(torch.rand(2, 3, 4, 4)).shape == (2, 7, 4, 4)


# --- E_loc normalisation -----------------------------------------------------------------------


def test_fold_normalisation_equals_standardised_descriptors():
    teacher = tiny_teacher()
    g = torch.Generator().manual_seed(3)
    mean, std = torch.randn(8, generator=g), torch.rand(8, generator=g) + 0.5
    before = [q.clone() for q in teacher.parameters()]
    folded = fold_normalisation(teacher, mean, std)
    x = torch.randn(2, 3, 24, 20)
    with torch.no_grad():
        raw = dense_net(teacher)(x)
        expected = (raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        torch.testing.assert_close(dense_net(folded)(x), expected, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # a copy
    assert folded.decoder is None and not any(q.requires_grad for q in folded.parameters())
    with pytest.raises(ValueError, match="activation"):
        fold_normalisation(patch_net(17, d=8, act_on_descriptor=True), mean, std)


def test_fit_teacher_normalisation_standardises_training_pixels():
    images = pictures(5, 2)
    model = GCAD(tiny_teacher(), TINY)
    assert not model.teacher_normalised
    with pytest.raises(ValueError, match="fit_teacher_normalisation"):
        train_gcad(model, images, GCADTrainingConfig(epochs=1))
    mean, std = model.fit_teacher_normalisation(images)
    assert model.teacher_normalised and mean.shape == std.shape == (8,)
    y = model.targets(images).transpose(0, 1).reshape(8, -1).double()
    torch.testing.assert_close(y.mean(1), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.std(1, correction=0), torch.ones(8, dtype=torch.float64), atol=1e-4, rtol=0
    )
    with pytest.raises(ValueError, match="already normalised"):
        model.fit_teacher_normalisation(images)


# --- losses and schedule -----------------------------------------------------------------------


def test_loss_weights_are_one_over_depth():
    target, pred = torch.zeros(2, 128, 4, 4), torch.ones(2, 128, 4, 4)
    assert feature_loss(target, pred).item() == 128.0  # summed over d, mean over pixels/images
    pred[0] = 3.0  # image 0: 9 · 128 per pixel, image 1: 128 → mean 640
    assert feature_loss(target, pred).item() == 640.0
    kd, glo, loc = torch.tensor(128.0), torch.tensor(30.0), torch.tensor(256.0)
    assert total_loss(kd, glo, loc, d_loc=128, d_glo=10).item() == 1 + 3 + 2
    assert total_loss(kd, None, loc, d_loc=128, d_glo=10).item() == 1 + 2
    with torch.device("meta"):
        model = GCAD(patch_net(17), GCADConfig(image_size=64))
    losses = {"kd": kd, "glo": glo, "loc": loc}
    assert model.total_loss(losses).item() == 6.0
    assert model.total_loss({"kd": kd, "loc": loc}).item() == 3.0
    with pytest.raises(ValueError, match="shapes differ"):
        feature_loss(target, pred[:, :10])


def test_skip_weight_and_glo_schedule_default_and_scaled():
    expected = {0: [1.0] * 5, 50: [0, 0, 0.5, 1, 1], 100: [0.0] * 5, 150: [0.0] * 5}
    default = GCADTrainingConfig()
    assert (default.epochs, default.skip_fade_end, default.glo_start) == (500, 100, 50)
    for epoch, weights in expected.items():
        assert skip_weights(epoch, default.skip_fade_end) == pytest.approx(weights)
    assert skip_weights(10, 100) == pytest.approx([0.5, 1, 1, 1, 1])  # upper level first
    assert skip_weights(90, 100) == pytest.approx([0, 0, 0, 0, 0.5])
    scaled = GCADTrainingConfig.for_budget(50)  # a tenth of the thesis' epochs
    assert (scaled.schedule_scale, scaled.skip_fade_end, scaled.glo_start) == (0.1, 10, 5)
    for epoch, weights in expected.items():
        assert skip_weights(epoch / 10, scaled.skip_fade_end) == pytest.approx(weights)
    assert skip_weights(3, 0.0) == [0.0] * 5  # schedule_scale 0: no fade, L_glo from the start
    assert optimizer_steps(10, GCADTrainingConfig(epochs=3, batch_size=4)) == 9


def test_training_applies_the_schedule_and_leaves_r_glo_alone_before_l_glo():
    model = tiny_model()
    r_glo = [q.clone() for q in model.r_glo.parameters()]
    e_glo = [q.clone() for q in model.e_glo.parameters()]
    seen = []
    config = GCADTrainingConfig.for_budget(10, batch_size=3)  # fade by epoch 2, L_glo from 1
    history = train_gcad(
        model,
        pictures(6, 1),
        config,
        on_epoch=lambda e, losses: seen.append((model.e_glo.skip_weights.tolist(), losses)),
    )
    assert seen[0][0] == [1.0] * 5 and seen[1][0] == pytest.approx([0, 0, 0.5, 1, 1])
    assert all(w == [0.0] * 5 for w, _ in seen[2:])
    assert math.isnan(history[0]["glo"]) and all(math.isfinite(h["glo"]) for h in history[1:])
    assert len(history) == 10 and set(history[0]) == {"loss", "kd", "glo", "loc"}
    # Only epoch 0 ran without L_glo: check after it that R_glo had not moved, E_glo had.
    model2 = tiny_model()
    train_gcad(
        model2, pictures(6, 1), GCADTrainingConfig(epochs=1, batch_size=3, schedule_scale=0.02)
    )
    assert all(torch.equal(a, b) for a, b in zip(r_glo, model2.r_glo.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(e_glo, model2.e_glo.parameters()))


def test_one_training_step_reduces_each_loss():
    model = tiny_model()
    batch = pictures(4, 5)
    config = GCADTrainingConfig(epochs=1, batch_size=4, schedule_scale=0.0)  # L_glo on, no skips
    model.e_glo.set_skip_weights([0.0] * 5)
    with torch.no_grad():
        before = {k: v.item() for k, v in model.losses(batch).items()}
    train_gcad(model, batch, config)  # one epoch of one batch: one step
    with torch.no_grad():
        after = {k: v.item() for k, v in model.losses(batch).items()}
    assert set(before) == {"kd", "glo", "loc"}
    for key in before:
        assert after[key] < before[key], (key, before[key], after[key])


# --- checkpoints -------------------------------------------------------------------------------


class Stop(Exception):
    pass


def _stop_after_first(epoch, losses):
    if epoch == 0:
        raise Stop


@pytest.mark.parametrize("augment", [(), LOCO_AUGMENTATIONS["screw_bag"]])
def test_resume_is_exact(tmp_path, augment):
    images = pictures(5, 1)
    config = GCADTrainingConfig.for_budget(2, batch_size=2, augment=augment)
    whole = tiny_model()
    history = train_gcad(whole, images, config)

    ckpt = tmp_path / "gcad.ckpt"
    with pytest.raises(Stop):
        train_gcad(tiny_model(), images, config, checkpoint=ckpt, on_epoch=_stop_after_first)
    assert torch_load(ckpt)["epoch"] == 1
    resumed = tiny_model()
    calls = []
    history2 = train_gcad(
        resumed, images, config, checkpoint=ckpt, on_epoch=lambda e, _: calls.append(e)
    )
    assert calls == [1]  # only the second epoch ran
    assert_same_state(whole, resumed)
    assert [h["loss"] for h in history2] == [h["loss"] for h in history]

    with pytest.raises(ValueError, match="different configuration"):
        train_gcad(tiny_model(), images, GCADTrainingConfig.for_budget(3), checkpoint=ckpt)


def test_truncated_checkpoint_is_set_aside_and_training_restarts(tmp_path):
    images = pictures(4, 1)
    config = GCADTrainingConfig.for_budget(2, batch_size=2)
    ckpt = tmp_path / "gcad.ckpt"
    with pytest.raises(Stop):
        train_gcad(tiny_model(), images, config, checkpoint=ckpt, on_epoch=_stop_after_first)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    model = tiny_model()
    calls = []
    with pytest.warns(UserWarning, match="truncated or corrupt.*from the first epoch"):
        train_gcad(model, images, config, checkpoint=ckpt, on_epoch=lambda e, _: calls.append(e))
    assert calls == [0, 1]
    assert (tmp_path / "gcad.ckpt.corrupt").read_bytes() == data[: len(data) // 2]
    whole = tiny_model()
    train_gcad(whole, images, config)
    assert_same_state(whole, model)


# --- scores ------------------------------------------------------------------------------------


def test_calibrate_anomaly_maps_and_file_round_trip(tmp_path):
    model = tiny_model()
    train_gcad(model, pictures(6, 1), GCADTrainingConfig.for_budget(2, batch_size=3))
    val = pictures(4, 9)
    with pytest.raises(ValueError, match="calibrate"):
        model.anomaly_maps(val)
    stats = model.calibrate(val, batch_size=3)
    assert model.calibrated and stats.loc_std > 0 and stats.glo_std > 0
    maps = model.anomaly_maps(val, batch_size=3)
    assert maps.shape == (4, 32, 32) and maps.dtype == torch.float32
    assert abs(maps.double().mean().item()) < 1e-4
    a_loc, a_glo = model.raw_scores(val)
    loc = (a_loc.double() - stats.loc_mean) / stats.loc_std
    glo = (a_glo.double() - stats.glo_mean) / stats.glo_std
    for z in (loc, glo):  # each branch standardised on the validation pixels
        assert abs(z.mean().item()) < 1e-4 and abs(z.std(correction=0).item() - 1) < 1e-4
    test = pictures(2, 11)
    path = tmp_path / "m.pt"
    save_gcad(model, path, note="x")
    loaded, state = load_gcad(path)
    assert state["note"] == "x" and loaded.calibrated and loaded.teacher_normalised
    assert torch.equal(loaded.anomaly_maps(test), model.anomaly_maps(test))


def test_fit_gcad_writes_reuses_and_refuses(tmp_path):
    train, val = pictures(5, 1), pictures(3, 2)
    data = FitData(train, val, [f"t{i}.png" for i in range(5)], ["v0", "v1", "v2"], [(32, 32)] * 3)
    settings = GCADFitSettings(model=TINY, training=GCADTrainingConfig.for_budget(2, batch_size=5))
    work = tmp_path / "run"
    calls = []
    model = fit_gcad(tiny_teacher(), data, settings, work, on_epoch=lambda e, _: calls.append(e))
    assert calls == [0, 1] and model.calibrated and not model.training
    assert (work / GCAD_FILE).is_file() and (work / "run_config.json").is_file()
    assert not (work / GCAD_CHECKPOINT).exists()
    again = fit_gcad(tiny_teacher(), data, settings, work, on_epoch=lambda e, _: calls.append(e))
    assert calls == [0, 1]  # reused, not retrained
    assert torch.equal(again.anomaly_maps(val), model.anomaly_maps(val))
    other = GCADFitSettings(model=TINY, training=GCADTrainingConfig.for_budget(3, batch_size=5))
    with pytest.raises(ValueError, match="different configuration"):
        fit_gcad(tiny_teacher(), data, other, work)
    (work / GCAD_FILE).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="fitting GCAD again"):
        refit = fit_gcad(tiny_teacher(), data, settings, work)
    assert torch.equal(refit.anomaly_maps(val), model.anomaly_maps(val))  # deterministic on CPU
    plain = fit_gcad(tiny_teacher(), data, settings)  # no folder: nothing written, same model
    assert torch.equal(plain.anomaly_maps(val), model.anomaly_maps(val))


# --- augmentation ------------------------------------------------------------------------------


def test_augmentation_tables_and_batch():
    assert LOCO_AUGMENTATIONS["juice_bottle"] == ("rotate", "color")
    assert set(LOCO_AUGMENTATIONS["pushpins"]) == {"vflip", "hflip", "rotate", "color"}
    assert len(MVTEC_AD_AUGMENTATIONS) == 15
    assert MVTEC_AD_AUGMENTATIONS["transistor"] == ("hflip", "rotate", "color")
    x = pictures(6, 3)
    assert torch.equal(augment_batch(x, (), torch.Generator()), x)
    every = ("vflip", "hflip", "rotate", "color")
    a = augment_batch(x, every, torch.Generator().manual_seed(1))
    b = augment_batch(x, every, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    flips = augment_batch(x, ("hflip",), torch.Generator().manual_seed(2))
    for img, out in zip(x, flips):  # each image either unchanged or mirrored
        assert torch.equal(out, img) or torch.equal(out, img.flip(-1))
    gray = augment_batch(x[:, :1], every, torch.Generator().manual_seed(1))
    assert gray.shape == (6, 1, 32, 32)
    with pytest.raises(ValueError, match="unknown augmentations"):
        augment_batch(x, ("blur",), torch.Generator())
