"""samserve.v1.SegmentAnything over gRPC: each method runs the shared RPC (transport/rpcs.py)
under run_rpc and turns a failure into the call's status."""

from __future__ import annotations

import grpc

from samserve.gateway.deadline import Deadline
from samserve.gateway.metrics import Metrics
from samserve.gateway.transport.rpcs import Rpcs
from samserve.gateway.transport.status import Admission, RpcFailure, run_rpc, run_stream
from samserve.v1 import samserve_pb2_grpc as pb_grpc


def _method(name: str):
    async def handle(self: SegmentAnythingServicer, request, context: grpc.aio.ServicerContext):
        work = getattr(self.rpcs, name)(request, Deadline(context.time_remaining()))
        try:
            return await run_rpc(name, work, self.metrics, self.admission, self.rpcs.model_label(request))
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)

    handle.__name__ = name
    return handle


class SegmentAnythingServicer(pb_grpc.SegmentAnythingServicer):
    def __init__(self, rpcs: Rpcs, metrics: Metrics, admission: Admission) -> None:
        self.rpcs = rpcs
        self.metrics = metrics
        self.admission = admission

    async def GenerateMasksStream(self, request, context: grpc.aio.ServicerContext):
        chunks = self.rpcs.generate_masks_stream(request, Deadline(context.time_remaining()))
        stream = run_stream("GenerateMasksStream", chunks, self.metrics, self.admission, self.rpcs.model_label(request))
        try:
            async for chunk in stream:
                yield chunk
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)

    async def EmbedMany(self, request_iterator, context: grpc.aio.ServicerContext):
        def run(work, request):
            return run_rpc("EmbedMany", work, self.metrics, self.admission, self.rpcs.model_label(request))

        async for result in self.rpcs.embed_many(request_iterator, Deadline(context.time_remaining()), run):
            yield result

    Embed = _method("Embed")
    Segment = _method("Segment")
    GenerateMasks = _method("GenerateMasks")
    ListModels = _method("ListModels")
