"""Decoding client images into the HWC uint8 RGB arrays SamPredictor.set_image expects."""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samserve.core.errors import InvalidInput, Overloaded

# Pillow's own bomb check is replaced by the configured limit (checked before decoding).
Image.MAX_IMAGE_PIXELS = None


def image_sha256(data: bytes) -> str:
    """The image_id: sha256 of the encoded bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, max_pixels: int, min_side: int = 8) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB, after EXIF orientation.

    Grayscale, RGBA, 16-bit and palette images are converted as `PIL.Image.convert("RGB")`
    does. Raises InvalidInput (undecodable, truncated, too small) or Overloaded (more than
    `max_pixels` pixels; checked from the header, before any pixel is decoded)."""
    if not data:
        raise InvalidInput("image: empty bytes; send an encoded image (PNG, JPEG, WebP, TIFF, BMP, GIF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise Overloaded(f"image: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels")
            if min(w, h) < min_side:
                raise InvalidInput(f"image: {w}x{h} is too small; both sides must be at least {min_side} pixels")
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"))
    except (InvalidInput, Overloaded):
        raise
    except UnidentifiedImageError:
        raise InvalidInput(
            f"image: cannot identify an image format in {len(data)} bytes; "
            "send an encoded image (PNG, JPEG, WebP, TIFF, BMP, GIF)"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"image: cannot decode ({exc}); the file may be truncated or corrupt") from None
    return np.ascontiguousarray(rgb)
