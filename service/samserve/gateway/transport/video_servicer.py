"""samserve.v1.VideoTracking over gRPC: each method runs the shared RPC (transport/video_rpcs.py)
under the same admission, metrics and status mapping as the image service."""

from __future__ import annotations

import grpc

from samserve.gateway.deadline import Deadline
from samserve.gateway.metrics import Metrics
from samserve.gateway.transport.servicer import write_stream
from samserve.gateway.transport.status import Admission, RpcFailure, run_rpc, run_stream
from samserve.gateway.transport.video_rpcs import VideoRpcs
from samserve.v1 import samserve_pb2_grpc as pb_grpc


def _method(name: str):
    async def handle(self: VideoTrackingServicer, request, context: grpc.aio.ServicerContext):
        self.identify(context)
        work = getattr(self.rpcs, name)(request, Deadline(context.time_remaining()))
        try:
            return await run_rpc(name, work, self.metrics, self.admission)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)

    handle.__name__ = name
    return handle


class VideoTrackingServicer(pb_grpc.VideoTrackingServicer):
    def __init__(self, rpcs: VideoRpcs, metrics: Metrics, admission: Admission, identify, idle_s: float) -> None:
        """identify(context): whose share of the request slots a call takes (the image servicer's)."""
        self.rpcs, self.metrics, self.admission = rpcs, metrics, admission
        self.identify, self.idle_s = identify, idle_s

    async def AddFrames(self, request_iterator, context: grpc.aio.ServicerContext):
        self.identify(context)
        work = self.rpcs.AddFrames(request_iterator, Deadline(context.time_remaining()))
        try:
            return await run_rpc("AddFrames", work, self.metrics, self.admission)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)

    async def Propagate(self, request, context: grpc.aio.ServicerContext):
        """Frames as they are tracked; a client that cancels stops the tracking within a frame (the
        stream's generator is closed, which cancels the model call in flight)."""
        self.identify(context)
        frames = self.rpcs.Propagate(request, Deadline(context.time_remaining()))
        stream = run_stream("Propagate", frames, self.metrics, self.admission)
        await write_stream(context, stream, self.metrics, self.idle_s)

    StartVideoSession = _method("StartVideoSession")
    AddPrompt = _method("AddPrompt")
    CancelPropagation = _method("CancelPropagation")
    RemoveObject = _method("RemoveObject")
    ClearPrompts = _method("ClearPrompts")
    ResetSession = _method("ResetSession")
    GetSession = _method("GetSession")
    CloseSession = _method("CloseSession")
