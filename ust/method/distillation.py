"""Distillation target for L_k: ImageNet ResNet-18's 512-d global-average-pool feature
(docs/decisions.md#distillation-target).

The weights come from a local file or from torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` in the
torch hub cache. Nothing is downloaded unless ``allow_download=True`` is passed, and there is never a
fallback to random weights: a missing file raises :class:`FileNotFoundError` naming where to put it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ust.data.transforms import imagenet_normalize

RESNET18_FILENAME = "resnet18-f37072fd.pth"  # torchvision ResNet18_Weights.IMAGENET1K_V1
RESNET18_URL = f"https://download.pytorch.org/models/{RESNET18_FILENAME}"
FEATURE_DIM = 512


def resnet18_cache_path() -> Path:
    """Where torchvision keeps the ImageNet ResNet-18 weights: ``$TORCH_HOME/hub/checkpoints/…``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILENAME


def check_hub_file(path: Path) -> None:
    """torchvision names hub files ``<name>-<first 8 hex digits of their SHA-256>.pth`` and checks
    that on download; check it here too, so a truncated or foreign file in the cache is refused."""
    import hashlib

    prefix = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        raise FileNotFoundError(
            f"{path} is not torchvision's {RESNET18_FILENAME}: its SHA-256 starts with "
            f"{digest.hexdigest()[:8]}, expected {prefix}. Delete it and copy the real file from "
            f"{RESNET18_URL} (or set `teacher.resnet_weights` to a local copy)."
        )


def load_resnet18(
    weights_path: str | os.PathLike | None = None, *, allow_download: bool = False
) -> nn.Module:
    """ImageNet ResNet-18 with ``fc`` replaced by Identity: (B, 3, H, W) normalised → (B, 512).

    ``weights_path``: a local state-dict ``.pth`` (e.g. the torchvision file). Without it the torch hub
    cache is used; ``allow_download=True`` lets torchvision fetch the file into that cache.
    Raises FileNotFoundError when no weights are available (never falls back to random weights).
    """
    from torchvision.models import ResNet18_Weights, resnet18

    model = resnet18(weights=None)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"ResNet-18 weights file {str(path)!r} does not exist; set `teacher.resnet_weights` "
                f"(params.yaml) / --resnet-weights to a torchvision ResNet-18 state dict such as "
                f"{RESNET18_FILENAME} ({RESNET18_URL})"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        cached = resnet18_cache_path()
        if cached.is_file():
            check_hub_file(cached)
            state = torch.load(cached, map_location="cpu", weights_only=True)
        elif allow_download:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
        else:
            raise FileNotFoundError(
                f"ImageNet ResNet-18 weights not found: expected {str(cached)!r} (torch hub cache, "
                f"file {RESNET18_FILENAME} from {RESNET18_URL}). Copy the file there, point "
                "`teacher.resnet_weights` in params.yaml (or --resnet-weights) at a local copy, or "
                "pass allow_download=True (--allow-download) when online. Random weights are never "
                "used as a stand-in."
            )
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state)
    model.fc = nn.Identity()
    return model


class DistillationTarget(nn.Module):
    """Frozen ResNet-18 feature F(P): patches (B, 3, s, s) in [0, 1] → (B, 512) float32.

    The teacher loss passes the part of each p×p patch its network reads, the centred rf×rf field
    (s = 17, 32, 60 for p = 17, 33, 65; :meth:`ust.method.networks.PatchNet.field`), so that F(P)
    describes exactly the pixels the descriptor sees. Patches are resized bilinearly to ``input_size``×``input_size`` (224 by default,
    docs/decisions.md#distillation-target; ``None`` keeps the native p×p, which ResNet-18's adaptive
    pooling accepts) and ImageNet-normalised.
    ``model`` may be given explicitly (any module producing (B, 512), e.g. a locally built
    ``torchvision.models.resnet18(weights=None)`` with or without its ``fc``); otherwise
    :func:`load_resnet18` is called with ``weights_path`` / ``allow_download``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        weights_path: str | os.PathLike | None = None,
        allow_download: bool = False,
        input_size: int | None = 224,
    ):
        super().__init__()
        if model is None:
            model = load_resnet18(weights_path, allow_download=allow_download)
        elif getattr(model, "fc", None) is not None and not isinstance(model.fc, nn.Identity):
            # The 512-d avgpool output, not the 1000 logits; a copy so the caller's model is intact.
            model = copy.deepcopy(model)
            model.fc = nn.Identity()
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be a positive int or None, got {input_size}")
        self.model = model.eval()
        self.input_size = input_size
        for param in self.model.parameters():
            param.requires_grad_(False)

    def train(self, mode: bool = True) -> DistillationTarget:
        # Always eval: BatchNorm must keep its ImageNet statistics.
        return super().train(False)

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.dim() != 4 or patches.shape[1] != 3:
            raise ValueError(
                f"expected patches of shape (B, 3, s, s) in [0, 1], got {tuple(patches.shape)}"
            )
        x = patches
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size,) * 2:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        out = self.model(imagenet_normalize(x))
        if out.dim() != 2 or out.shape[1] != FEATURE_DIM:
            raise ValueError(f"the distillation model must output (B, 512), got {tuple(out.shape)}")
        return out.float()
