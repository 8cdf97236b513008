"""Patch networks T̂ (p = 17, 33, 65) and their fast dense transformation T (SPEC §1.2-1.3, §2).

A :class:`PatchNet` maps a p×p patch to one d-dimensional descriptor using only convolutions and
max-pooling. :func:`dense_net` wraps the *same* module (shared parameters) so that one forward pass
yields a descriptor for every pixel of an image of any size, exactly equal to evaluating the patch
network on every p×p window (Bailer et al., BMVC 2017, multi-pooling).

Layer tables follow the ambiguity register of the spec (A1-A5): p = 17 uses a 6×6 first convolution,
p = 33 a 5×5 one and p = 65 the thesis variant (128 channels up to Conv3, Conv4 4×4 → 256,
Conv5 1×1 → 128). The other printed variants are selectable with ``variant=``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZES = (17, 33, 65)
DECODER_DIM = 512

# ("conv", out_channels, kernel) or ("pool", kernel == stride). The descriptor conv (last) outputs d.
_D = "d"
ARCHITECTURES: dict[int, dict[str, list[tuple]]] = {
    17: {
        # A1: the printed 5×5 Conv1 contradicts the printed 12×12 output; 6×6 reproduces it.
        "default": [("conv", 128, 6), ("conv", 256, 5), ("conv", 256, 5), ("conv", _D, 4)],
        # As printed: 5×5 Conv1; its effective receptive field is 16, the 17th row/column is unused.
        "conv1_5x5": [("conv", 128, 5), ("conv", 256, 5), ("conv", 256, 5), ("conv", _D, 4)],
    },
    33: {
        # A2: 5×5 Conv1 matches the printed output sizes 29, 14, 10, 5, 4, 1 (effective RF 32).
        "default": [
            ("conv", 128, 5),
            ("pool", 2),
            ("conv", 256, 5),
            ("pool", 2),
            ("conv", 256, 2),
            ("conv", _D, 4),
        ],
        # As printed: 3×3 Conv1 (effective RF 30).
        "conv1_3x3": [
            ("conv", 128, 3),
            ("pool", 2),
            ("conv", 256, 5),
            ("pool", 2),
            ("conv", 256, 2),
            ("conv", _D, 4),
        ],
    },
    65: {
        # A3: the thesis (Table 5.1) variant: 128 channels up to Conv3, Conv5 1×1 (effective RF 60).
        "default": [
            ("conv", 128, 5),
            ("pool", 2),
            ("conv", 128, 5),
            ("pool", 2),
            ("conv", 128, 5),
            ("pool", 2),
            ("conv", 256, 4),
            ("conv", _D, 1),
        ],
        # Third-party variant with Conv3 → 256 channels (the paper's channel jump moved to Conv3).
        "conv3_256": [
            ("conv", 128, 5),
            ("pool", 2),
            ("conv", 128, 5),
            ("pool", 2),
            ("conv", 256, 5),
            ("pool", 2),
            ("conv", 256, 4),
            ("conv", _D, 1),
        ],
    },
}


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a patch network (stored in checkpoints)."""

    p: int
    d: int = 128
    variant: str = "default"
    slope: float = 0.005
    act_on_descriptor: bool = False
    with_decoder: bool = True


def _check_p(p: int) -> None:
    if p not in ARCHITECTURES:
        raise ValueError(
            f"unsupported patch size p={p!r}: expected one of {PATCH_SIZES} "
            "(the receptive fields of the paper's patch networks)"
        )


def _effective_rf(layers: list[tuple]) -> int:
    """Smallest input side that the layer stack maps to a 1×1 output (valid conv, floor pooling)."""
    n = 1
    for kind, *args in reversed(layers):
        n = n + args[-1] - 1 if kind == "conv" else n * args[0]
    return n


