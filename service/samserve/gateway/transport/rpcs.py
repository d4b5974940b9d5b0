"""samserve.v1's RPCs as request message -> response message over the engine: the one
translation both transports (gRPC, HTTP/JSON) call, so validation and results are the same."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from samserve.gateway.deadline import Deadline
from samserve.gateway.engine import SamEngine
from samserve.gateway.transport import messages
from samserve.gateway.transport.status import RpcFailure
from samserve.v1 import samserve_pb2 as pb


class Rpcs:
    def __init__(self, engine: SamEngine) -> None:
        self.engine = engine

    def model_label(self, request) -> Callable[[], str]:
        """For run_rpc: the request's model, as the metrics name it ("" for ListModels)."""
        if "model" not in request.DESCRIPTOR.fields_by_name:
            return str
        return lambda: self.engine.model_label(request.model or None)

    async def Embed(self, request: pb.EmbedRequest, deadline: Deadline) -> pb.EmbedResponse:
        result = await self.engine.embed(request.image, request.return_embedding, deadline, request.model or None)
        return messages.embed_response(result)

    async def Segment(self, request: pb.SegmentRequest, deadline: Deadline) -> pb.SegmentResponse:
        fmt = messages.mask_format(request.mask_format)
        tolerance = messages.polygon_tolerance(request.polygon_tolerance, fmt)
        s = self.engine.settings
        prompts = messages.prompts_from_pb(request.prompts, s.max_prompts_per_request, s.max_points_per_prompt)
        source = request.WhichOneof("image_source")
        result = await self.engine.segment(
            image=request.image if source == "image" else None,
            image_id=request.image_id if source == "image_id" else None,
            prompts=prompts,
            multimask_output=request.multimask_output if request.HasField("multimask_output") else True,
            fmt=fmt,
            return_logits=request.return_low_res_logits,
            deadline=deadline,
            model_name=request.model or None,
            polygon_tolerance=tolerance,
            keep_logits=request.keep_low_res_logits,
        )
        return messages.segment_response(result, fmt)

    @staticmethod
    def _amg_arguments(request: pb.GenerateMasksRequest, deadline: Deadline) -> dict:
        """GenerateMasks' request as the engine's arguments (the unary call's and the stream's)."""
        fmt = messages.mask_format(request.output_format)
        source = request.WhichOneof("image_source")
        return {
            "image": request.image if source == "image" else None,
            "image_id": request.image_id if source == "image_id" else None,
            "opts": messages.amg_options_from_pb(request.options),
            "fmt": fmt,
            "deadline": deadline,
            "model_name": request.model or None,
            "polygon_tolerance": messages.polygon_tolerance(request.polygon_tolerance, fmt),
        }

    async def GenerateMasks(self, request: pb.GenerateMasksRequest, deadline: Deadline) -> pb.GenerateMasksResponse:
        arguments = self._amg_arguments(request, deadline)
        result = await self.engine.generate_masks(**arguments)
        return messages.generate_response(result, arguments["fmt"])

    async def generate_masks_stream(
        self, request: pb.GenerateMasksRequest, deadline: Deadline
    ) -> AsyncIterator[pb.GenerateMasksResponse]:
        arguments = self._amg_arguments(request, deadline)
        fmt = arguments["fmt"]
        chunks = self.engine.generate_masks_stream(**arguments)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield messages.generate_response(chunk, fmt)

    async def embed_many(
        self,
        requests: AsyncIterable[pb.EmbedRequest],
        deadline: Deadline,
        run: Callable[[Awaitable, pb.EmbedRequest], Awaitable[pb.EmbedResponse]],
    ) -> AsyncIterator[pb.EmbedManyResult]:
        """EmbedMany over any transport: requests are read only while fewer than
        embed_many_window images are in flight (the rest waits in the client: backpressure),
        each runs as an Embed under `run` (run_rpc: admission, metrics, status), and results
        come out in the order sent, each as soon as it and those before it are done."""
        s = self.engine.settings
        # each image in flight takes a request slot: a window over the gateway's limit would
        # only refuse its own images
        window = asyncio.Semaphore(min(s.embed_many_window, s.max_concurrent_requests, s.max_requests_per_client))
        order: asyncio.Queue[asyncio.Future | None] = asyncio.Queue()

        async def one(index: int, request: pb.EmbedRequest) -> pb.EmbedManyResult:
            try:
                embedded = await run(self.Embed(request, deadline), request)
            except RpcFailure as failure:
                return pb.EmbedManyResult(index=index, status=failure.code.name, message=failure.message)
            return pb.EmbedManyResult(index=index, status="OK", embedded=embedded)

        async def read() -> None:
            index = 0
            try:
                async for request in requests:
                    await window.acquire()
                    await order.put(asyncio.ensure_future(one(index, request)))
                    index += 1
            finally:
                await order.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await order.get()) is not None:
                result = await task
                window.release()
                yield result
            await reader  # a broken request stream ends the call with its error
        finally:
            reader.cancel()
            while not order.empty():
                task = order.get_nowait()
                if task is not None:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def ListModels(self, request: pb.ListModelsRequest, deadline: Deadline) -> pb.ListModelsResponse:
        models, default = await self.engine.models()
        return messages.list_models_response(models, default)
