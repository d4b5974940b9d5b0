"""samserve.v1.VideoTracking's RPCs as request message -> response message over the video
sessions (gateway/video/sessions.py), for every transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from samserve.core.errors import InvalidInput, NotFound
from samserve.core.mask_formats import MaskFormat
from samserve.core.video_tracking import FrameMasks
from samserve.gateway.deadline import Deadline
from samserve.gateway.transport import messages
from samserve.gateway.video.results import object_masks
from samserve.gateway.video.session_store import FULL, WINDOW
from samserve.gateway.video.sessions import BACKWARD, BOTH, FORWARD, FrameIn, SessionView, VideoSessions
from samserve.v1 import samserve_pb2 as pb

MODES = {pb.SESSION_MODE_UNSPECIFIED: WINDOW, pb.SESSION_MODE_WINDOW: WINDOW, pb.SESSION_MODE_FULL: FULL}
MODE_PB = {WINDOW: pb.SESSION_MODE_WINDOW, FULL: pb.SESSION_MODE_FULL}
DIRECTIONS = {
    pb.DIRECTION_UNSPECIFIED: FORWARD,
    pb.DIRECTION_FORWARD: FORWARD,
    pb.DIRECTION_BACKWARD: BACKWARD,
    pb.DIRECTION_BOTH: BOTH,
}


def _enum(table: dict, value: int, field: str, enum) -> str:
    try:
        return table[value]
    except KeyError:
        raise InvalidInput(
            f"{field}: unknown value {value}; allowed {', '.join(enum.Name(v) for v in table)}"
        ) from None


class VideoRpcs:
    def __init__(self, sessions: VideoSessions) -> None:
        self.sessions = sessions
        self.settings = sessions.settings

    def session_pb(self, v: SessionView) -> pb.VideoSession:
        s = self.settings
        return pb.VideoSession(
            session_id=v.session_id,
            model_id=v.model_id,
            mode=MODE_PB[v.mode],
            num_frames=v.num_frames,
            video_size=messages.size_pb((v.height, v.width)),
            object_ids=v.object_ids,
            bytes_held=v.bytes_held,
            expires_at_unix=v.expires_unix,
            limits=pb.VideoSessionLimits(
                max_frames=s.video_max_frames,
                max_objects=s.video_max_objects,
                max_bytes=s.video_max_session_bytes,
                max_points_per_prompt=s.max_points_per_prompt,
            ),
            frame_ids=v.frame_ids,
        )

    async def _frame_pb(
        self, masks: FrameMasks, view: SessionView, fmt: MaskFormat, tolerance: float, only: set[int] | None
    ) -> pb.VideoFrameResult:
        size = (view.height, view.width)
        non_overlap = self.sessions.non_overlap(view.model_id)
        objs = await self.sessions.run_cpu(object_masks, masks, size, fmt, tolerance, non_overlap, only)
        return pb.VideoFrameResult(
            frame_index=masks.frame_idx,
            objects=[
                pb.VideoObjectMask(
                    object_id=o.object_id,
                    mask=messages.mask_pb(o.mask, fmt, size),
                    object_score=o.score,
                    box=pb.Box(x0=o.box[0], y0=o.box[1], x1=o.box[2], y1=o.box[3]),
                    has_output=o.has_output,
                )
                for o in objs
            ],
        )

    async def StartVideoSession(self, request: pb.StartVideoSessionRequest, deadline: Deadline) -> pb.VideoSession:
        mode = _enum(MODES, request.mode, "mode", pb.SessionMode)
        view = await self.sessions.start(request.model or None, mode, request.video or None, deadline)
        return self.session_pb(view)

    async def AddFrames(self, requests: AsyncIterator[pb.AddFramesRequest], deadline: Deadline) -> pb.VideoSession:
        first = await anext(aiter(requests), None)
        if first is None or not first.session_id:
            raise InvalidInput("AddFrames: the first message must name the session (session_id)")
        session_id = first.session_id

        async def frames() -> AsyncIterator[FrameIn]:
            request = first
            while request is not None:
                if request.session_id and request.session_id != session_id:
                    raise InvalidInput("AddFrames: every message must name the first message's session, or none")
                which = request.WhichOneof("frame")
                if which is not None:
                    yield FrameIn(image=request.image) if which == "image" else FrameIn(frame_id=request.frame_id)
                request = await anext(requests, None)

        return self.session_pb(await self.sessions.add_frames(session_id, frames(), deadline))

    async def AddPrompt(self, request: pb.AddPromptRequest, deadline: Deadline) -> pb.VideoFrameResult:
        fmt = messages.mask_format(request.mask_format)
        tolerance = messages.polygon_tolerance(request.polygon_tolerance, fmt)
        if len(request.points) > self.settings.max_points_per_prompt:
            raise InvalidInput(f"{len(request.points)} points, over max_points_per_prompt")
        points = labels = None
        if request.points:
            points = np.array([[p.x, p.y] for p in request.points], np.float64)
            labels = np.array([p.label for p in request.points], np.int64)
        box = None
        if request.HasField("box"):
            b = request.box
            box = np.array([b.x0, b.y0, b.x1, b.y1], np.float64)
        masks, view = await self.sessions.add_prompt(
            request.session_id,
            request.frame_index,
            request.object_id,
            points,
            labels,
            box,
            not request.keep_old_points,
            deadline,
        )
        return await self._frame_pb(masks, view, fmt, tolerance, None)

    async def Propagate(self, request: pb.PropagateRequest, deadline: Deadline) -> AsyncIterator[pb.VideoFrameResult]:
        fmt = messages.mask_format(request.mask_format)
        tolerance = messages.polygon_tolerance(request.polygon_tolerance, fmt)
        direction = _enum(DIRECTIONS, request.direction, "direction", pb.Direction)
        start = request.start_frame if request.HasField("start_frame") else None
        max_frames = request.max_frames if request.HasField("max_frames") else None
        only = set(request.object_ids) or None
        view = await self.sessions.get(request.session_id)
        if only is not None and (unknown := sorted(only - set(view.object_ids))):
            raise NotFound(
                f"object_ids {unknown} are not in video session {view.session_id} (objects: {view.object_ids})"
            )
        async for masks in self.sessions.propagate(request.session_id, start, direction, max_frames, deadline):
            yield await self._frame_pb(masks, view, fmt, tolerance, only)

    async def CancelPropagation(self, request: pb.VideoSessionRef, deadline: Deadline) -> pb.VideoSession:
        return self.session_pb(await self.sessions.cancel(request.session_id))

    async def _frames_pb(self, frames: list[FrameMasks], view: SessionView) -> pb.VideoFrameResults:
        results = [await self._frame_pb(f, view, MaskFormat.COCO_RLE, 0.0, None) for f in frames]
        return pb.VideoFrameResults(frames=results, session=self.session_pb(view))

    async def RemoveObject(self, request: pb.RemoveObjectRequest, deadline: Deadline) -> pb.VideoFrameResults:
        frames, view = await self.sessions.remove_object(request.session_id, request.object_id, deadline)
        return await self._frames_pb(frames, view)

    async def ClearPrompts(self, request: pb.ClearPromptsRequest, deadline: Deadline) -> pb.VideoFrameResults:
        frame = request.frame_index if request.HasField("frame_index") else None
        obj = request.object_id if request.HasField("object_id") else None
        frames, view = await self.sessions.clear_prompts(request.session_id, frame, obj, deadline)
        return await self._frames_pb(frames, view)

    async def ResetSession(self, request: pb.VideoSessionRef, deadline: Deadline) -> pb.VideoSession:
        return self.session_pb(await self.sessions.reset(request.session_id))

    async def GetSession(self, request: pb.VideoSessionRef, deadline: Deadline) -> pb.VideoSession:
        return self.session_pb(await self.sessions.get(request.session_id))

    async def CloseSession(self, request: pb.VideoSessionRef, deadline: Deadline) -> pb.CloseVideoSessionResponse:
        return pb.CloseVideoSessionResponse(existed=await self.sessions.close(request.session_id))
