"""Patch networks and the exact dense transformation (docs/decisions.md#teacher-architecture,
docs/decisions.md#dense-transformation)."""

import pytest
import torch
import torch.nn.functional as F

from ust.method.dense import dense_net
from ust.method.networks import ARCHITECTURES, count_parameters, macs_per_pixel, patch_net


def patchwise(net, x, chunk=128):
    """Reference: evaluate the patch network on the p×p patch centred on every pixel (the image
    zero-padded by (p−1)//2 on each side; docs/decisions.md#dense-transformation).

    The windows go through the network ``chunk`` at a time: the 2·37·42 windows of a p = 65 image
    pair in one batch would need ~10 GB of first-layer activations.
    """
    p = net.p
    top = (p - 1) // 2
    xp = F.pad(x, (top, p - 1 - top, top, p - 1 - top))
    b, _, h, w = x.shape
    wins = xp.unfold(2, p, 1).unfold(3, p, 1)  # (B, 3, H, W, p, p)
    wins = wins.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, p, p)
    out = torch.cat([net(part) for part in wins.split(chunk)])
    return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


# Parameter counts of docs/decisions.md#teacher-architecture (including the 128→512 decoder).
@pytest.mark.parametrize(
    "p,variant,expected",
    [
        (17, "default", 3_062_528),
        (33, "default", 1_682_048),
        (65, "default", 1_452_672),
        (65, "conv3_256", 2_386_688),
    ],
)
def test_parameter_counts_match_spec(p, variant, expected):
    assert count_parameters(patch_net(p, variant=variant)) == expected


@pytest.mark.parametrize("p,rf,offset", [(17, 17, 0), (33, 32, 0), (65, 60, 2)])
def test_patch_net_shape_and_receptive_field(p, rf, offset):
    net = patch_net(p)
    assert (net.rf, net.offset) == (rf, offset)
    out = net(torch.randn(4, 3, p, p))
    assert out.shape == (4, 128)
    assert net.decode(out).shape == (4, 512)
    # Pixels outside the centred rf×rf field never matter; the field itself does.
    x = torch.randn(2, 3, p, p)
    y = x.clone()
    y[..., :offset, :] = 7.0
    y[..., offset + rf :, :] = 7.0
    y[..., :, :offset] = -3.0
    y[..., :, offset + rf :] = -3.0
    torch.testing.assert_close(net(x), net(y))
    assert torch.equal(net.field(x), x[..., offset : offset + rf, offset : offset + rf])
    for r in (offset, offset + rf - 1):  # the first and last row of the field are read
        z = x.clone()
        z[..., r, :] += 5.0
        assert not torch.allclose(net(x), net(z))


VARIANTS = [(p, v) for p in ARCHITECTURES for v in ARCHITECTURES[p]]


def _support(g: torch.Tensor) -> tuple[int, int]:
    nonzero = torch.nonzero(g).flatten()
    return int(nonzero.min()), int(nonzero.max())


