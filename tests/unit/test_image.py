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


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "1"])
def test_modes_convert_as_pil_does(mode):
    img = Image.fromarray(synthetic_image(30, 20, 1)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
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


def cv2_rgb(data: bytes) -> np.ndarray:
    """What users compare against: cv2.imread's 8-bit colour image, as RGB."""
    import cv2

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("channels", [1, 3, 4], ids=["gray16", "rgb16", "rgba16"])
def test_16_bit_png_scales_as_cv2_imread(channels):
    import cv2

    rng = np.random.default_rng(channels)
    arr = rng.integers(0, 65536, (24, 36, channels) if channels > 1 else (24, 36), dtype=np.uint16)
    arr.flat[0] = 30000  # the pixel: 30000 >> 8 = 117, not 255
    data = cv2.imencode(".png", arr)[1].tobytes()
    out = decode_image(data, 10**8)
    np.testing.assert_array_equal(out, cv2_rgb(data))
    if channels == 1:
        assert out[0, 0].tolist() == [117, 117, 117]


@pytest.mark.parametrize(
    "array, mode",
    [(np.full((16, 16), 100_000, np.int32), "I"), (np.full((16, 16), 0.5, np.float32), "F")],
    ids=["int32", "float32"],
)
def test_modes_without_an_8_bit_mapping_are_refused(array, mode):
    data = save(Image.fromarray(array), "TIFF")
    with pytest.raises(InvalidInput, match=f"pixel mode {mode} .* no unambiguous 8-bit mapping; send 8-bit or 16-bit"):
        decode_image(data, 10**8)


def ico_holding(png: bytes, declared: int = 16) -> bytes:
    """An ICO whose directory declares a `declared` px icon and which holds `png`."""
    import struct

    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", declared, declared, 0, 0, 1, 32, len(png), 22)
    return header + entry + png


@pytest.mark.parametrize(
    "data",
    [ico_holding(save(Image.new("L", (64, 64)))), b"8BPS" + b"\0" * 200, save(Image.new("RGB", (20, 20)), "ICNS")],
    ids=["ico", "psd_magic", "icns"],
)
def test_formats_outside_the_allow_list_are_refused_unopened(data):
    with pytest.raises(InvalidInput, match="other formats are not accepted"):
        decode_image(data, 10**8)


def test_pillows_own_bomb_guard_stays_on():
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(synthetic_image(20, 30, s)).convert("P") for s in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), 10**8)
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
