"""A small synchronous Python client for samserve.v1.SegmentAnything.

with SamClient("127.0.0.1:50051") as c:
    seg = c.segment(open("dog.jpg", "rb").read(), [PromptSpec(points=[(500, 375)], labels=[1])])
    best = seg.prompts[0].mask(seg.prompts[0].iou_predictions.argmax())   # (H, W) bool
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np

from samserve.core.mask_formats import packed_bits_to_mask, png_to_mask
from samserve.core.polygons import PolygonPart, polygons_to_mask
from samserve.core.rle import coco_rle_to_mask, counts_to_mask
from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc


@dataclass
class PromptSpec:
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    mask_input: np.ndarray | None = None  # (L, L) float32 low-res logits
    mask_input_id: str | None = None  # or logits kept by an earlier segment(keep_low_res_logits=True)

    def to_pb(self) -> pb.Prompt:
        p = pb.Prompt(
            points=[pb.Point(x=x, y=y, label=lab) for (x, y), lab in zip(self.points, self.labels, strict=True)]
        )
        if self.box is not None:
            p.box.CopyFrom(pb.Box(x0=self.box[0], y0=self.box[1], x1=self.box[2], y1=self.box[3]))
        if self.mask_input is not None:
            m = np.ascontiguousarray(self.mask_input, dtype="<f4")
            p.mask_input.CopyFrom(pb.MaskInput(data=m.tobytes(), height=m.shape[0], width=m.shape[1]))
        if self.mask_input_id:
            p.mask_input_id = self.mask_input_id
        return p


@dataclass
class PromptMasks:
    """One prompt's results. Its masks are decoded from the API's format when first used:
    `masks` (all, (C, H, W) bool) or `mask(i)` (one, (H, W) bool): a client that looks at the
    IoU predictions and one mask does not pay for the others."""

    encoded: list  # the API's masks (pb.Mask), as they came
    iou_predictions: np.ndarray  # (C,) float32
    low_res_logits: np.ndarray | None  # (C, L, L) float32
    polygons: list[list[PolygonPart]] | None = None  # per mask, with MASK_FORMAT_POLYGONS
    low_res_logits_ids: list[str] | None = None  # per mask, with keep_low_res_logits
    _decoded: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def mask(self, i: int) -> np.ndarray:
        """Mask i, (H, W) bool (decoded once)."""
        i = int(i)
        if i not in self._decoded:
            self._decoded[i] = decode_mask(self.encoded[i])
        return self._decoded[i]

    @property
    def masks(self) -> np.ndarray:
        """Every mask, (C, H, W) bool."""
        return np.stack([self.mask(i) for i in range(len(self.encoded))])


@dataclass
class Segmentation:
    image_id: str
    original_size: tuple[int, int]
    cached: bool
    prompts: list[PromptMasks]


def polygons_of(m: pb.Mask) -> list[PolygonPart] | None:
    """A MASK_FORMAT_POLYGONS mask's parts (None for the other formats)."""
    if m.WhichOneof("data") != "polygons":
        return None
    return [
        PolygonPart(np.asarray(p.exterior.xy, dtype=np.int32), [np.asarray(h.xy, dtype=np.int32) for h in p.holes])
        for p in m.polygons.parts
    ]


def decode_mask(m: pb.Mask) -> np.ndarray:
    """Any API mask format -> (H, W) bool (polygons rasterised: exteriors filled, holes cleared)."""
    kind = m.WhichOneof("data")
    if kind == "polygons":
        return polygons_to_mask(polygons_of(m) or [], m.height, m.width)
    if kind == "coco_rle":
        return coco_rle_to_mask({"size": list(m.coco_rle.size), "counts": m.coco_rle.counts})
    if kind == "uncompressed_rle":
        return counts_to_mask(list(m.uncompressed_rle.counts), m.height, m.width)
    if kind == "png":
        return png_to_mask(m.png)
    if kind == "packed_bits":
        return packed_bits_to_mask(m.packed_bits, m.height, m.width)
    raise ValueError("mask without data")


def segmentation_from_pb(r: pb.SegmentResponse) -> Segmentation:
    prompts = []
    for res in r.results:
        logits = None
        if res.low_res_logits:
            logits = np.stack(
                [np.frombuffer(lr.data, dtype="<f4").reshape(lr.height, lr.width) for lr in res.low_res_logits]
            )
        prompts.append(
            PromptMasks(
                list(res.masks),
                np.asarray(res.iou_predictions, dtype=np.float32),
                logits,
                [polygons_of(m) for m in res.masks] if res.masks and polygons_of(res.masks[0]) is not None else None,
                list(res.low_res_logits_ids) or None,
            )
        )
    return Segmentation(r.image_id, (r.original_size.height, r.original_size.width), r.cached, prompts)


@dataclass
class AmgRecord:
    """A SamAutomaticMaskGenerator record, segmentation decoded to (H, W) bool."""

    segmentation: np.ndarray
    bbox: list[int]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[int]
    polygons: list[PolygonPart] | None = None  # with MASK_FORMAT_POLYGONS


def amg_records_from_pb(r: pb.GenerateMasksResponse) -> list[AmgRecord]:
    return [
        AmgRecord(
            decode_mask(m.segmentation),
            list(m.bbox),
            m.area,
            m.predicted_iou,
            m.stability_score,
            [[p.x, p.y] for p in m.point_coords],
            list(m.crop_box),
            polygons_of(m.segmentation),
        )
        for m in r.masks
    ]


