"""A minimal torchvision stand-in so that `segment_anything` imports on CPU-only machines.

Why: `segment_anything`, `mobile_sam` and `sam2` import torchvision at import time, and the only
torchvision wheel on PyPI for the pinned torch is a CUDA build that fails to import next to the
CPU torch (`operator torchvision::nms does not exist`). Only what the references call is
reproduced, exactly as torchvision (0.20-0.28) computes it for the inputs they pass: SAM's resize
of PIL images and the box ops, and SAM 2's transforms (`ToTensor` of an HWC uint8 array, the
tensor `Resize((S, S))` with its default antialiased bilinear filter, `Normalize`; the last two
scriptable modules, as SAM2Transforms scripts them). Installed only when the real torchvision
cannot be imported.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch
from PIL import Image


def _to_pil_image(pic: np.ndarray) -> Image.Image:
    """HWC uint8 array -> PIL image (the only form SamPredictor passes)."""
    return Image.fromarray(np.asarray(pic))


def _resize(img: Image.Image, size: tuple[int, int] | list[int], *args, **kwargs) -> Image.Image:
    """torchvision resizes PIL images with PIL's bilinear filter; size is (h, w)."""
    h, w = size
    return img.resize((int(w), int(h)), Image.BILINEAR)


def _to_tensor(pic) -> torch.Tensor:
    """ToTensor of an (H, W, C) or (H, W) array / PIL image: CHW, uint8 scaled to [0, 1]."""
    a = np.asarray(pic)
    if a.ndim == 2:
        a = a[:, :, None]
    img = torch.from_numpy(a.transpose((2, 0, 1))).contiguous()
    if img.dtype == torch.uint8:
        return img.to(dtype=torch.get_default_dtype()).div(255)
    return img


class ToTensor:
    def __call__(self, pic) -> torch.Tensor:
        return _to_tensor(pic)


class Resize(torch.nn.Module):
    """torchvision.transforms.Resize((h, w)) of a float tensor: bilinear, antialias=True (the
    defaults); the input itself when it already has that size. Only the (h, w) form (an int
    size keeps the aspect ratio in torchvision; no reference here passes one)."""

    def __init__(self, size, interpolation=None, max_size=None, antialias=True) -> None:
        super().__init__()
        if isinstance(size, int) or len(size) != 2 or max_size is not None:
            raise NotImplementedError("the torchvision stand-in's Resize takes only size=(h, w)")
        if interpolation is not None and str(interpolation).lower().split(".")[-1] != "bilinear":
            raise NotImplementedError("the torchvision stand-in's Resize is bilinear only")
        self.size = [int(size[0]), int(size[1])]
        self.antialias = antialias is None or bool(antialias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2] == self.size[0] and img.shape[-1] == self.size[1]:
            return img
        batched = img.dim() == 4
        x = img if batched else img.unsqueeze(0)
        x = torch.nn.functional.interpolate(
            x, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias
        )
        return x if batched else x.squeeze(0)


class Normalize(torch.nn.Module):
    """torchvision.transforms.Normalize: (x - mean) / std per channel, in the tensor's dtype."""

    def __init__(self, mean, std, inplace: bool = False) -> None:
        super().__init__()
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.clone().sub_(mean).div_(std)


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order]
    area = _box_area(boxes)
    lt = torch.max(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    # torchvision's coordinate trick: offset boxes per category so they never overlap.
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def install() -> bool:
    """Make `import torchvision` work; returns True when the stand-in was installed."""
    try:
        import torchvision  # noqa: F401
        from torchvision.ops.boxes import batched_nms  # noqa: F401

        return False
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = _resize
    functional.to_pil_image = _to_pil_image
    functional.to_tensor = _to_tensor
    transforms.ToTensor = ToTensor
    transforms.Resize = Resize
    transforms.Normalize = Normalize
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _batched_nms
    boxes.box_area = _box_area
    boxes.nms = _nms
    ops.boxes = boxes
    ops.batched_nms = _batched_nms
    ops.box_area = _box_area
    ops.nms = _nms
    transforms.functional = functional
    tv.transforms = transforms
    tv.ops = ops
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
        }
    )
    return True
