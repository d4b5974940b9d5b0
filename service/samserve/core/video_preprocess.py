"""A video frame's encoder input, as SAM2VideoPredictor makes it (sam2.utils.misc).

Not the image predictor's transform: `_load_img_as_tensor` resizes the uint8 RGB frame to
S x S with PIL's default filter for RGB images (bicubic), divides by 255 in float64, and
`load_video_frames_from_jpg_images` stores that in float32, then subtracts the mean and divides
by the standard deviation in float32, in place. A frame's embedding is therefore its own cache
entry, under its own preprocessing version."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

# Bumped whenever this preprocessing output changes: part of a video frame's cache key.
VIDEO_PREPROCESS_VERSION = "video-1"


def preprocess_video_frame(
    frame: np.ndarray, img_size: int, pixel_mean: np.ndarray, pixel_std: np.ndarray
) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, S, S) float32, bit for bit the reference's frame tensor.

    pixel_mean / pixel_std on the 0-1 scale (the video predictor's defaults are ImageNet's)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a video frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    resized = np.asarray(Image.fromarray(frame).resize((img_size, img_size), Image.BICUBIC))
    x = np.empty((1, 3, img_size, img_size), dtype=np.float32)
    x[0] = (resized / 255.0).transpose(2, 0, 1)  # float64 quotient, stored as float32
    np.subtract(x, np.asarray(pixel_mean, dtype=np.float32).reshape(1, 3, 1, 1), out=x)
    np.divide(x, np.asarray(pixel_std, dtype=np.float32).reshape(1, 3, 1, 1), out=x)
    return x


def frame_sha256(frame: np.ndarray) -> str:
    """A decoded frame's id (a video file's frames have no bytes of their own): sha256 over its
    shape and its RGB bytes, hex. Equal frames, from any file, share their cache entries."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a video frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    h = hashlib.sha256(b"rgb24 %d %d\n" % frame.shape[:2])
    h.update(np.ascontiguousarray(frame).data)
    return h.hexdigest()
