"""The SDK's side of samserve.v1.VideoTracking: a video session as an object.

with SamClient("127.0.0.1:50051") as c:
    session = c.video_session(video=open("clip.mp4", "rb").read())     # or frames=[jpeg bytes, ...]
    masks = session.add_prompt(0, object_id=1, points=[(210, 350)], labels=[1])  # {object_id: ObjectMask}
    for frame in session.propagate():
        print(frame.frame_index, {k: m.mask.sum() for k, m in frame.objects.items()})
    session.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc

MODES = {"window": pb.SESSION_MODE_WINDOW, "full": pb.SESSION_MODE_FULL}
DIRECTIONS = {"forward": pb.DIRECTION_FORWARD, "backward": pb.DIRECTION_BACKWARD, "both": pb.DIRECTION_BOTH}


@dataclass(frozen=True)
class ObjectMask:
    mask: np.ndarray  # (H, W) bool at the video's size
    object_score: float  # the object score logit: > 0 judged present
    box: tuple[float, float, float, float]  # x0, y0, x1, y1; zeros when the mask is empty
    has_output: bool


@dataclass(frozen=True)
class FrameResult:
    frame_index: int
    objects: dict[int, ObjectMask]  # by object id, in the session's order


def frame_from_pb(r: pb.VideoFrameResult) -> FrameResult:
    from samserve.client.sdk import decode_mask

    return FrameResult(
        r.frame_index,
        {
            o.object_id: ObjectMask(
                decode_mask(o.mask), o.object_score, (o.box.x0, o.box.y0, o.box.x1, o.box.y1), o.has_output
            )
            for o in r.objects
        },
    )


class VideoSession:
    """One session of a VideoTracking service (made by SamClient.video_session)."""

    def __init__(self, stub: pb_grpc.VideoTrackingStub, info: pb.VideoSession, timeout_s, metadata) -> None:
        self.stub, self.info, self.timeout_s, self.metadata = stub, info, timeout_s, metadata
        self.session_id = info.session_id

    def _call(self, name: str, request, timeout: float | None = None):
        return getattr(self.stub, name)(request, timeout=timeout or self.timeout_s, metadata=self.metadata)

    def add_frames(self, frames: Iterable[bytes]) -> pb.VideoSession:
        """Appends image frames (encoded bytes), in order."""

        def requests() -> Iterator[pb.AddFramesRequest]:
            yield pb.AddFramesRequest(session_id=self.session_id)
            for f in frames:
                yield pb.AddFramesRequest(image=f)

        self.info = self.stub.AddFrames(requests(), timeout=None, metadata=self.metadata)
        return self.info

    def add_prompt(
        self,
        frame_index: int,
        object_id: int,
        points: Iterable[tuple[float, float]] = (),
        labels: Iterable[int] = (),
        box: tuple[float, float, float, float] | None = None,
        keep_old_points: bool = False,
    ) -> FrameResult:
        req = pb.AddPromptRequest(
            session_id=self.session_id, frame_index=frame_index, object_id=object_id, keep_old_points=keep_old_points
        )
        req.points.extend(pb.Point(x=x, y=y, label=lab) for (x, y), lab in zip(points, labels, strict=True))
        if box is not None:
            req.box.CopyFrom(pb.Box(x0=box[0], y0=box[1], x1=box[2], y1=box[3]))
        return frame_from_pb(self._call("AddPrompt", req))

    def propagate(
        self,
        start_frame: int | None = None,
        direction: str = "forward",
        max_frames: int | None = None,
        object_ids: Iterable[int] = (),
    ) -> Iterator[FrameResult]:
        """Each tracked frame as it comes; closing the iterator early cancels the propagation."""
        req = pb.PropagateRequest(
            session_id=self.session_id, direction=DIRECTIONS[direction], object_ids=list(object_ids)
        )
        if start_frame is not None:
            req.start_frame = start_frame
        if max_frames is not None:
            req.max_frames = max_frames
        call = self.stub.Propagate(req, timeout=None, metadata=self.metadata)
        try:
            for r in call:
                yield frame_from_pb(r)
        finally:
            call.cancel()

    def cancel(self) -> pb.VideoSession:
        return self._call("CancelPropagation", pb.VideoSessionRef(session_id=self.session_id))

    def remove_object(self, object_id: int) -> list[FrameResult]:
        r = self._call("RemoveObject", pb.RemoveObjectRequest(session_id=self.session_id, object_id=object_id))
        self.info = r.session
        return [frame_from_pb(f) for f in r.frames]

    def clear_prompts(self, frame_index: int | None = None, object_id: int | None = None) -> list[FrameResult]:
        req = pb.ClearPromptsRequest(session_id=self.session_id)
        if frame_index is not None:
            req.frame_index = frame_index
        if object_id is not None:
            req.object_id = object_id
        r = self._call("ClearPrompts", req)
        self.info = r.session
        return [frame_from_pb(f) for f in r.frames]

    def reset(self) -> pb.VideoSession:
        self.info = self._call("ResetSession", pb.VideoSessionRef(session_id=self.session_id))
        return self.info

    def refresh(self) -> pb.VideoSession:
        self.info = self._call("GetSession", pb.VideoSessionRef(session_id=self.session_id))
        return self.info

    def close(self) -> bool:
        return self._call("CloseSession", pb.VideoSessionRef(session_id=self.session_id)).existed


def start_session(
    stub: pb_grpc.VideoTrackingStub,
    timeout_s: float | None,
    metadata,
    video: bytes | None = None,
    frames: Iterable[bytes] | None = None,
    model: str = "",
    mode: str = "window",
) -> VideoSession:
    """A session of a video file, or of image frames (added now when given), or empty."""
    if video is not None and frames is not None:
        raise ValueError("give a video file or frames, not both")
    req = pb.StartVideoSessionRequest(model=model, mode=MODES[mode], video=video or b"")
    info = stub.StartVideoSession(req, timeout=None if video else timeout_s, metadata=metadata)
    session = VideoSession(stub, info, timeout_s, metadata)
    if frames is not None:
        session.add_frames(frames)
    return session
