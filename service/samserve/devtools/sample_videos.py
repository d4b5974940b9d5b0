"""Deterministic sample videos for tests and benchmarks: shapes that move, cross and occlude
one another over a textured background, so a tracker has something to follow (and lose)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from samserve.devtools.sample_images import synthetic_image


def _scene(height: int, width: int, seed: int):
    rng = np.random.default_rng(seed)
    background = synthetic_image(height, width, seed)
    shapes = []
    for k in range(3):
        size = rng.uniform(0.15, 0.3, 2) * (height, width)
        start = rng.uniform(0.1, 0.6, 2) * (height, width)
        end = rng.uniform(0.3, 0.9, 2) * (height, width)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shapes.append((size, start, end, colour, k % 2 == 0))
    return background, shapes


def moving_shapes(frames: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """(H, W, 3) uint8 frames: three shapes on straight paths (the later ones drawn over the
    earlier: they occlude each other where they cross) over a fixed background."""
    background, shapes = _scene(height, width, seed)
    out = []
    for t in range(frames):
        img = Image.fromarray(background.copy())
        draw = ImageDraw.Draw(img)
        for shape in shapes:
            size, _, _, colour, round_ = shape
            cx, cy = _centre(shape, frames, t)
            box = [cx - size[1] / 2, cy - size[0] / 2, cx + size[1] / 2, cy + size[0] / 2]
            (draw.ellipse if round_ else draw.rectangle)(box, fill=colour)
        out.append(np.asarray(img))
    return out


def shape_centre(frames: int, height: int, width: int, seed: int, shape: int, t: int) -> tuple[float, float]:
    """(x, y) of shape `shape` (0-2) of moving_shapes(frames, height, width, seed) on frame t."""
    return _centre(_scene(height, width, seed)[1][shape], frames, t)


def _centre(shape, frames: int, t: int) -> tuple[float, float]:
    _, start, end, _, _ = shape
    cy, cx = start + t / max(frames - 1, 1) * (end - start)
    return float(cx), float(cy)


def write_jpeg_frames(frames: list[np.ndarray], directory: Path, quality: int = 95) -> Path:
    """The layout SAM2VideoPredictor.init_state reads: <index>.jpg in one folder."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(directory / f"{i:05d}.jpg", quality=quality)
    return directory


def mp4(frames: list[np.ndarray], fps: int = 10, codec: str = "mpeg4") -> bytes:
    """The frames as an MP4 file (PyAV), lossy as any real video is."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
