"""samserve.v1's RPCs as request message -> response message over the engine: the one
translation both transports (gRPC, HTTP/JSON) call, so validation and results are the same."""

from __future__ import annotations

from samserve.gateway.deadline import Deadline
from samserve.gateway.engine import SamEngine
from samserve.gateway.transport import messages
from samserve.v1 import samserve_pb2 as pb


class Rpcs:
    def __init__(self, engine: SamEngine) -> None:
        self.engine = engine

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
        )
        return messages.segment_response(result, fmt)

    async def GenerateMasks(self, request: pb.GenerateMasksRequest, deadline: Deadline) -> pb.GenerateMasksResponse:
        fmt = messages.mask_format(request.output_format)
        tolerance = messages.polygon_tolerance(request.polygon_tolerance, fmt)
        opts = messages.amg_options_from_pb(request.options)
        result = await self.engine.generate_masks(request.image, opts, fmt, deadline, request.model or None, tolerance)
        return messages.generate_response(result, fmt)

    async def ListModels(self, request: pb.ListModelsRequest, deadline: Deadline) -> pb.ListModelsResponse:
        models, default = await self.engine.models()
        return messages.list_models_response(models, default)