def _amg_request(
    image: bytes | None, image_id: str | None, output_format: int, model: str, polygon_tolerance: float, options: dict
) -> pb.GenerateMasksRequest:
    """GenerateMasksRequest of the image's bytes, or else its image_id (the unary call's and the stream's)."""
    req = pb.GenerateMasksRequest(
        options=pb.AmgOptions(**options),
        output_format=output_format,
        model=model,
        polygon_tolerance=polygon_tolerance,
    )
    return with_image_source(req, image, image_id)


def with_image_source(req, image: bytes | None, image_id: str | None):
    """`req` (SegmentRequest, GenerateMasksRequest) with its image_source: the bytes, or else the id."""
    if image is not None:
        req.image = image
    else:
        req.image_id = image_id or ""
    return req


class SamClient:
    """token: sent as 'authorization: Bearer <token>'; root_certificates (PEM bytes) switch to
    TLS; certificate_chain + private_key add a client certificate (mutual TLS)."""

    def __init__(
        self,
        target: str,
        timeout_s: float | None = 120.0,
        max_message_bytes: int = 256 * 1024 * 1024,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ):
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata = [("authorization", f"Bearer {token}")] if token else None
        self.stub = pb_grpc.SegmentAnythingStub(self.channel)
        self.video = pb_grpc.VideoTrackingStub(self.channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SamClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def video_session(
        self,
        video: bytes | None = None,
        frames: Iterable[bytes] | None = None,
        model: str = "",
        mode: str = "window",
    ):
        """A video tracking session (samserve.client.video.VideoSession) of a video file (MP4,
        WebM, ...) or of image frames; mode "window" or "full" (README: Video tracking)."""
        from samserve.client.video import start_session

        return start_session(self.video, self.timeout_s, self.metadata, video, frames, model, mode)

    def list_models(self) -> pb.ListModelsResponse:
        return self.stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout_s, metadata=self.metadata)

    def embed(self, image: bytes, return_embedding: bool = False, model: str = "") -> pb.EmbedResponse:
        """model: a name of list_models(); "" is the deployment's default."""
        return self.stub.Embed(
            pb.EmbedRequest(image=image, return_embedding=return_embedding, model=model),
            timeout=self.timeout_s,
            metadata=self.metadata,
        )

    def embed_many(
        self, images: Iterable[bytes], window: int = 8, model: str = "", return_embedding: bool = False
    ) -> Iterator[pb.EmbedManyResult]:
        """EmbedMany: a result per image, in order, each with its own status. At most `window`
        images are sent ahead of their results (the server's own window may be smaller)."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        slots = threading.Semaphore(window)
        done = threading.Event()

        def requests():
            for data in images:
                slots.acquire()
                if done.is_set():
                    return
                yield pb.EmbedRequest(image=data, model=model, return_embedding=return_embedding)

        call = self.stub.EmbedMany(requests(), timeout=self.timeout_s, metadata=self.metadata)
        try:
            for result in call:
                slots.release()
                yield result
        finally:  # an error or a caller that stops: the sending thread must not wait for a slot
            done.set()
            slots.release(window)
            call.cancel()

    def segment(
        self,
        image: bytes | None = None,
        prompts: list[PromptSpec] | None = None,
        *,
        image_id: str | None = None,
        multimask_output: bool = True,
        mask_format: int = pb.MASK_FORMAT_COCO_RLE,
        return_low_res_logits: bool = False,
        model: str = "",
        polygon_tolerance: float = 0.0,
        keep_low_res_logits: bool = False,
    ) -> Segmentation:
        req = pb.SegmentRequest(
            prompts=[p.to_pb() for p in prompts or []],
            multimask_output=multimask_output,
            mask_format=mask_format,
            return_low_res_logits=return_low_res_logits,
            model=model,
            polygon_tolerance=polygon_tolerance,
            keep_low_res_logits=keep_low_res_logits,
        )
        with_image_source(req, image, image_id)
        return segmentation_from_pb(self.stub.Segment(req, timeout=self.timeout_s, metadata=self.metadata))

    def generate_masks_pb(
        self,
        image: bytes | None = None,
        output_format: int = pb.MASK_FORMAT_COCO_RLE,
        model: str = "",
        polygon_tolerance: float = 0.0,
        *,
        image_id: str | None = None,
        **options,
    ) -> pb.GenerateMasksResponse:
        """options: any SamAutomaticMaskGenerator option (points_per_side=..., ...); image_id
        (of embed()) instead of the bytes: no upload for a cached image."""
        req = _amg_request(image, image_id, output_format, model, polygon_tolerance, options)
        return self.stub.GenerateMasks(req, timeout=self.timeout_s, metadata=self.metadata)

    def generate_masks_stream(
        self,
        image: bytes | None = None,
        output_format: int = pb.MASK_FORMAT_COCO_RLE,
        model: str = "",
        polygon_tolerance: float = 0.0,
        *,
        image_id: str | None = None,
        **options,
    ) -> Iterator[pb.GenerateMasksResponse]:
        """GenerateMasksStream: generate_masks_pb's records in bounded chunks, as they are sent."""
        req = _amg_request(image, image_id, output_format, model, polygon_tolerance, options)
        yield from self.stub.GenerateMasksStream(req, timeout=self.timeout_s, metadata=self.metadata)

    def generate_masks(self, image: bytes | None = None, **options) -> list[AmgRecord]:
        return amg_records_from_pb(self.generate_masks_pb(image, **options))
