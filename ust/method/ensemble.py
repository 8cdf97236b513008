"""M students of one scale evaluated as one network (grouped convolutions).

:class:`StudentEnsemble` stacks M :class:`~ust.method.networks.PatchNet`\\ s of one architecture
into a single network: the first convolution reads the shared input and has M·C output channels
(student i owns channels i·C … (i+1)·C − 1), every later convolution is grouped (``groups=M``, so
student i's channels only ever see student i's channels), and leaky ReLU and max-pooling act
channel-wise anyway. One forward therefore gives the M students' outputs (equal up to float
rounding) while each layer runs as one operator instead of M. That saves per-operator overhead
only: the arithmetic is the same, and on CPUs oneDNN's grouped convolutions can be slower than the
M separate ones, so measure before relying on it (``benchmarks/student_ensemble.py``).

It exposes the attributes :class:`~ust.method.dense.DenseNet` reads (``features``, ``layers_spec``,
``rf``, ``offset``, ``p``, ``d``), so ``dense_net(ensemble)`` evaluates all M students densely in one
pass: (B, 3, H, W) → (B, M·d, H, W), which :meth:`StudentEnsemble.split` views as (B, M, d, H, W).

The ensemble holds its own parameters: :meth:`StudentEnsemble.from_students` copies the students'
weights in and :meth:`StudentEnsemble.write_students` copies them back, so code that saves or scores
the M separate :class:`PatchNet`\\ s stays unchanged. ``torch.func.stack_module_state`` + ``vmap``
was measured as the alternative and was slower on the CPU (and vmap has no batching rule for the
in-place maxima of the dense pooling), hence grouped convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from ust.method.networks import NetConfig, PatchNet, check_image_batch, field_offset


def _convs(features: nn.Sequential) -> list[nn.Conv2d]:
    return [m for m in features if isinstance(m, nn.Conv2d)]


class StudentEnsemble(nn.Module):
    """M patch networks (no decoder) as one: (B, 3, p, p) → (B, M, d).

    ``config`` is the students' :class:`NetConfig` (``with_decoder`` is ignored: the ensemble has no
    decoder). A fresh ensemble gets PyTorch's default initialisation; use :meth:`from_students` to
    take over the weights of existing students.
    """

    def __init__(self, config: NetConfig, m: int):
        super().__init__()
        if m < 1:
            raise ValueError(f"an ensemble needs at least one student, got M={m}")
        with torch.device("meta"):  # only the layer structure is needed: no memory, no RNG draws
            template = PatchNet(replace(config, with_decoder=False))
        self.config = template.config
        self.m = m
        self.layers_spec = template.layers_spec  # per student: DenseNet only reads kernel sizes
        self.rf = template.rf
        self.offset = field_offset(config.p, self.rf)
        modules: list[nn.Module] = []
        first = True
        for module in template.features:
            if isinstance(module, nn.Conv2d):
                cin = module.in_channels if first else m * module.in_channels
                groups = 1 if first else m
                modules.append(
                    nn.Conv2d(cin, m * module.out_channels, module.kernel_size, groups=groups)
                )
                first = False
            elif isinstance(module, nn.LeakyReLU):
                modules.append(nn.LeakyReLU(module.negative_slope))
            else:
                modules.append(nn.MaxPool2d(module.kernel_size, module.stride))
        self.features = nn.Sequential(*modules)

    @property
    def p(self) -> int:
        return self.config.p

    @property
    def d(self) -> int:
        """Descriptor dimension of one student (the stacked output has M·d channels)."""
        return self.config.d

    @classmethod
    def from_students(cls, students: Sequence[PatchNet]) -> StudentEnsemble:
        """A new ensemble holding copies of ``students``' weights, on their device and dtype.

        Nothing is randomly initialised (the global RNG is not advanced).
        """
        students = list(students)
        if not students:
            raise ValueError("an ensemble needs at least one student, got M=0")
        ref = next(students[0].parameters())
        with torch.device("meta"):
            ens = cls(students[0].config, len(students))
        ens = ens.to_empty(device=ref.device).to(dtype=ref.dtype)
        ens.load_students(students)
        return ens

    def _check(self, students: Sequence[PatchNet]) -> None:
        if len(students) != self.m:
            raise ValueError(f"the ensemble holds M={self.m} students, got {len(students)}")
        key = replace(self.config, with_decoder=False)
        for s in students:
            if replace(s.config, with_decoder=False) != key:
                raise ValueError(
                    f"student config {s.config} differs from the ensemble's {self.config}"
                )

    def _student_slices(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Student ``i``'s (weight, bias) of every convolution, as views into the stacked ones."""
        out = []
        for conv in _convs(self.features):
            c = conv.out_channels // self.m
            out.append((conv.weight[i * c : (i + 1) * c], conv.bias[i * c : (i + 1) * c]))
        return out

    @torch.no_grad()
    def load_students(self, students: Sequence[PatchNet]) -> None:
        """Copy the weights of ``students`` (M PatchNets of this config) into the ensemble, in place."""
        students = list(students)
        self._check(students)
        for i, s in enumerate(students):
            for (w, b), conv in zip(self._student_slices(i), _convs(s.features), strict=True):
                w.copy_(conv.weight)
                b.copy_(conv.bias)

    @torch.no_grad()
    def write_students(self, students: Sequence[PatchNet]) -> None:
        """Copy the ensemble's weights back into ``students`` (in place; decoders are untouched)."""
        students = list(students)
        self._check(students)
        for i, s in enumerate(students):
            for (w, b), conv in zip(self._student_slices(i), _convs(s.features), strict=True):
                conv.weight.copy_(w)
                conv.bias.copy_(b)

    def split(self, y: torch.Tensor) -> torch.Tensor:
        """(B, M·d, …) → (B, M, d, …), a view (e.g. of ``dense_net(self)(x)``)."""
        return y.unflatten(1, (self.m, self.d))

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """The centred rf×rf crop of (B, C, p, p) patches that the networks read (a view)."""
        if x.dim() != 4 or x.shape[-2:] != (self.p, self.p):
            raise ValueError(
                f"StudentEnsemble(p={self.p}) expects patches of shape (B, 3, {self.p}, {self.p}), "
                f"got {tuple(x.shape)}; use dense_net() for whole images"
            )
        o, rf = self.offset, self.rf
        return x[..., o : o + rf, o : o + rf]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors of all M students: patches (B, 3, p, p) → (B, M, d)."""
        check_image_batch(x)
        return self.split(self.features(self.field(x)).flatten(1))
