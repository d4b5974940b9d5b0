"""A video file (MP4, WebM, anything FFmpeg demuxes) to RGB frames, with PyAV, bounded.

The limits are checked from the container's header before any frame is decoded (frame count,
duration, frame size), and again while decoding, because a header can lie: a file that claims
10 frames and holds 100 000 is stopped at the limit, never decoded to the end. A file FFmpeg
cannot read, one without a video stream, or one whose frames change size is InvalidInput; one
over a limit is Overloaded (RESOURCE_EXHAUSTED). Frames come out one at a time (a generator):
the caller embeds each and keeps none.

The reference's own file loader (sam2.utils.misc.load_video_frames_from_video_file) decodes
with decord and lets decord resize; the service decodes each frame to full-size RGB here and
preprocesses it as the reference does its JPEG frames (core.video_preprocess), so an MP4 and
the same frames as lossless images give the same masks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from samserve.core.errors import InvalidInput, Overloaded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 512 << 20
    max_frames: int = 2000
    max_pixels: int = 4096 * 2160  # a frame's
    max_duration_s: float = 3600.0


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int | None  # as the header says (None: not said)
    duration_s: float | None
    codec: str


def _open(data: bytes, limits: VideoLimits):
    import av

    if len(data) > limits.max_bytes:
        raise Overloaded(f"video: {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidInput(f"video: not a video file FFmpeg can read ({exc})") from None


def probe(data: bytes, limits: VideoLimits) -> VideoInfo:
    """The header's facts, refused over the limits before any frame is decoded."""
    with _open(data, limits) as container:
        return _checked_info(container, limits)


def _checked_info(container, limits: VideoLimits) -> VideoInfo:
    if not container.streams.video:
        raise InvalidInput("video: the file has no video stream")
    stream = container.streams.video[0]
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise InvalidInput("video: the video stream does not say its frame size")
    if width * height > limits.max_pixels:
        raise Overloaded(
            f"video: frames of {width}x{height} = {width * height} pixels exceed the limit of {limits.max_pixels}"
        )
    frames = int(stream.frames) or None
    if frames is not None and frames > limits.max_frames:
        raise Overloaded(f"video: {frames} frames exceeds the limit of {limits.max_frames} frames")
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1e6  # AV_TIME_BASE
    if duration is not None and duration > limits.max_duration_s:
        raise Overloaded(f"video: {duration:.1f} s exceeds the limit of {limits.max_duration_s:.0f} s")
    return VideoInfo(width, height, frames, duration, stream.codec_context.name)


def decode_frames(data: bytes, limits: VideoLimits) -> Iterator[np.ndarray]:
    """The file's frames in order, each (H, W, 3) uint8 RGB, within the limits."""
    import av

    with _open(data, limits) as container:
        info = _checked_info(container, limits)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (info.width, info.height):
                    raise InvalidInput(
                        f"video: frame {n} is {frame.width}x{frame.height}, the stream said {info.width}x{info.height}"
                    )
                n += 1
                if n > limits.max_frames:
                    raise Overloaded(f"video: more than {limits.max_frames} frames (the limit)")
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise InvalidInput(f"video: frame {n} cannot be decoded ({exc})") from None
        if n == 0:
            raise InvalidInput("video: the video stream holds no decodable frame")
