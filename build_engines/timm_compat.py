"""A minimal timm stand-in so that `mobile_sam` (MobileSAM's TinyViT encoder) imports here.

Why: `mobile_sam` imports four symbols from timm at import time, and timm itself imports
torchvision unconditionally (timm/layers/norm_act.py, timm.data), which has no CPU build here
(see torchvision_compat). The four are reproduced as timm computes them; none changes a
forward pass in eval mode (DropPath is the identity there, MobileSAM builds it with rate 0).
Installed only when the real timm cannot be imported."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterable

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (timm.layers.DropPath): the identity unless training."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * (mask / keep if self.scale_by_keep and keep > 0 else mask)


def to_2tuple(x):
    if isinstance(x, Iterable) and not isinstance(x, str):
        return tuple(x)
    return (x, x)


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0):
    """timm's truncated normal: inverse-CDF sampling of a uniform draw, then clamped."""

    def norm_cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    low, up = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
    tensor.uniform_(2 * low - 1, 2 * up - 1)
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.0))
    tensor.add_(mean)
    tensor.clamp_(min=a, max=b)
    return tensor


def register_model(fn):
    return fn


def install() -> bool:
    """Make `from timm.models.layers import ...` work; True when the stand-in was installed."""
    try:
        import timm.models.layers

        return False
    except Exception:
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, trunc_normal_
    registry.register_model = register_model
    models.layers, models.registry, timm.models = layers, registry, models
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )
    return True
