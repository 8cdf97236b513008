"""IGD (docs/decisions.md#igd): networks, E-step, Gaussian classifier, loss, training
determinism/resume, BatchNorm recomputation, local model and fused score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_msssim import ms_ssim
from sklearn.metrics import roc_auc_score

import ust.baselines.igd as igd_module
from ust.baselines.igd import (
    IGD,
    RESNET18_IMAGENET_FILE,
    IGDConfig,
    IGDEncoder,
    IGDLocalSettings,
    estep,
    extract_patches,
    fused_scores,
    gaussian_normal_prob,
    gaussian_params,
    igd_score_components,
    ms_ssim_per_image,
    msssim_settings,
    recompute_bn,
    reconstruction_loss,
    score_igd,
    score_igd_local,
    train_igd,
    train_igd_local,
)
from ust.data.transforms import imagenet_normalize


def _tiny(**kw) -> IGDConfig:
    base = dict(image_size=8, batch_size=4, epochs=1, progress=False, seed=3)
    base.update(kw)
    return IGDConfig(**base)


def _smooth(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    low = torch.rand(n, 3, 3, 3, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True)


def test_shapes_32():
    torch.manual_seed(0)
    model = IGD(IGDConfig(image_size=32)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z, x_hat = model(x)
        a = model.critic(x_hat)
    assert z.shape == (2, 128)
    assert x_hat.shape == (2, 3, 32, 32)
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0
    assert a.shape == (2,)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 0.5
    assert model.encoder.downsample == 8
    assert isinstance(model.encoder.trunk.maxpool, torch.nn.Identity)
    assert model.encoder.trunk.conv1.kernel_size == (3, 3)
    # standard (ImageNet) stem: same image size in and out
    m2 = IGD(IGDConfig(image_size=32, stem="imagenet")).eval()
    with torch.no_grad():
        z2, x2 = m2(x)
    assert z2.shape == (2, 128) and x2.shape == (2, 3, 32, 32)
    assert m2.encoder.trunk.conv1.kernel_size == (7, 7)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="divisible"):
        IGD(IGDConfig(image_size=20))
    model = IGD(_tiny())
    with pytest.raises(ValueError):
        score_igd(model, torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError):
        score_igd(model, torch.rand(3, 8, 8))
    with pytest.raises(ValueError):
        train_igd(torch.rand(4, 3, 16, 16), _tiny())
    with pytest.raises(ValueError):
        IGD(IGDConfig(stem="cifar", pretrained=True))


def test_estep_hand_computation():
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    mu, sigma = gaussian_params(emb)
    assert torch.allclose(mu, torch.tensor([1.0, 1.0]))
    # every point is at squared distance 1 + 1 = 2 from μ → σ² = 2
    assert math.isclose(float(sigma), math.sqrt(2.0), rel_tol=1e-6)
    emb2 = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 5.0, 2.0]])
    mu2, sigma2 = gaussian_params(emb2)
    m_np = emb2.numpy().mean(0)
    s2_np = ((emb2.numpy() - m_np) ** 2).sum(1).mean()
    assert np.allclose(mu2.numpy(), m_np)
    assert math.isclose(float(sigma2) ** 2, s2_np, rel_tol=1e-6)


def test_estep_on_model_matches_encoder():
    torch.manual_seed(0)
    model = IGD(_tiny())
    x = torch.rand(6, 3, 8, 8)
    mu, sigma = estep(model, x, batch_size=4, bn="eval")
    model.eval()
    with torch.no_grad():
        z = model.encode(x).double().numpy()
    assert np.allclose(model.mu.numpy(), z.mean(0), atol=1e-5)
    assert math.isclose(float(model.sigma) ** 2, ((z - z.mean(0)) ** 2).sum(1).mean(), rel_tol=1e-4)
    assert torch.equal(mu, model.mu) and torch.equal(sigma, model.sigma)
    # batch-statistics E-step leaves the BatchNorm running statistics untouched
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    estep(model, x, batch_size=4, bn="batch")
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_gaussian_classifier_formula():
    z = torch.tensor([[3.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    mu = torch.tensor([1.0, 1.0])
    sigma = torch.tensor(2.0)
    p = gaussian_normal_prob(z, mu, sigma)
    expected = torch.tensor([math.exp(-4 / 4), 1.0, math.exp(-4 / 4)])
    assert torch.allclose(p, expected)
    with pytest.raises(ValueError):
        gaussian_normal_prob(torch.zeros(2, 3), mu, sigma)


def test_msssim_matches_pytorch_msssim_and_small_settings():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 176, 176, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert msssim_settings(176, 176) == (11, 5)
    ours = ms_ssim_per_image(a, b)
    ref = ms_ssim(a, b, data_range=1.0, size_average=False)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert msssim_settings(32, 32) == (3, 4)
    assert msssim_settings(16, 16) == (3, 3)
    x = torch.rand(3, 3, 32, 32, generator=g)
    assert torch.allclose(reconstruction_loss(x, x), torch.zeros(3), atol=1e-5)
    y = torch.rand(3, 3, 32, 32, generator=g)
    lr = reconstruction_loss(x, y, rho=0.15)
    mae = (x - y).abs().flatten(1).mean(1)
    assert torch.allclose(lr, 0.15 * mae + 0.85 * (1 - ms_ssim_per_image(x, y)))
    assert bool((lr > 0.1).all())


def test_smoke_epoch_finite():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 3, 8, 8, generator=g)
    model, hist = train_igd(x, _tiny(epochs=1))
    assert len(hist) == 1
    for k in ("loss", "l_h", "l_r", "l_adv", "l_d", "sigma"):
        assert math.isfinite(hist[0][k]), k
    assert 0.0 <= hist[0]["l_h"] <= 1.0
    s = score_igd(model, x[:3])
    assert s.shape == (3,) and np.isfinite(s).all()
    comp = igd_score_components(model, x[:3])
    assert np.allclose(comp["total"], comp["rec"] + comp["gac"])


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_determinism_same_seed():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 3, 8, 8, generator=g)
    m1, h1 = train_igd(x, _tiny())
    m2, h2 = train_igd(x, _tiny())
    assert _equal_states(m1, m2)
    assert h1[0]["loss"] == h2[0]["loss"]
    m3, _ = train_igd(x, _tiny(seed=4))
    assert not _equal_states(m1, m3)


def test_resume_equals_uninterrupted(tmp_path):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 3, 8, 8, generator=g)
    full, h_full = train_igd(x, _tiny(epochs=2))
    _, h1 = train_igd(x, _tiny(epochs=1), checkpoint_dir=tmp_path)
    assert (tmp_path / "igd_last.pt").is_file()
    assert not list(tmp_path.glob("*.tmp*"))
    resumed, h_res = train_igd(x, _tiny(epochs=2), checkpoint_dir=tmp_path)
    assert len(h_res) == 2
    assert [h["loss"] for h in h_res] == [h["loss"] for h in h_full]
    assert _equal_states(full, resumed)
    with pytest.raises(ValueError, match="different"):
        train_igd(x, _tiny(epochs=2, lambda3=0.2), checkpoint_dir=tmp_path)


def test_pretrained_missing_raises_with_path(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "r18.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        IGDEncoder(stem="imagenet", pretrained=True, pretrained_path=missing)
    # TORCH_HOME, not torch.hub.set_dir(): set_dir pins the hub folder for every later test.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    expected = str(tmp_path / "th" / "hub" / "checkpoints" / RESNET18_IMAGENET_FILE)
    with pytest.raises(FileNotFoundError) as err:
        IGD(IGDConfig(image_size=32, pretrained=True))
    assert expected in str(err.value)


def test_pretrained_loads_given_file(tmp_path):
    torch.manual_seed(7)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = IGDEncoder(stem="imagenet", pretrained=True, pretrained_path=path)
    assert torch.equal(enc.trunk.conv1.weight, ref.conv1.weight)
    assert torch.equal(enc.trunk.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_local_patches_and_score():
    x = torch.rand(2, 3, 16, 16)
    p = extract_patches(x, 8, 6)  # positions 0, 6, 8 per axis → 9 patches
    assert p.shape == (2, 9, 3, 8, 8)
    assert torch.equal(p[1, 8], x[1, :, 8:16, 8:16])
    local = IGD(_tiny())
    s = score_igd_local(local, x, stride=6)
    assert s.shape == (2,) and np.isfinite(s).all()


def test_toy_anomalies_ranked_higher():
    g = torch.Generator().manual_seed(0)
    train = _smooth(32, 16, g)
    test_normal = _smooth(16, 16, g)
    test_anom = torch.rand(16, 3, 16, 16, generator=g)
    cfg = IGDConfig(image_size=16, batch_size=16, epochs=2, progress=False, seed=0)
    model, hist = train_igd(train, cfg)
    assert len(hist) == 2
    s = np.r_[score_igd(model, test_normal), score_igd(model, test_anom)]
    y = np.r_[np.zeros(16), np.ones(16)]
    assert roc_auc_score(y, s) > 0.8


# ------------------------------------------------------------------------ BatchNorm statistics
def _bn_inputs(model: IGD, images: torch.Tensor, bn: torch.nn.Module, chunks: int) -> list:
    """The inputs a BatchNorm layer sees in a train-mode pass over ``chunks`` batches, captured
    by a hook on a copy (nothing of ``model`` changes)."""
    import copy

    twin = copy.deepcopy(model).train()
    name = next(n for n, m in model.named_modules() if m is bn)
    seen = []
    twin.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    with torch.no_grad():
        for idx in torch.arange(len(images)).tensor_split(chunks):
            twin(images[idx])
    return seen


def test_recompute_bn_equals_the_training_batch_statistics_by_hand():
    torch.manual_seed(0)
    model = IGD(_tiny(image_size=8)).eval()
    images = torch.rand(10, 3, 8, 8)
    first = model.encoder.trunk.bn1
    assert torch.equal(first.running_mean, torch.zeros(64))  # initial values
    # one batch: the running statistics become that batch's mean and unbiased variance
    assert recompute_bn(model, images, batch_size=10) == 1
    x = model.encoder.trunk.conv1(imagenet_normalize(images))
    torch.testing.assert_close(first.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        first.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6
    )
    assert not model.training and first.momentum == 0.1  # mode and momentum restored
    # two batches, a decoder layer (input computed through the train-mode network by hand):
    # the mean of the per-batch statistics, not a momentum-weighted mix with the initial 0 / 1
    deep = model.decoder.stages[3].bn2
    seen = _bn_inputs(model, images, deep, chunks=2)
    assert recompute_bn(model, images, batch_size=5) == 2
    means = torch.stack([t.mean(dim=(0, 2, 3)) for t in seen]).mean(0)
    variances = torch.stack([t.var(dim=(0, 2, 3), unbiased=True) for t in seen]).mean(0)
    torch.testing.assert_close(deep.running_mean, means, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(deep.running_var, variances, rtol=1e-4, atol=1e-6)
    assert int(deep.num_batches_tracked) == 2


def test_training_recomputes_bn_before_the_final_estep():
    g = torch.Generator().manual_seed(1)
    images = _smooth(12, 8, g)
    on, _ = train_igd(images, _tiny(image_size=8))
    off, _ = train_igd(images, _tiny(image_size=8, recompute_bn=False))
    bn_on, bn_off = on.encoder.trunk.bn1, off.encoder.trunk.bn1
    # same weights; only the statistics differ: after 3 steps at momentum 0.1 they are still
    # 0.9³ ≈ 73 % their initial 0 / 1, the recomputed ones are those of the training images
    assert torch.equal(on.encoder.trunk.conv1.weight, off.encoder.trunk.conv1.weight)
    assert not torch.allclose(bn_on.running_var, bn_off.running_var)
    x = on.encoder.trunk.conv1(imagenet_normalize(images))
    stats = [x[idx].mean(dim=(0, 2, 3)) for idx in torch.arange(12).tensor_split(3)]
    torch.testing.assert_close(bn_on.running_mean, torch.stack(stats).mean(0), rtol=1e-4, atol=1e-6)
    # ω is estimated afterwards, in eval mode, with the recomputed statistics
    with torch.no_grad():
        mu, sigma = gaussian_params(on.encode(images))
    torch.testing.assert_close(on.mu, mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(on.sigma, sigma, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ local model, fusion
def test_local_model_trains_on_every_grid_patch(monkeypatch):
    g = torch.Generator().manual_seed(2)
    images = _smooth(3, 16, g)
    local = IGDLocalSettings(patch=8, stride=8)
    seen = {}
    real = igd_module.train_igd

    def spy(train_images, config, *args):
        seen["images"], seen["config"] = train_images, config
        return real(train_images, config, *args)

    monkeypatch.setattr(igd_module, "train_igd", spy)
    model, hist = train_igd_local(images, _tiny(image_size=16), local)
    assert seen["images"].shape == (12, 3, 8, 8)  # 3 images × 2 × 2 patches
    assert torch.equal(seen["images"], extract_patches(images, 8, 8).flatten(0, 1))
    assert seen["config"].image_size == 8 and model.image_size == (8, 8) and len(hist) == 1
    again, _ = train_igd_local(images, _tiny(image_size=16), local)
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic for a seed
    s = score_igd_local(model, images, stride=4)
    assert s.shape == (3,) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, score_igd_local(again, images, stride=4))
    with pytest.raises(ValueError, match="smaller"):
        train_igd_local(images, _tiny(image_size=16), IGDLocalSettings(patch=16, stride=8))


def test_fused_score_is_global_plus_max_over_local_patches():
    torch.manual_seed(4)
    glob = IGD(_tiny(image_size=16)).eval()
    local = IGD(_tiny(image_size=8)).eval()
    images = torch.rand(3, 3, 16, 16)
    out = fused_scores(glob, local, images, stride=4)
    np.testing.assert_array_equal(out["global"], score_igd(glob, images))
    patches = [
        score_igd(local, images[:, :, y : y + 8, x : x + 8]) for y in (0, 4, 8) for x in (0, 4, 8)
    ]
    np.testing.assert_allclose(out["local"], np.max(patches, axis=0), rtol=1e-6)  # Eq. 15
    np.testing.assert_array_equal(out["total"], out["global"] + out["local"])  # Eq. 13
    alone = fused_scores(glob, None, images)
    assert set(alone) == {"global", "total"}
    np.testing.assert_array_equal(alone["total"], out["global"])
