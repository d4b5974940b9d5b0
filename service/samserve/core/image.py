"""Decoding client images into the HWC uint8 RGB arrays SamPredictor.set_image expects."""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from samserve.core.errors import InvalidInput, Overloaded

# Only these Pillow plugins ever see client bytes. Others (ICO, ICNS, PSD, EPS, ...) decode
# inside Image.open, before any size check, or run external programs.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
ACCEPTED = "PNG, JPEG, WebP, TIFF, BMP or GIF"
# Pillow's own decompression-bomb guard stays on beneath the configured limit (which is checked
# first, from the header): it refuses any image over 2 x this many pixels whatever a plugin does.
PILLOW_PIXEL_GUARD = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS
MAX_CONFIGURABLE_PIXELS = 2 * PILLOW_PIXEL_GUARD
Image.MAX_IMAGE_PIXELS = PILLOW_PIXEL_GUARD
# 16-bit grayscale: scaled to 8 bits as cv2.imread does (value >> 8), not clipped
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# 32-bit integer and floating-point pixels have no one 8-bit meaning: refused, not guessed
UNMAPPABLE = {"I": "32-bit integer", "F": "32-bit floating-point", "I;32": "32-bit integer"}


def image_sha256(data: bytes) -> str:
    """The image_id: sha256 of the encoded bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def _check_size(w: int, h: int, max_pixels: int, min_side: int) -> None:
    if w * h > max_pixels:
        raise Overloaded(f"image: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels")
    if min(w, h) < min_side:
        raise InvalidInput(f"image: {w}x{h} is too small; both sides must be at least {min_side} pixels")


def _check_mode(mode: str) -> None:
    if mode in UNMAPPABLE:
        raise InvalidInput(
            f"image: pixel mode {mode} ({UNMAPPABLE[mode]}) has no unambiguous 8-bit mapping; send 8-bit or "
            "16-bit RGB, RGBA or grayscale"
        )


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in SIXTEEN_BIT:
        gray = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def decode_image(data: bytes, max_pixels: int, min_side: int = 8) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB, after EXIF orientation.

    Accepts ACCEPTED_FORMATS only; an animated GIF/WebP or a multi-page TIFF gives its first
    frame. Grayscale, RGBA and palette images are converted as `PIL.Image.convert("RGB")` does;
    16-bit images keep their high byte (cv2.imread's 8-bit mapping); 32-bit integer and float
    images are refused. Raises InvalidInput (undecodable, truncated, too small, refused format or
    mode) or Overloaded (more than `max_pixels` pixels: checked from the header before any pixel
    is decoded, and again after decoding)."""
    if not data:
        raise InvalidInput(f"image: empty bytes; send an encoded {ACCEPTED} image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            _check_size(*img.size, max_pixels, min_side)
            _check_mode(img.mode)
            img.load()  # the first frame of an animation or a multi-page TIFF
            _check_size(*img.size, max_pixels, min_side)
            _check_mode(img.mode)
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except (InvalidInput, Overloaded):
        raise
    except UnidentifiedImageError:
        raise InvalidInput(
            f"image: cannot identify a {ACCEPTED} image in {len(data)} bytes (other formats are not "
            f"accepted); send an encoded {ACCEPTED} image"
        ) from None
    except Image.DecompressionBombError as exc:
        raise Overloaded(f"image: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"image: cannot decode ({exc}); the file may be truncated or corrupt") from None
    if rgb.shape[0] * rgb.shape[1] > max_pixels:
        raise Overloaded(f"image: decoded to {rgb.shape[1]}x{rgb.shape[0]} pixels, over the limit of {max_pixels}")
    return np.ascontiguousarray(rgb)
