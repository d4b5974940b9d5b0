"""samserve.v1.SegmentAnything over gRPC: each method runs the shared RPC (transport/rpcs.py)
under run_rpc and turns a failure into the call's status."""

from __future__ import annotations

import asyncio
import contextlib

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
    def __init__(self, rpcs: Rpcs, metrics: Metrics, admission: Admission, write_timeout_s: float = 30.0) -> None:
        self.rpcs = rpcs
        self.write_timeout_s = write_timeout_s
        self.metrics = metrics
        self.admission = admission

    async def GenerateMasksStream(self, request, context: grpc.aio.ServicerContext):
        chunks = self.rpcs.generate_masks_stream(request, Deadline(context.time_remaining()))
        stream = run_stream("GenerateMasksStream", chunks, self.metrics, self.admission, self.rpcs.model_label(request))
        try:
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    # a client that stops reading gives its slot back after stream_write_timeout_s
                    await asyncio.wait_for(context.write(chunk), self.write_timeout_s)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the client read nothing for {self.write_timeout_s:g} s (stream_write_timeout_s)",
            )

    async def EmbedMany(self, request_iterator, context: grpc.aio.ServicerContext):
        def run(work, request):
            return run_rpc("EmbedMany", work, self.metrics, self.admission, self.rpcs.model_label(request))

        results = self.rpcs.embed_many(request_iterator, Deadline(context.time_remaining()), run)
        async with contextlib.aclosing(results):
            async for result in results:
                yield result

    Embed = _method("Embed")
    Segment = _method("Segment")
    GenerateMasks = _method("GenerateMasks")
    ListModels = _method("ListModels")
