"""Patch networks T̂ (p = 17, 33, 65): the paper's teacher and student architecture (paper §3.1).

A :class:`PatchNet` maps a p×p patch to one d-dimensional descriptor using only convolutions and
max-pooling; :func:`ust.method.dense.dense_net` turns it into the dense network T that yields a
descriptor for every pixel of an image in one pass.

Layer tables follow docs/decisions.md#teacher-architecture: p = 17 uses a 6×6 first convolution,
p = 33 a 5×5 one and p = 65 the thesis variant (128 channels up to Conv3, Conv4 4×4 → 256,
Conv5 1×1 → 128). The other printed variants are selectable with ``variant=``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PATCH_SIZES = (17, 33, 65)
DECODER_DIM = 512

# ("conv", out_channels, kernel) or ("pool", kernel == stride). The descriptor conv (last) outputs d.
_D = "d"
ARCHITECTURES: dict[int, dict[str, list[tuple]]] = {
    17: {
        # The printed 5×5 Conv1 contradicts the printed 12×12 output; 6×6 reproduces it
        # (docs/decisions.md#p17-first-convolution).
        "default": [("conv", 128, 6), ("conv", 256, 5), ("conv", 256, 5), ("conv", _D, 4)],
        # As printed: 5×5 Conv1; its effective receptive field is 16, the 17th row/column is unused.
        "conv1_5x5": [("conv", 128, 5), ("conv", 256, 5), ("conv", 256, 5), ("conv", _D, 4)],
    },
    33: {
        # 5×5 Conv1 matches the printed output sizes 29, 14, 10, 5, 4, 1 (effective RF 32;
        # docs/decisions.md#p33-first-convolution).
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
        # The thesis (Table 5.1) variant: 128 channels up to Conv3, Conv5 1×1 (effective RF 60;
        # docs/decisions.md#p65-layer-table).
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


def check_image_batch(x: torch.Tensor) -> None:
    """Raise a ValueError naming the shape unless ``x`` is a (B, 3, H, W) tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"expected an image batch of shape (B, 3, H, W), got {shape}; replicate grayscale "
            "images to 3 channels (x.expand(-1, 3, -1, -1))"
        )


def field_offset(p: int, rf: int) -> int:
    """Row (and column) of a p×p patch where the rf×rf field the network reads starts: (p − rf) // 2.

    The field is centred in the patch: exactly when p − rf is even, ½ px towards the top/left when
    it is odd (docs/decisions.md#dense-transformation). 0, 0 and 2 for the default p = 17, 33, 65.
    """
    if not 1 <= rf <= p:
        raise ValueError(f"effective receptive field {rf} must lie in [1, p={p}]")
    return (p - rf) // 2


class PatchNet(nn.Module):
    """Patch network T̂: (B, 3, p, p) → (B, d). ``decode`` maps descriptors to 512-d (distillation).

    Only an ``rf`` × ``rf`` part of a p×p patch can influence the output (the layer stack maps rf×rf
    to 1×1; ``rf`` is 17, 32 and 60 for the default p = 17, 33, 65 networks). The network reads the
    *centred* one, rows and columns ``offset … offset + rf − 1`` with ``offset = (p − rf) // 2``
    (:meth:`field`), so a descriptor describes the centre of its patch: within ½ px of the patch
    centre for every p and variant (docs/decisions.md#dense-transformation).
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
        self.offset = field_offset(config.p, self.rf)
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

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """The part of patches the network reads: (B, C, p, p) → (B, C, rf, rf), the centred
        rf×rf crop (a view). The distillation target gets this crop too
        (docs/decisions.md#distillation-target)."""
        if x.dim() != 4 or x.shape[-2:] != (self.p, self.p):
            raise ValueError(
                f"PatchNet(p={self.p}) expects patches of shape (B, 3, {self.p}, {self.p}), got "
                f"{tuple(x.shape)}; use dense_net() for whole images"
            )
        o, rf = self.offset, self.rf
        return x[..., o : o + rf, o : o + rf]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors of patches: ``x`` (B, 3, p, p) → (B, d), read from :meth:`field`."""
        check_image_batch(x)
        return self.features(self.field(x)).flatten(1)

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
    """Build the patch network for receptive field ``p`` ∈ {17, 33, 65}
    (docs/decisions.md#teacher-architecture)."""
    _check_p(p)
    return PatchNet(NetConfig(p, d, variant, slope, act_on_descriptor, with_decoder))


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
