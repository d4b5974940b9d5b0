"""samserve.v1.SegmentAnything: translate messages and delegate to the engine."""

from __future__ import annotations

import grpc

from samserve.gateway.deadline import Deadline
from samserve.gateway.engine import SamEngine
from samserve.gateway.metrics import Metrics
from samserve.gateway.transport import messages
from samserve.gateway.transport.status import Admission, rpc
from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc


class SegmentAnythingServicer(pb_grpc.SegmentAnythingServicer):
    def __init__(self, engine: SamEngine, metrics: Metrics, max_concurrent: int) -> None:
        self.engine = engine
        self.metrics = metrics
        self.admission = Admission(max_concurrent)

    @rpc("Embed")
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        result = await self.engine.embed(
            request.image, request.return_embedding, Deadline(context.time_remaining()), request.model or None
        )
        return messages.embed_response(result)

    @rpc("Segment")
    async def Segment(self, request: pb.SegmentRequest, context: grpc.aio.ServicerContext) -> pb.SegmentResponse:
        fmt = messages.mask_format(request.mask_format)
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
            deadline=Deadline(context.time_remaining()),
            model_name=request.model or None,
        )
        return messages.segment_response(result, fmt)

    @rpc("GenerateMasks")
    async def GenerateMasks(
        self, request: pb.GenerateMasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateMasksResponse:
        fmt = messages.mask_format(request.output_format)
        opts = messages.amg_options_from_pb(request.options)
        result = await self.engine.generate_masks(
            request.image, opts, fmt, Deadline(context.time_remaining()), request.model or None
        )
        return messages.generate_response(result, fmt)

    @rpc("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        models, default = await self.engine.models()
        return messages.list_models_response(models, default)
