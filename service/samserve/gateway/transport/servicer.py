"""samserve.v1.SegmentAnything over gRPC: each method runs the shared RPC (transport/rpcs.py)
under run_rpc and turns a failure into the call's status."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from samserve.gateway.deadline import Deadline
from samserve.gateway.metrics import Metrics
from samserve.gateway.request_id import CLIENT, client_key, grpc_address
from samserve.gateway.transport.auth import authorization
from samserve.gateway.transport.rpcs import Rpcs
from samserve.gateway.transport.status import Admission, RpcFailure, run_rpc, run_stream
from samserve.v1 import samserve_pb2_grpc as pb_grpc


async def write_stream(context: grpc.aio.ServicerContext, stream, metrics: Metrics, idle_s: float) -> None:
    """A server stream's messages written as they come; its failure as the call's status. A
    client that stops reading gives its slot back after idle_s (stream_idle_timeout_s)."""
    try:
        async with contextlib.aclosing(stream):
            async for message in stream:
                await asyncio.wait_for(context.write(message), idle_s)
    except RpcFailure as failure:
        await context.abort(failure.code, failure.message)
    except TimeoutError:
        metrics.stalled_clients.labels("grpc").inc()
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"the client read nothing for {idle_s:g} s (stream_idle_timeout_s)"
        )


def _method(name: str):
    async def handle(self: SegmentAnythingServicer, request, context: grpc.aio.ServicerContext):
        self._identify(context)
        work = getattr(self.rpcs, name)(request, Deadline(context.time_remaining()))
        try:
            return await run_rpc(name, work, self.metrics, self.admission, self.rpcs.model_label(request))
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)

    handle.__name__ = name
    return handle


class SegmentAnythingServicer(pb_grpc.SegmentAnythingServicer):
    def __init__(
        self,
        rpcs: Rpcs,
        metrics: Metrics,
        admission: Admission,
        idle_s: float = 30.0,
        max_s: float | None = None,
        by_token: bool = False,
    ) -> None:
        self.rpcs = rpcs
        self.idle_s = idle_s
        self.max_s = max_s
        self.by_token = by_token
        self.metrics = metrics
        self.admission = admission

    def _identify(self, context: grpc.aio.ServicerContext) -> None:
        """The client whose share of the slots this RPC takes: its (checked) token, else its address."""
        token = None
        if self.by_token:
            token = authorization(context.invocation_metadata()).removeprefix("Bearer ").strip() or None
        CLIENT.set(client_key(token, grpc_address(context.peer() or "")))

    async def GenerateMasksStream(self, request, context: grpc.aio.ServicerContext):
        self._identify(context)
        chunks = self.rpcs.generate_masks_stream(request, Deadline(context.time_remaining()))
        label = self.rpcs.model_label(request)
        stream = run_stream("GenerateMasksStream", chunks, self.metrics, self.admission, label, self.max_s)
        await write_stream(context, stream, self.metrics, self.idle_s)

    async def EmbedMany(self, request_iterator, context: grpc.aio.ServicerContext):
        self._identify(context)

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