@pytest.mark.parametrize("p,variant", VARIANTS)
def test_dense_descriptor_is_centred_on_its_pixel(p, variant):
    """The input-gradient support of dense output (r, c) spans the effective receptive field and is
    centred on (r, c): exactly for odd fields, ½ px above/left for even ones (before: p = 65 was
    2.5 px and the printed p = 33 variant 1.5 px off; docs/decisions.md#dense-transformation)."""
    torch.manual_seed(0)
    net = patch_net(p, d=8, variant=variant)
    size, (r, c) = p + 20, (p // 2 + 10, p // 2 + 9)
    x = torch.randn(1, 3, size, size, requires_grad=True)
    dense_net(net)(x)[0, :, r, c].sum().backward()
    g = x.grad.abs().sum((0, 1))
    (top, bottom), (left, right) = _support(g.sum(1)), _support(g.sum(0))
    assert bottom - top + 1 == net.rf and right - left + 1 == net.rf
    for centre, pixel in (((top + bottom) / 2, r), ((left + right) / 2, c)):
        assert abs(centre - pixel) <= 0.5
        assert centre - pixel == (0.0 if net.rf % 2 else -0.5)
    assert (top, left) == (r - net.rf // 2, c - net.rf // 2)
    assert dense_net(net).padding(size, size)[0] == net.rf // 2


def test_printed_layer_sizes_p65():
    """The intermediate sizes of the thesis table: 61, 30, 26, 13, 9, 4, 1, 1."""
    net = patch_net(65)
    x = torch.randn(1, 3, 65, 65)
    sizes = []
    for m in net.features:
        x = m(x)
        if not isinstance(m, torch.nn.LeakyReLU):
            sizes.append((x.shape[1], x.shape[2]))
    assert sizes == [
        (128, 61),
        (128, 30),
        (128, 26),
        (128, 13),
        (128, 9),
        (128, 4),
        (256, 1),
        (128, 1),
    ]


def test_activation_placement_and_slope():
    net = patch_net(33)
    acts = [m for m in net.features if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.005 for a in acts)
    # no activation on the descriptor (docs/decisions.md#descriptor-activation)
    assert isinstance(net.features[-1], torch.nn.Conv2d)
    with_act = patch_net(33, act_on_descriptor=True, slope=0.05)
    assert isinstance(with_act.features[-1], torch.nn.LeakyReLU)
    assert with_act.features[-1].negative_slope == 0.05


def test_printed_variants_selectable():
    assert patch_net(17, variant="conv1_5x5").rf == 16
    assert patch_net(33, variant="conv1_3x3").rf == 30
    assert set(ARCHITECTURES[65]) == {"default", "conv3_256"}


@pytest.mark.parametrize("p", [17, 33, 65])
@pytest.mark.parametrize("size", [(37, 42), (1, 5)])
def test_dense_equals_patchwise_every_pixel(p, size):
    torch.manual_seed(p)
    net = patch_net(p).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        dense = dense_net(net)(x)
        ref = patchwise(net, x)
    assert dense.shape == (2, 128, *size)
    rel = (dense - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-4


@pytest.mark.parametrize("p,variant", [(17, "conv1_5x5"), (33, "conv1_3x3"), (65, "conv3_256")])
def test_dense_equals_patchwise_printed_variants(p, variant):
    torch.manual_seed(0)
    net = patch_net(p, variant=variant, act_on_descriptor=True).eval()
    x = torch.randn(1, 3, 19, 23)
    with torch.no_grad():
        dense, ref = dense_net(net)(x), patchwise(net, x)
    assert (dense - ref).abs().max() / ref.abs().max() <= 1e-4


@pytest.mark.parametrize("p", [17, 33, 65])
def test_dense_gradients_equal_patchwise_gradients(p):
    """Autograd through the dense network equals autograd through patch-wise evaluation.

    The loss weights only positions whose receptive field lies inside the image: in the zero-padded
    border every window of a max-pool holds equal values, and a tie may route the gradient to any of
    them (all valid subgradients), so there the two evaluations may legitimately differ.
    """
    torch.manual_seed(1)
    net = patch_net(p, d=16)
    h, w = net.rf + 3, net.rf + 4
    x = torch.randn(2, 3, h, w)
    top, half = (p - 1) // 2, net.rf // 2  # output r reads rows r − rf//2 … r − rf//2 + rf − 1
    weight = torch.zeros(2, 16, h, w)
    weight[:, :, half : h - net.rf + half + 1, half : w - net.rf + half + 1] = 1.0
    weight *= torch.randn_like(weight)

    def grads(fn):
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = fn(xi)
        loss = (out * weight).sum() + (out * weight).pow(2).sum()
        loss.backward()
        return [q.grad.clone() for q in net.features.parameters()] + [xi.grad.clone()]

    def interior_patchwise(t):
        # Only the weighted (interior) positions enter the loss, so only their windows are needed.
        xp = F.pad(t, (top, p - 1 - top, top, p - 1 - top))
        out = torch.zeros(2, 16, h, w)
        for r in range(half, h - net.rf + half + 1):
            for c in range(half, w - net.rf + half + 1):
                out[:, :, r, c] = net(xp[:, :, r : r + p, c : c + p])
        return out

    g_dense = grads(dense_net(net))
    g_ref = grads(interior_patchwise)
    assert weight.abs().sum() > 0
    for a, b in zip(g_dense, g_ref, strict=True):
        assert b.abs().max() > 0
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_dense_shares_parameters():
    net = patch_net(17)
    dense = dense_net(net)
    assert {id(q) for q in dense.parameters()} == {id(q) for q in net.parameters()}
    with torch.no_grad():
        net.features[0].bias.add_(1.0)
    assert dense.patch.features[0].bias is net.features[0].bias


def test_channels_last_off_gives_same_result():
    net = patch_net(33).eval()
    x = torch.randn(1, 3, 20, 21)
    with torch.no_grad():
        torch.testing.assert_close(dense_net(net)(x), dense_net(net, channels_last=False)(x))


def test_macs_per_pixel_match_issue_figures():
    # The planning figures of the MVTec issue: about 3.0 M, 1.6 M and 1.4 M multiply-adds per pixel.
    assert macs_per_pixel(patch_net(17)) == 2_995_712
    assert macs_per_pixel(patch_net(33)) == 1_615_232
    assert macs_per_pixel(patch_net(65)) == 1_385_856


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"unsupported patch size p=32.*\(17, 33, 65\)"):
        patch_net(32)
    with pytest.raises(ValueError, match="unknown variant"):
        patch_net(33, variant="huge")
    net = patch_net(17)
    with pytest.raises(
        ValueError, match=r"expected an image batch of shape \(B, 3, H, W\), got \(2, 1, 17, 17\)"
    ):
        net(torch.randn(2, 1, 17, 17))
    with pytest.raises(ValueError, match="expects patches of shape"):
        net(torch.randn(2, 3, 20, 20))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        dense_net(net)(torch.randn(3, 40, 40))
    with pytest.raises(ValueError, match="expects a PatchNet"):
        dense_net(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="with_decoder=False"):
        patch_net(17, with_decoder=False).decode(torch.randn(1, 128))
