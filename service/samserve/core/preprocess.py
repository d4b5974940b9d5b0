"""SAM's image preprocessing (ResizeLongestSide.apply_image + Sam.preprocess) in numpy."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Bumped whenever the preprocessing output changes: part of the embedding cache key.
PREPROCESS_VERSION = "1"


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side `long_side`, as ResizeLongestSide.get_preprocess_shape."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == long_side; PIL bilinear, which is
    what torchvision's resize does for the PIL image ResizeLongestSide.apply_image builds."""
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def to_model_input(resized: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (1, 3, S, S) float32: normalized, then zero-padded bottom/right (Sam.preprocess)."""
    h, w = resized.shape[:2]
    out = np.zeros((1, 3, img_size, img_size), dtype=np.float32)
    chw = resized.transpose(2, 0, 1).astype(np.float32)
    mean = np.asarray(pixel_mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pixel_std, dtype=np.float32).reshape(3, 1, 1)
    out[0, :, :h, :w] = (chw - mean) / std
    return out


def preprocess(
    image: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray
) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((1, 3, S, S) float32 encoder input, (h, w) resized size)."""
    resized = resize_longest_side(image, img_size)
    return to_model_input(resized, img_size, pixel_mean, pixel_std), (resized.shape[0], resized.shape[1])
