"""Drawing masks and prompts over an image (CLI output)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209)]


def colour(i: int) -> tuple[int, int, int]:
    """A distinct colour per index: the palette, then golden-ratio hues."""
    if i < len(PALETTE):
        return PALETTE[i]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def overlay(
    image: np.ndarray,
    masks: list[np.ndarray],
    points: list[tuple[float, float, int]] = (),
    box: tuple[float, float, float, float] | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """(H, W, 3) uint8 + (H, W) bool masks -> RGB image with each mask tinted in its own colour."""
    out = image.astype(np.float32).copy()
    for i, m in enumerate(masks):
        tint = np.array(colour(i), dtype=np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * tint
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = max(3, round(max(image.shape[:2]) / 150))
    for x, y, label in points:
        fill = (0, 255, 0) if label == 1 else (255, 0, 0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
    if box is not None:
        draw.rectangle(list(box), outline=(0, 255, 0), width=max(1, r // 2))
    return img
