"""Video frames: the encoder input equals SAM2VideoPredictor's frame tensor bit for bit, and video
files decode within their limits (bad and hostile files are clear errors, never a crash)."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from PIL import Image

from samserve.core.errors import InvalidInput, Overloaded
from samserve.core.video_preprocess import preprocess_video_frame
from samserve.gateway.video_file import VideoLimits, decode_frames, probe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the video predictor's defaults


def frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Moving shapes on a textured background: frames that differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        f = base.copy()
        y, x = (h // 4 + 2 * i) % h, (w // 4 + 3 * i) % w
        f[y : y + h // 3, x : x + w // 3] = (200, 40 + 10 * i % 200, 90)
        out.append(f)
    return out


def video(frames_: list[np.ndarray], fmt: str = "mp4", codec: str = "mpeg4") -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=10)
        s.height, s.width = frames_[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.bit_rate = 20_000_000  # near lossless: decoded frames stay near their sources
        for f in frames_:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return buf.getvalue()


@pytest.mark.parametrize("size", [(48, 64), (300, 200), (1024, 1024), (37, 511)], ids=str)
def test_a_frame_is_the_reference_frame_tensor_bit_for_bit(tmp_path, size):
    """Against sam2's own loader of a folder of JPEG frames (resize, /255, mean/std)."""
    import torch
    from sam2.utils.misc import load_video_frames_from_jpg_images

    s = 256
    fs = frames(3, *size)
    for i, f in enumerate(fs):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.jpg", quality=90)
    ref, h, w = load_video_frames_from_jpg_images(
        str(tmp_path), s, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    assert (h, w) == size
    for i in range(len(fs)):
        rgb = np.asarray(Image.open(tmp_path / f"{i:05d}.jpg").convert("RGB"))
        got = preprocess_video_frame(rgb, s, np.array(MEAN), np.array(STD))
        assert got.dtype == np.float32 and got.shape == (1, 3, s, s)
        np.testing.assert_array_equal(got[0], ref[i].numpy())
    assert not np.array_equal(ref[0].numpy(), ref[1].numpy())  # the frames differ: not vacuous


def test_a_frame_must_be_rgb_uint8():
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess_video_frame(np.zeros((8, 8), np.uint8), 64, np.array(MEAN), np.array(STD))


def test_an_mp4_decodes_to_its_frames():
    src = frames(7, 48, 64)
    data = video(src)
    info = probe(data, VideoLimits())
    assert (info.width, info.height, info.frames) == (64, 48, 7)
    got = list(decode_frames(data, VideoLimits()))
    assert len(got) == 7 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in got)
    # lossy, but each decoded frame is nearest its own source
    err = np.array([[np.abs(g.astype(int) - s.astype(int)).mean() for s in src] for g in got])
    assert (err.argmin(axis=1) == np.arange(7)).all()


def test_over_the_limits_is_refused_from_the_header_before_decoding():
    data = video(frames(5, 48, 64))
    with pytest.raises(Overloaded, match="5 frames exceeds the limit of 3"):
        probe(data, VideoLimits(max_frames=3))
    with pytest.raises(Overloaded, match="pixels exceed the limit"):
        next(decode_frames(data, VideoLimits(max_pixels=64 * 47)))
    with pytest.raises(Overloaded, match="bytes exceeds"):
        probe(data, VideoLimits(max_bytes=len(data) - 1))
    with pytest.raises(Overloaded, match="s exceeds the limit"):
        probe(data, VideoLimits(max_duration_s=0.1))


def test_a_header_that_says_no_frame_count_is_stopped_at_the_limit_while_decoding():
    """An MPEG-TS stream does not say how many frames it holds: counted as decoded."""
    data = video(frames(6, 48, 64), fmt="mpegts", codec="mpeg2video")
    assert probe(data, VideoLimits()).frames is None
    got = []
    with pytest.raises(Overloaded, match="more than 4 frames"):
        for f in decode_frames(data, VideoLimits(max_frames=4)):
            got.append(f)
    assert len(got) == 4


def wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 1000,
        np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        "truncated",
        "audio only",
    ],
    ids=["empty", "zeros", "noise", "truncated", "audio-only"],
)
def test_a_file_that_is_not_a_video_is_invalid_input(data):
    if data == "truncated":
        data = video(frames(5, 48, 64))[:600]
    elif data == "audio only":
        data = wav()
    with pytest.raises(InvalidInput):
        list(decode_frames(data, VideoLimits()))
