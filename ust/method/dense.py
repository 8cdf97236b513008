"""Fast dense transformation T of a patch network T̂ (paper §3.1; Bailer et al., BMVC 2017;
docs/decisions.md#dense-transformation).

:func:`dense_net` wraps the *same* :class:`~ust.method.networks.PatchNet` (shared parameters) so that
one forward pass yields a descriptor for every pixel of an image of any size, exactly equal to
evaluating the patch network on every p×p window (multi-pooling: every strided pooling layer is
evaluated at all of its offsets, the offsets are moved into the batch and unwarped at the end).
``valid=True`` keeps only the outputs whose receptive field lies inside the image (no zero padding;
used by random-crop student training), and a :class:`~ust.method.ensemble.StudentEnsemble` in place
of the patch network evaluates M students in one pass.

``padding_mode`` says what a descriptor near the border reads outside the image
(docs/decisions.md#border-padding): ``"zero"`` (the paper's reading, the default) zeros of the
ImageNet-normalised image, i.e. the ImageNet mean colour; ``"reflect"`` and ``"replicate"`` pad the
*input image* by the receptive field's half-widths with :func:`torch.nn.functional.pad`'s mode of
that name and run the network in ``valid`` mode on the padded image, so output (r, c) is exactly the
patch network applied to the p×p patch centred on (r, c) of the image padded that way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ust.method.ensemble import StudentEnsemble
from ust.method.networks import PatchNet, check_image_batch

#: What a dense network reads outside the image (docs/decisions.md#border-padding): ``zero`` (the
#: paper's reading, default), ``reflect`` (mirrored without repeating the edge pixel) or
#: ``replicate`` (the edge pixel repeated), as :func:`torch.nn.functional.pad` names them.
PADDING_MODES: tuple[str, ...] = ("zero", "reflect", "replicate")


def check_padding_mode(mode: str) -> str:
    """``mode`` itself when it is one of :data:`PADDING_MODES`, else a ValueError naming them."""
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {mode!r}; expected one of {PADDING_MODES}")
    return mode


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

    ``out[:, :, r, c] == patch(window)`` where the window is the p×p patch centred on (r, c): the
    crop at (r, c) of the input zero-padded by (p−1)//2 top/left and p−1−(p−1)//2 bottom/right.
    The patch network reads the centred rf×rf field of that window, so output (r, c) depends on input
    rows r − rf//2 … r − rf//2 + rf − 1 (and likewise columns): centred on (r, c) for odd rf, ½ px
    above/left for even rf (docs/decisions.md#dense-transformation). The input is padded only as
    far as that field reaches: :meth:`padding` puts rf//2 zeros at the top/left.

    Every stride-2 max-pool becomes a stride-1 pool followed by a space-to-batch rearrangement
    (multi-pooling), so all later layers are ordinary dense convolutions on smaller maps; the
    interleaved sub-grids are put back together at the end.

    ``forward(x, valid=True)`` computes only the outputs whose receptive field lies inside the
    image, without zero padding above/left: (B, d, H − rf + 1, W − rf + 1), where output (i, j)
    reads input rows i … i + rf − 1 and equals the normal output at (i + pad_top, j + pad_top).

    ``patch`` may also be a :class:`~ust.method.ensemble.StudentEnsemble`: the output then has M·d
    channels (student-major; ``ensemble.split`` views it as (B, M, d, H, W)).

    ``padding_mode`` (an attribute; may be changed after construction): ``"zero"`` as above;
    ``"reflect"`` / ``"replicate"`` pad the image by :meth:`field_padding` with that
    :func:`torch.nn.functional.pad` mode and evaluate the padded image in ``valid`` mode, so
    ``out[:, :, r, c]`` is the patch network on the p×p patch centred on (r, c) of the image padded
    that way (docs/decisions.md#border-padding). ``reflect`` needs H, W > rf//2 (torch mirrors at
    most side − 1 pixels). ``valid=True`` reads no padding and ignores the mode.
    """

    def __init__(
        self,
        patch: PatchNet | StudentEnsemble,
        *,
        channels_last: bool = True,
        padding_mode: str = "zero",
    ):
        super().__init__()
        self.patch = patch
        self.channels_last = channels_last
        self.padding_mode = check_padding_mode(padding_mode)

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
        # p − rf rows of every window outside its field are never read), so start from there.
        n = size + self.patch.rf - 1
        while self._final_len(n) < size:
            n += 1
        return n

    @property
    def pad_top(self) -> int:
        """Zeros above (and left of) the image: (p − 1)//2 − offset = rf//2 (17: 8, 33: 16, 65: 30)."""
        return (self.p - 1) // 2 - self.patch.offset

    def padding(self, h: int, w: int) -> tuple[int, int, int, int]:
        """``F.pad`` widths (left, right, top, bottom) for an H×W input, in pixels.

        Left/top are :attr:`pad_top`; right/bottom are whatever the pooling grid needs so that the
        output covers H×W (extra zeros only feed outputs beyond (H, W), which are cropped).
        """
        top = self.pad_top
        ph, pw = self._padded_len(h), self._padded_len(w)
        return top, pw - w - top, top, ph - h - top

    def field_padding(self) -> tuple[int, int, int, int]:
        """``F.pad`` widths (left, right, top, bottom) that give every pixel its whole field:
        rf//2 before and rf − 1 − rf//2 after (17: 8, 8; 33: 16, 15; 65: 30, 29). The ``reflect``
        and ``replicate`` modes pad the image by these, then run in ``valid`` mode."""
        rf = self.patch.rf
        before, after = rf // 2, rf - 1 - rf // 2
        return before, after, before, after

    def pad_image(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) padded by :meth:`field_padding` in :attr:`padding_mode`
        (``reflect`` or ``replicate``); its ``valid`` outputs are the H×W dense outputs."""
        mode = check_padding_mode(self.padding_mode)
        if mode == "zero":
            raise ValueError(
                "pad_image is for the reflect and replicate modes; zero mode pads inside"
            )
        widths = self.field_padding()
        h, w = x.shape[-2:]
        if mode == "reflect" and max(widths) >= min(h, w):
            raise ValueError(
                f"reflect padding of a p={self.p} network mirrors {max(widths)} pixels and needs "
                f"images larger than that, got {h}×{w}; use replicate or zero padding"
            )
        return F.pad(x, widths, mode=mode)

    def valid_padding(self, h: int, w: int) -> tuple[int, int, int, int]:
        """``F.pad`` widths for ``forward(x, valid=True)``: nothing left/top; right/bottom only the
        zeros the pooling grid needs to cover all H − rf + 1 valid outputs (they feed only
        outputs beyond it, which are cropped; none when H − rf + 1 is a multiple of the total
        pooling stride)."""
        rf = self.patch.rf
        if h < rf or w < rf:
            raise ValueError(
                f"valid mode needs images of at least rf×rf = {rf}×{rf} pixels, got {h}×{w}"
            )
        ph, pw = self._padded_len(h - rf + 1), self._padded_len(w - rf + 1)
        return 0, pw - w, 0, ph - h

    def forward(self, x: torch.Tensor, *, valid: bool = False) -> torch.Tensor:
        """(B, 3, H, W) → (B, C, H, W), or (B, C, H − rf + 1, W − rf + 1) with ``valid=True``."""
        check_image_batch(x)
        if not valid and self.padding_mode != "zero":
            x, valid = self.pad_image(x), True
        b, _, h, w = x.shape
        if valid:
            x = F.pad(x, self.valid_padding(h, w))
            h, w = h - self.patch.rf + 1, w - self.patch.rf + 1
        else:
            x = F.pad(x, self.padding(h, w))
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


def dense_net(
    patch: PatchNet | StudentEnsemble, *, channels_last: bool = True, padding_mode: str = "zero"
) -> DenseNet:
    """Wrap ``patch`` (parameters shared, not copied) into its dense image network; a
    :class:`~ust.method.ensemble.StudentEnsemble` gives all M students in one pass.
    ``padding_mode``: see :data:`PADDING_MODES` (docs/decisions.md#border-padding)."""
    if not isinstance(patch, PatchNet | StudentEnsemble):
        raise ValueError(
            f"dense_net expects a PatchNet or a StudentEnsemble, got {type(patch).__name__}"
        )
    return DenseNet(patch, channels_last=channels_last, padding_mode=padding_mode)
