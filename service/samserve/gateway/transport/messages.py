"""samserve.v1 messages <-> the core's and the engine's plain types."""

from __future__ import annotations

import math

import numpy as np

from samserve.contract import ModelInfo
from samserve.core.amg_options import AmgOptions
from samserve.core.errors import InvalidInput
from samserve.core.mask_formats import MaskFormat
from samserve.core.polygons import MAX_TOLERANCE
from samserve.core.prompts import Prompt, check_counts
from samserve.gateway.engine import EmbedResult, GenerateResult, PromptOutput, SegmentResult
from samserve.v1 import samserve_pb2 as pb

MASK_FORMATS = {
    pb.MASK_FORMAT_UNSPECIFIED: MaskFormat.COCO_RLE,
    pb.MASK_FORMAT_COCO_RLE: MaskFormat.COCO_RLE,
    pb.MASK_FORMAT_UNCOMPRESSED_RLE: MaskFormat.UNCOMPRESSED_RLE,
    pb.MASK_FORMAT_PNG: MaskFormat.PNG,
    pb.MASK_FORMAT_PACKED_BITS: MaskFormat.PACKED_BITS,
    pb.MASK_FORMAT_POLYGONS: MaskFormat.POLYGONS,
}


def mask_format(value: int) -> MaskFormat:
    try:
        return MASK_FORMATS[value]
    except KeyError:
        allowed = ", ".join(pb.MaskFormat.Name(v) for v in MASK_FORMATS)
        raise InvalidInput(f"mask_format: unknown value {value}; allowed {allowed}") from None


def polygon_tolerance(value: float, fmt: MaskFormat, field: str = "polygon_tolerance") -> float:
    if not math.isfinite(value) or not 0 <= value <= MAX_TOLERANCE:
        raise InvalidInput(f"{field}: {value} pixels; allowed 0..{MAX_TOLERANCE:g}")
    if value and fmt is not MaskFormat.POLYGONS:
        raise InvalidInput(f"{field}: only for MASK_FORMAT_POLYGONS, the format asked is {fmt.name}")
    return float(value)


def _mask_input(m: pb.MaskInput, field: str) -> np.ndarray:
    if m.height <= 0 or m.width <= 0:
        raise InvalidInput(f"{field}: height and width must be positive, got {m.height}x{m.width}")
    expected = m.height * m.width * 4
    if len(m.data) != expected:
        raise InvalidInput(
            f"{field}.data: {len(m.data)} bytes; {m.height}x{m.width} float32 logits need {expected} bytes"
        )
    return np.frombuffer(m.data, dtype="<f4").reshape(m.height, m.width).astype(np.float32)


def prompts_from_pb(prompts, max_prompts: int, max_points: int) -> list[Prompt]:
    """The request's prompts as the core's type, counts checked first: a request with millions
    of points is refused before any of them becomes a Python object (the event loop stays free)."""
    check_counts(prompts, max_prompts, max_points)
    return [prompt_from_pb(p, i) for i, p in enumerate(prompts)]


def prompt_from_pb(p: pb.Prompt, index: int) -> Prompt:
    points = np.array([[pt.x, pt.y] for pt in p.points], dtype=np.float64).reshape(-1, 2)
    labels = np.array([pt.label for pt in p.points], dtype=np.int64)
    box = np.array([p.box.x0, p.box.y0, p.box.x1, p.box.y1], dtype=np.float64) if p.HasField("box") else None
    mask = _mask_input(p.mask_input, f"prompts[{index}].mask_input") if p.HasField("mask_input") else None
    if mask is not None and p.mask_input_id:
        raise InvalidInput(f"prompts[{index}]: set mask_input or mask_input_id, not both")
    return Prompt(points, labels, box, mask, p.mask_input_id or None)


def size_pb(size: tuple[int, int]) -> pb.ImageSize:
    return pb.ImageSize(height=size[0], width=size[1])


