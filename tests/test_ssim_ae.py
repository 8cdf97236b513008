"""SSIM autoencoder (thesis ch. 3; docs/decisions.md#ssim-ae-protocol): architecture, SSIM map,
patch-wise maps, training on crops (textures) and on augmented whole images (objects)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from ust.baselines.ssim_ae import (
    CHECKPOINT_NAME,
    SSIMAE,
    SSIMAEConfig,
    augment_whole,
    gaussian_window,
    sample_augmentations,
    ssim_ae_anomaly_map,
    ssim_map,
    to_grayscale,
    train_ssim_ae,
    training_batch,
)

TABLE_OUTPUTS = [
    (32, 64, 64),
    (32, 32, 32),
    (32, 32, 32),
    (64, 16, 16),
    (64, 16, 16),
    (128, 8, 8),
    (64, 8, 8),
    (32, 8, 8),
    (100, 1, 1),
]


def _outputs(seq: torch.nn.Sequential, x: torch.Tensor, kinds) -> list[tuple[int, ...]]:
    shapes = []
    for layer in seq:
        x = layer(x)
        if isinstance(layer, kinds):
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_architecture_table_3_1():
    model = SSIMAE(latent_dim=100, input_size=128)
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        enc = _outputs(model.encoder, x, torch.nn.Conv2d)
        z = model.encoder(x)
        dec = _outputs(model.decoder, z, torch.nn.ConvTranspose2d)
        y = model(x)
    assert enc == TABLE_OUTPUTS
    assert z.shape == (2, 100, 1, 1)
    # decoder = mirror: each layer outputs the size of the matching encoder layer's input
    assert dec == [s for s in reversed(TABLE_OUTPUTS[:-1])] + [(1, 128, 128)]
    assert y.shape == (2, 1, 128, 128)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (4, 2, 1),
        (4, 2, 1),
        (3, 1, 1),
        (4, 2, 1),
        (3, 1, 1),
        (4, 2, 1),
        (3, 1, 1),
        (3, 1, 1),
        (8, 1, 0),
    ]
    acts = [m for m in model.encoder if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 8 and all(a.negative_slope == 0.2 for a in acts)
    assert isinstance(model.encoder[-1], torch.nn.Conv2d)  # linear latent
    assert isinstance(model.decoder[-1], torch.nn.ConvTranspose2d)  # linear output


def test_architecture_256_extra_layer():
    model = SSIMAE(latent_dim=128, input_size=256)
    with torch.no_grad():
        z = model.encoder(torch.rand(1, 1, 256, 256))
        y = model.decoder(z)
    assert z.shape == (1, 128, 1, 1)
    assert y.shape == (1, 1, 256, 256)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.encoder) == 10
    with pytest.raises(ValueError):
        SSIMAE(input_size=64)
    with pytest.raises(ValueError):
        model(torch.rand(1, 1, 128, 128))


def test_ssim_map_identical_is_one():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 40, 40, generator=g)
    m = ssim_map(x, x.clone())
    assert m.shape == (2, 40, 40)
    assert torch.allclose(1 - m, torch.zeros_like(m), atol=1e-5)
    mv = ssim_map(x, x.clone(), padding="valid")
    assert mv.shape == (2, 30, 30)
    assert torch.allclose(mv, torch.ones_like(mv), atol=1e-5)
    assert torch.isclose(gaussian_window().sum(), torch.tensor(1.0))


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_mean_matches_pytorch_msssim(channels):
    g = torch.Generator().manual_seed(channels)
    x = torch.rand(3, channels, 48, 56, generator=g)
    y = (0.7 * x + 0.3 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    ours = ssim_map(x, y, win_size=11, K=(0.01, 0.03), padding="valid").flatten(1).mean(1)
    ref = ssim(x, y, data_range=1.0, win_size=11, K=(0.01, 0.03), size_average=False)
    assert torch.allclose(ours, ref, atol=1e-4)
    with pytest.raises(ValueError):
        ssim_map(x, y[:, :, :-1])


def test_patchwise_map_shape():
    torch.manual_seed(0)
    model = SSIMAE(latent_dim=16).eval()
    image = torch.rand(1, 150, 170)
    amap = ssim_ae_anomaly_map(model, image, patch=128, stride=30)
    assert amap.shape == (150, 170)
    assert bool(torch.isfinite(amap).all())
    assert float(amap.min()) >= 0.0 and float(amap.max()) <= 2.0
    with pytest.raises(ValueError):
        ssim_ae_anomaly_map(model, torch.rand(1, 100, 170))
    with pytest.raises(ValueError):
        ssim_ae_anomaly_map(model, image, patch=64)
    with pytest.raises(ValueError):
        ssim_ae_anomaly_map(model, torch.rand(3, 150, 170))


def _texture(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    low = torch.rand(n, 1, 12, 12, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def test_short_training_lowers_loss(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = _texture(2, 160, g)
    cfg = SSIMAEConfig(
        latent_dim=32, batch_size=8, epochs=4, num_patches=32, progress=False, seed=1
    )
    model, hist = train_ssim_ae(images, cfg)
    assert len(hist) == 4
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert not model.training
    # resume from a per-epoch checkpoint = uninterrupted run
    cfg2 = SSIMAEConfig(latent_dim=32, batch_size=8, epochs=2, num_patches=16, progress=False)
    full, _ = train_ssim_ae(images, cfg2)
    cfg1 = SSIMAEConfig(latent_dim=32, batch_size=8, epochs=1, num_patches=16, progress=False)
    train_ssim_ae(images, cfg1, checkpoint_dir=tmp_path)
    resumed, h = train_ssim_ae(images, cfg2, checkpoint_dir=tmp_path)
    assert len(h) == 2
    sa, sb = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError):
        train_ssim_ae(torch.rand(2, 3, 160, 160), cfg)


def test_to_grayscale():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0
    assert torch.allclose(to_grayscale(x), torch.full((1, 1, 2, 2), 0.299))
    assert to_grayscale(torch.rand(1, 1, 4, 4)).shape == (1, 1, 4, 4)


# ------------------------------------------------------------- objects: augmented whole images
def test_object_augmentations_stay_in_their_ranges():
    cfg = SSIMAEConfig(protocol="whole", num_patches=2000, hflip=True, vflip=False, seed=5)
    rows = sample_augmentations(7, 2000, cfg)
    assert rows.shape == (2000, 6)
    assert set(rows[:, 0].long().tolist()) == set(range(7))  # every image is used
    angle, shift = rows[:, 1], rows[:, 2:4]
    assert float(angle.abs().max()) <= 3.0 and float(angle.abs().max()) > 2.9
    assert float(shift.abs().max()) <= 0.05 and float(shift.abs().max()) > 0.049
    assert 0.45 < float(rows[:, 4].mean()) < 0.55  # left-right mirroring with probability 1/2
    assert float(rows[:, 5].abs().max()) == 0.0  # top-bottom mirroring not permitted
    assert torch.equal(rows, sample_augmentations(7, 2000, cfg))  # drawn once from the seed


def test_augment_whole_identity_mirrors_rotation_and_shift():
    img = torch.rand(1, 1, 8, 8)

    def aug(angle=0.0, dx=0.0, dy=0.0, h=0.0, v=0.0):
        return augment_whole(img, torch.tensor([[0.0, angle, dx, dy, h, v]]))

    torch.testing.assert_close(aug(), img)
    torch.testing.assert_close(aug(h=1.0), img.flip(-1))
    torch.testing.assert_close(aug(v=1.0), img.flip(-2))
    torch.testing.assert_close(aug(angle=90.0), img.rot90(1, dims=(-2, -1)))
    moved = aug(dx=0.25)  # 0.25 of 8 px: content moves 2 px right, the border pixels extended
    torch.testing.assert_close(moved[..., 2:], img[..., :-2])
    torch.testing.assert_close(moved[..., :2], img[..., :1].expand(-1, -1, -1, 2))
    turned = aug(angle=2.0)
    assert not torch.allclose(turned, img) and turned.shape == img.shape


def test_training_batches_crops_for_textures_whole_images_for_objects():
    images = torch.rand(3, 1, 160, 160)
    crops = SSIMAEConfig(num_patches=5, seed=1)
    rows = torch.tensor([[2, 10, 20], [0, 32, 0]])
    batch = training_batch(images, rows, crops)
    assert batch.shape == (2, 1, 128, 128)
    assert torch.equal(batch[0], images[2, :, 10:138, 20:148])
    whole = SSIMAEConfig(protocol="whole", num_patches=5, hflip=True, seed=1)
    small = torch.nn.functional.interpolate(images, size=(128, 128))
    aug = sample_augmentations(3, 5, whole)
    batch = training_batch(small, aug, whole)
    assert batch.shape == (5, 1, 128, 128)
    torch.testing.assert_close(batch, augment_whole(small[aug[:, 0].long()], aug))


def test_whole_image_training_zooms_to_the_input_size_and_resumes(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = _texture(3, 150, g)  # not 128: zoomed to the input size, never cropped
    cfg = SSIMAEConfig(
        protocol="whole", latent_dim=8, batch_size=4, epochs=2, num_patches=8, progress=False
    )
    model, hist = train_ssim_ae(images, cfg)
    assert model.input_size == 128 and len(hist) == 2 and np.isfinite(hist[-1]["loss"])
    one = SSIMAEConfig(**{**cfg.__dict__, "epochs": 1})
    train_ssim_ae(images, one, checkpoint_dir=tmp_path)
    resumed, _ = train_ssim_ae(images, cfg, checkpoint_dir=tmp_path)
    a, b = model.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="different SSIMAEConfig"):  # crops ≠ whole images
        train_ssim_ae(
            images, SSIMAEConfig(**{**cfg.__dict__, "protocol": "crops"}), checkpoint_dir=tmp_path
        )
    with pytest.raises(ValueError, match="protocol"):
        train_ssim_ae(images, SSIMAEConfig(protocol="tiles"))


def test_checkpoint_without_the_protocol_keys_resumes_as_crops(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = _texture(2, 130, g)
    cfg = SSIMAEConfig(latent_dim=8, batch_size=4, epochs=1, num_patches=4, progress=False)
    train_ssim_ae(images, cfg, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=False)
    for key in ("protocol", "max_rotation", "max_translation", "hflip", "vflip"):
        del state["config"][key]  # as written before the object protocol existed
    torch.save(state, path)
    _, hist = train_ssim_ae(
        images, SSIMAEConfig(**{**cfg.__dict__, "epochs": 2}), checkpoint_dir=tmp_path
    )
    assert len(hist) == 2
