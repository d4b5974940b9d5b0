"""Synthetic segmentation scenes generated on the fly: filled and outlined circles, ellipses,
polygons, rings and stars in varied colours and textures over noisy, gradient and textured
backgrounds, overlapping (each instance's mask is its visible part). Deterministic per seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("circle", "ellipse", "polygon", "ring", "star")


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (K, H, W) bool, visible parts, K >= 1
    kinds: list[str]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    base = rng.uniform(0, 255, 3)
    if kind == 0:  # noise
        img = base + rng.normal(0, rng.uniform(5, 40), (h, w, 3))
    elif kind == 1:  # gradient
        other = rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
        img = base * (1 - t[..., None]) + other * t[..., None] + rng.normal(0, 5, (h, w, 3))
    else:  # texture: stripes or checks
        img = _texture(rng, h, w, base, rng.uniform(20, 80))
    return np.clip(img, 0, 255)


def _texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray, contrast: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(4, 20)
    angle = rng.uniform(0, math.pi)
    if rng.random() < 0.5:
        pattern = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * math.pi / period)
    else:
        pattern = np.sign(np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period))
    return colour + contrast * pattern[..., None] * 0.5


def _shape_mask(rng: np.random.Generator, h: int, w: int, kind: str, outline_share: float) -> np.ndarray:
    size = min(h, w)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    r = rng.uniform(0.08, 0.3) * size
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    outline = rng.random() < outline_share
    width = int(rng.integers(3, 8))
    if kind == "circle":
        box = [cx - r, cy - r, cx + r, cy + r]
        draw.ellipse(box, fill=None if outline else 255, outline=255, width=width if outline else 1)
    elif kind == "ellipse":
        rx, ry = r * rng.uniform(0.5, 1.3), r * rng.uniform(0.5, 1.3)
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        draw.ellipse(box, fill=None if outline else 255, outline=255, width=width if outline else 1)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        inner = r * rng.uniform(0.35, 0.7)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    else:
        n = int(rng.integers(3, 8)) if kind == "polygon" else int(rng.integers(4, 8)) * 2
        angles = (
            np.sort(rng.uniform(0, 2 * math.pi, n))
            if kind == "polygon"
            else np.linspace(0, 2 * math.pi, n, endpoint=False)
        )
        radii = r * (
            rng.uniform(0.6, 1.0, n)
            if kind == "polygon"
            else np.where(np.arange(n) % 2 == 0, 1.0, rng.uniform(0.35, 0.55))
        )
        pts = [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a, rr in zip(angles, radii, strict=True)]
        if outline and kind == "polygon":
            draw.line([*pts, pts[0]], fill=255, width=width)
        else:
            draw.polygon(pts, fill=255)
    return np.asarray(layer) > 127


def make_scene(
    rng: np.random.Generator,
    h: int,
    w: int,
    min_area: int = 60,
    max_shapes: int = 6,
    outline_share: float = 0.25,
) -> Scene:
    """A scene of 1 to `max_shapes` shapes, later ones occluding earlier ones; circles, ellipses
    and polygons are outlined rather than filled with probability `outline_share`. Changing
    either draws the same numbers from `rng`, so the defaults give the scenes they always did."""
    img = _background(rng, h, w)
    masks, kinds = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        m = _shape_mask(rng, h, w, kind, outline_share)
        if m.sum() < min_area:
            continue
        colour = rng.uniform(0, 255, 3)
        fill = (
            _texture(rng, h, w, colour, rng.uniform(10, 60))
            if rng.random() < 0.4
            else colour + rng.normal(0, 6, (h, w, 3))
        )
        img = np.where(m[..., None], fill, img)
        masks = [prev & ~m for prev in masks]
        masks.append(m)
        kinds.append(kind)
    keep = [i for i, m in enumerate(masks) if m.sum() >= min_area]
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if not keep:  # nothing visible enough: try again with the same generator
        return make_scene(rng, h, w, min_area, max_shapes, outline_share)
    return Scene(np.asarray(image), np.stack([masks[i] for i in keep]), [kinds[i] for i in keep])


def random_size(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    """(h, w) with the longest side `long_side` and aspect ratio in [0.5, 2]."""
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    if aspect >= 1:
        return max(16, int(long_side / aspect)), long_side
    return long_side, max(16, int(long_side * aspect))