def embed_response(r: EmbedResult) -> pb.EmbedResponse:
    out = pb.EmbedResponse(
        image_id=r.image_id,
        original_size=size_pb(r.original_size),
        input_size=size_pb(r.input_size),
        cached=r.cached,
        model_id=r.model_id,
    )
    if r.embedding is not None:
        out.embedding.data = np.ascontiguousarray(r.embedding, dtype="<f2").tobytes()
        out.embedding.shape.extend(int(d) for d in r.embedding.shape)
        out.embedding.dtype = "float16"
    return out


def mask_pb(payload, fmt: MaskFormat, size: tuple[int, int]) -> pb.Mask:
    m = pb.Mask(height=size[0], width=size[1])
    if fmt is MaskFormat.COCO_RLE:
        m.coco_rle.size.extend(payload["size"])
        m.coco_rle.counts = payload["counts"]
    elif fmt is MaskFormat.UNCOMPRESSED_RLE:
        m.uncompressed_rle.size.extend(size)
        m.uncompressed_rle.counts.extend(payload)
    elif fmt is MaskFormat.PNG:
        m.png = payload
    elif fmt is MaskFormat.POLYGONS:
        m.polygons.SetInParent()  # set even when the mask is empty (no parts)
        for part in payload:
            m.polygons.parts.add(
                exterior=pb.Ring(xy=part.exterior.tolist()), holes=[pb.Ring(xy=h.tolist()) for h in part.holes]
            )
    else:
        m.packed_bits = payload
    return m


def _prompt_result(o: PromptOutput, fmt: MaskFormat, size: tuple[int, int]) -> pb.PromptResult:
    r = pb.PromptResult(
        masks=[mask_pb(m, fmt, size) for m in o.masks],
        iou_predictions=o.iou_predictions.tolist(),
        low_res_logits_ids=o.low_res_logits_ids or [],
    )
    if o.low_res_logits is not None:
        for logits in o.low_res_logits:
            r.low_res_logits.add(
                data=np.ascontiguousarray(logits, dtype="<f4").tobytes(),
                height=logits.shape[0],
                width=logits.shape[1],
            )
    return r


def segment_response(r: SegmentResult, fmt: MaskFormat) -> pb.SegmentResponse:
    return pb.SegmentResponse(
        image_id=r.image_id,
        original_size=size_pb(r.original_size),
        cached=r.cached,
        results=[_prompt_result(o, fmt, r.original_size) for o in r.outputs],
    )


def amg_options_from_pb(o: pb.AmgOptions) -> AmgOptions:
    """Set fields override the reference's defaults; AmgOptions.validate() checks ranges."""
    given = {f.name: getattr(o, f.name) for f in o.DESCRIPTOR.fields if o.HasField(f.name)}
    return AmgOptions(**given)


def generate_response(r: GenerateResult, fmt: MaskFormat) -> pb.GenerateMasksResponse:
    out = pb.GenerateMasksResponse(image_id=r.image_id, original_size=size_pb(r.original_size), cached=r.cached)
    for rec in r.records:
        out.masks.add(
            segmentation=mask_pb(rec.segmentation, fmt, r.original_size),
            bbox=rec.bbox,
            area=rec.area,
            predicted_iou=rec.predicted_iou,
            stability_score=rec.stability_score,
            point_coords=[pb.PointXY(x=x, y=y) for x, y in rec.point_coords],
            crop_box=rec.crop_box,
        )
    return out


def list_models_response(models: list[ModelInfo], default: str) -> pb.ListModelsResponse:
    """What each served model takes and returns: every family served today takes SAM's prompts
    and returns its outputs, and any embedding can be returned."""
    return pb.ListModelsResponse(
        default_model=default,
        models=[
            pb.ModelDescription(
                name=m.name,
                model_id=m.model_id,
                family=m.family,
                model_type=m.model_type,
                input_size=size_pb((m.img_size, m.img_size)),
                prompts=["points", "box", "mask_input"],
                outputs=["masks", "iou_predictions", "low_res_logits", "generate_masks"],
                returns_embeddings=True,
                is_default=m.name == default,
                precision=m.precision,
                runtime=m.runtime,
                tracks_video=m.can_track,
            )
            for m in models
        ],
    )
