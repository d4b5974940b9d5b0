"""Deterministic sample images for tests and benchmarks: smooth shapes over gradients, so the
encoder sees structure."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: a colour gradient, a few filled ellipses/rectangles, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width, 1), yy / max(height, 1), 0.5 * np.ones_like(xx)], -1)
    img = Image.fromarray((base * rng.uniform(60, 200, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, x1 = sorted(rng.uniform(0, width, 2))
        y0, y1 = sorted(rng.uniform(0, height, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1 + 1, y1 + 1], fill=colour)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (height, width, 3))
    return arr.clip(0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_image(height: int, width: int, seed: int) -> bytes:
    return encode(synthetic_image(height, width, seed))
