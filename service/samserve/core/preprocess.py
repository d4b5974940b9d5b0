"""Image preprocessing in numpy, per family: SAM's (ResizeLongestSide.apply_image +
Sam.preprocess, also MobileSAM's) and SAM 2's (SAM2Transforms: a square resize, no padding)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from samserve.core.errors import InvalidInput

# Bumped whenever the preprocessing output changes: part of the embedding cache key.
PREPROCESS_VERSION = "1"


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side `long_side`, as ResizeLongestSide.get_preprocess_shape."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def check_resizable(height: int, width: int, long_side: int, what: str = "image") -> None:
    """Raises InvalidInput when resizing the long side to `long_side` would leave the short side
    under one pixel (max(h, w) > 2 * long_side * min(h, w)): the model cannot take it."""
    new_h, new_w = preprocess_shape(height, width, long_side)
    if min(new_h, new_w) < 1:
        raise InvalidInput(
            f"{what}: {width}x{height} is too elongated for this model: with its long side resized to "
            f"{long_side} px the short side would be {min(new_h, new_w)} px; the long side may be at most "
            f"{2 * long_side} times the short side"
        )


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == long_side; PIL bilinear, which is
    what torchvision's resize does for the PIL image ResizeLongestSide.apply_image builds."""
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def to_model_input(resized: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (1, 3, S, S) float32: normalized, then zero-padded bottom/right (Sam.preprocess)."""
    h, w = resized.shape[:2]
    out = np.zeros((1, 3, img_size, img_size), dtype=np.float32)
    region = out[0, :, :h, :w]
    region[...] = resized.transpose(2, 0, 1)  # uint8 -> float32, exactly
    # (x - mean) / std in float32, in place: the same two roundings as the expression, without
    # its temporaries (a sixth of the time)
    np.subtract(region, np.asarray(pixel_mean, dtype=np.float32).reshape(3, 1, 1), out=region)
    np.divide(region, np.asarray(pixel_std, dtype=np.float32).reshape(3, 1, 1), out=region)
    return out


def preprocess(
    image: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray
) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((1, 3, S, S) float32 encoder input, (h, w) resized size)."""
    resized = resize_longest_side(image, img_size)
    return to_model_input(resized, img_size, pixel_mean, pixel_std), (resized.shape[0], resized.shape[1])


def resize_square(image: np.ndarray, img_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32 on the 0-1 scale, as SAM2Transforms computes it:
    ToTensor (/255 in float32), then torchvision's Resize((S, S)) of a tensor (bilinear with
    antialias: when shrinking, a triangle filter widened by the scale). PIL's bilinear resize of
    a float ("F") image is that filter (torch's antialiased kernel follows PIL's), computed in
    double precision: equal to torch's float32 to about 1e-6. The uint8 path would not be (PIL
    rounds to uint8 between its passes)."""
    chw = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    if chw.shape[1:] == (img_size, img_size):
        return chw  # torchvision returns an image of the size asked for unchanged
    out = np.empty((3, img_size, img_size), dtype=np.float32)
    for c in range(3):
        channel = Image.fromarray(np.ascontiguousarray(chw[c]), mode="F")
        out[c] = np.asarray(channel.resize((img_size, img_size), Image.BILINEAR))
    return out


def preprocess_sam2(
    image: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray
) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((1, 3, S, S) float32 encoder input, (S, S)): SAM2Transforms'
    resize, then Normalize with its mean/std on the 0-1 scale, in float32."""
    x = resize_square(image, img_size)  # a new array: normalised in place
    np.subtract(x, np.asarray(pixel_mean, dtype=np.float32).reshape(3, 1, 1), out=x)
    np.divide(x, np.asarray(pixel_std, dtype=np.float32).reshape(3, 1, 1), out=x)
    return x[None], (img_size, img_size)


def preprocess_for(family: str, image: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray):
    """The family's preprocessing: ((1, 3, S, S) float32, the resized (h, w))."""
    fn = preprocess_sam2 if family == "sam2" else preprocess
    return fn(image, img_size, pixel_mean, pixel_std)
