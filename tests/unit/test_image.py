"""Image decoding: EXIF orientation and mode conversion as PIL does them; clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from samserve.core.errors import InvalidInput, Overloaded
from samserve.core.image import decode_image
from samserve.devtools.sample_images import synthetic_image


def save(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    arr = synthetic_image(40, 60, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = save(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=100)
    out = decode_image(data, 10**8)
    assert out.shape == (60, 40, 3)
    expected = np.asarray(Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK", "1"])
def test_modes_convert_as_pil_does(mode):
    base = Image.fromarray(synthetic_image(30, 20, 1))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    else:
        img = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    data = save(img, fmt)
    out = decode_image(data, 10**8)
    assert out.shape == (30, 20, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_limits():
    data = save(Image.fromarray(synthetic_image(30, 20, 1)))
    with pytest.raises(Overloaded, match="600 pixels exceeds the limit of 599"):
        decode_image(data, 599)
    with pytest.raises(InvalidInput, match="at least 21 pixels"):
        decode_image(data, 10**8, min_side=21)
