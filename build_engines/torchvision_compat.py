"""A minimal torchvision stand-in so that `segment_anything` imports on CPU-only machines.

Why: `segment_anything` imports torchvision at import time, and the only torchvision wheel on
PyPI for the pinned torch is a CUDA build that fails to import next to the CPU torch
(`operator torchvision::nms does not exist`). Only four functions are used by the reference;
they are reproduced here exactly as torchvision computes them for the inputs the reference
passes (PIL images, float boxes). Installed only when the real torchvision cannot be imported.
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