class PatchNet(nn.Module):
    """Patch network T̂: (B, 3, p, p) → (B, d). ``decode`` maps descriptors to 512-d (distillation).

    Only the top-left ``rf`` × ``rf`` part of a window influences the output (floor pooling drops the
    rest); ``rf`` is 17, 32 and 60 for the default p = 17, 33, 65 networks.
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        _check_p(config.p)
        if config.variant not in ARCHITECTURES[config.p]:
            raise ValueError(
                f"unknown variant {config.variant!r} for p={config.p}: expected one of "
                f"{sorted(ARCHITECTURES[config.p])}"
            )
        if config.d < 1:
            raise ValueError(f"descriptor dimension d must be positive, got {config.d}")
        self.config = config
        self.layers_spec = [
            (k, *(config.d if a == _D else a for a in args))
            for k, *args in ARCHITECTURES[config.p][config.variant]
        ]
        self.rf = _effective_rf(self.layers_spec)
        modules: list[nn.Module] = []
        cin = 3
        n_conv = sum(1 for k, *_ in self.layers_spec if k == "conv")
        i_conv = 0
        for kind, *args in self.layers_spec:
            if kind == "conv":
                cout, k = args
                modules.append(nn.Conv2d(cin, cout, k))
                i_conv += 1
                if i_conv < n_conv or config.act_on_descriptor:
                    modules.append(nn.LeakyReLU(config.slope))
                cin = cout
            else:
                modules.append(nn.MaxPool2d(args[0], args[0]))
        self.features = nn.Sequential(*modules)
        self.decoder = nn.Linear(config.d, DECODER_DIM) if config.with_decoder else None

    @property
    def p(self) -> int:
        return self.config.p

    @property
    def d(self) -> int:
        return self.config.d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors of patches: ``x`` (B, 3, p, p) → (B, d)."""
        _check_input(x)
        if x.shape[-2:] != (self.p, self.p):
            raise ValueError(
                f"PatchNet(p={self.p}) expects patches of shape (B, 3, {self.p}, {self.p}), got "
                f"{tuple(x.shape)}; use dense_net() for whole images"
            )
        out = self.features(x[..., : self.rf, : self.rf])
        return out.flatten(1)

    def decode(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Decoder D used only by the distillation loss: (B, d) → (B, 512)."""
        if self.decoder is None:
            raise ValueError("this network was built with with_decoder=False (students have none)")
        return self.decoder(descriptors)


def patch_net(
    p: int,
    d: int = 128,
    *,
    variant: str = "default",
    slope: float = 0.005,
    act_on_descriptor: bool = False,
    with_decoder: bool = True,
) -> PatchNet:
    """Build the patch network for receptive field ``p`` ∈ {17, 33, 65} (SPEC §1.2, register A1-A5)."""
    _check_p(p)
    return PatchNet(NetConfig(p, d, variant, slope, act_on_descriptor, with_decoder))


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"expected an image batch of shape (B, 3, H, W), got {shape}; replicate grayscale "
            "images to 3 channels (x.expand(-1, 3, -1, -1))"
        )


def _pool_space_to_batch(x: torch.Tensor, s: int) -> torch.Tensor:
    """Multi-pooling: an s×s max-pool at every one of the s² offsets, stacked along the batch.

    (N, C, H, W) → (s²·N, C, h, w) with h = (H − s + 1) // s; batch index (i·s + j)·N + n holds
    the pool windows whose top-left corners are rows i::s and columns j::s. Without autograd it is
    computed as maxima of strided views in NHWC order, which writes the rearranged result once (no
    separate pool, permute and layout copies; the result is channels-last).
    """
    n, c, hh, ww = x.shape
    h, w = (hh - s + 1) // s, (ww - s + 1) // s
    if torch.is_grad_enabled() and x.requires_grad:
        # Training: max_pool2d routes the gradient of a tie to one element exactly like the patch
        # network does (torch.maximum would split it), so dense and patch-wise gradients agree.
        y = F.max_pool2d(x, s, 1)[:, :, : s * h, : s * w]
        y = y.reshape(n, c, h, s, w, s).permute(3, 5, 0, 1, 2, 4)
        return y.reshape(s * s * n, c, h, w)
    xv = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view when x is channels-last
    rows = xv[:, 0 : hh - s + 1]
    for di in range(1, s):  # max over the window's rows, at stride 1
        rows = torch.maximum(rows, xv[:, di : di + hh - s + 1])

    def cell(i: int, j: int, dj: int) -> torch.Tensor:
        return rows[:, i : i + s * (h - 1) + 1 : s, j + dj : j + dj + s * (w - 1) + 1 : s]

    out = x.new_empty(s * s, n, h, w, c)
    for k in range(s * s):
        i, j = divmod(k, s)
        torch.maximum(cell(i, j, 0), cell(i, j, 1 % s), out=out[k])
        for dj in range(2, s):
            torch.maximum(out[k], cell(i, j, dj), out=out[k])
    return out.reshape(s * s * n, h, w, c).permute(0, 3, 1, 2)


def _unwarp(x: torch.Tensor, strides: list[int]) -> torch.Tensor:
    """Undo every multi-pooling at once: (Π s²·N, C, h, w) → (N, C, Π s·h, Π s·w), one copy.

    After pooling levels with strides s_1 … s_L the batch index is (i_L, j_L, …, i_1, j_1, n)
    (outermost first) and output position row = i_1 + s_1·(i_2 + s_2·(… + s_L·a)), likewise for
    columns.
    """
    if not strides:
        return x
    big, c, h, w = x.shape
    levels = len(strides)
    total = int(torch.tensor(strides).prod())
    n = big // (total * total)
    dims = [d for s in reversed(strides) for d in (s, s)]  # i_L, j_L, …, i_1, j_1
    # Work in NHWC order: the channel vector of each position stays one contiguous run, so the
    # gather copies 4·C-byte blocks instead of single floats (the input is channels-last).
    x = x.permute(0, 2, 3, 1).reshape(*dims, n, h, w, c)
    i_axes = [2 * k for k in range(levels)]  # i_L … i_1: outermost spatial factor first
    j_axes = [2 * k + 1 for k in range(levels)]
    nb, hb, wb, cb = 2 * levels, 2 * levels + 1, 2 * levels + 2, 2 * levels + 3
    x = x.permute(nb, hb, *i_axes, wb, *j_axes, cb).reshape(n, h * total, w * total, c)
    return x.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last in memory


class DenseNet(nn.Module):
    """Dense network T: (B, 3, H, W) → (B, d, H, W) for any H, W ≥ 1, sharing ``patch``'s parameters.

    ``out[:, :, r, c] == patch(window)`` where the window is the p×p crop at (r, c) of the input
    zero-padded by (p−1)//2 top/left and p−1−(p−1)//2 bottom/right (register A10).

    Every stride-2 max-pool becomes a stride-1 pool followed by a space-to-batch rearrangement
    (multi-pooling), so all later layers are ordinary dense convolutions on smaller maps; the
    interleaved sub-grids are put back together at the end.
    """

    def __init__(self, patch: PatchNet, *, channels_last: bool = True):
        super().__init__()
        self.patch = patch
        self.channels_last = channels_last

    @property
    def p(self) -> int:
        return self.patch.p

    @property
    def d(self) -> int:
        return self.patch.d

    def _final_len(self, n: int) -> int:
        """Number of output positions along one axis for a padded input of length ``n``."""
        stride = 1
        for kind, *args in self.patch.layers_spec:
            if kind == "conv":
                n -= args[-1] - 1
            else:
                s = args[0]
                n = (n - s + 1) // s
                stride *= s
            if n < 1:
                return 0
        return n * stride

    def _padded_len(self, size: int) -> int:
        # Output r reads padded rows [r, r + rf): rows past size + rf − 1 are never needed (the
        # last p − rf rows of every window are dropped by floor pooling), so start from there.
        n = size + self.patch.rf - 1
        while self._final_len(n) < size:
            n += 1
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        b, _, h, w = x.shape
        top = (self.p - 1) // 2
        ph, pw = self._padded_len(h), self._padded_len(w)
        # Extra bottom/right zeros only feed output positions beyond (h, w), which are cropped.
        x = F.pad(x, (top, pw - w - top, top, ph - h - top))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        strides = []
        for module in self.patch.features:
            if isinstance(module, nn.MaxPool2d):
                x = _pool_space_to_batch(x, module.stride)
                strides.append(module.stride)
            elif isinstance(module, nn.LeakyReLU):
                # In place: saves a full-size allocation (autograd supports it for slope > 0).
                x = F.leaky_relu_(x, module.negative_slope)
            else:
                x = module(x)
        x = _unwarp(x, strides)
        return x[:, :, :h, :w] if x.shape[-2:] != (h, w) else x


def dense_net(patch: PatchNet, *, channels_last: bool = True) -> DenseNet:
    """Wrap ``patch`` (parameters shared, not copied) into its dense image network."""
    if not isinstance(patch, PatchNet):
        raise ValueError(f"dense_net expects a PatchNet, got {type(patch).__name__}")
    return DenseNet(patch, channels_last=channels_last)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs_per_pixel(patch: PatchNet) -> int:
    """Multiply-accumulates per output pixel of the dense network (excluding the decoder)."""
    # Multi-pooling keeps one position per input pixel at every depth, so each conv counts fully.
    total, cin = 0, 3
    for kind, *args in patch.layers_spec:
        if kind == "conv":
            cout, k = args
            total += cin * cout * k * k
            cin = cout
    return total
