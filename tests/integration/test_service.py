"""The gRPC API end to end: Embed, Segment, formats, health, reflection, batching."""

from __future__ import annotations

import concurrent.futures as cf
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from samserve.client import PromptSpec, SamClient, decode_mask
from samserve.devtools.sample_images import png_image
from samserve.v1 import samserve_pb2 as pb


def test_health_reports_serving(gateway):
    with grpc.insecure_channel(gateway.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        deadline = time.monotonic() + 10
        for service in ("", "samserve.v1.SegmentAnything"):
            while (status := stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status) != (
                health_pb2.HealthCheckResponse.SERVING
            ) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_the_services(gateway):
    with grpc.insecure_channel(gateway.target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"samserve.v1.SegmentAnything", "grpc.health.v1.Health"} <= names


def test_embed_returns_id_sizes_and_fp16_embedding(client, small_sam, served_model_id, fresh_seed):
    import hashlib

    data = png_image(300, 451, fresh_seed)
    r = client.embed(data, return_embedding=True)
    assert r.image_id == hashlib.sha256(data).hexdigest()
    assert (r.original_size.height, r.original_size.width) == (300, 451)
    assert (r.input_size.height, r.input_size.width) == (170, 256)  # longest side S=256
    assert r.model_id == served_model_id == f"{small_sam.model_id}-cpu-fp32"
    assert r.embedding.dtype == "float16" and list(r.embedding.shape) == [1, 256, 16, 16]
    emb = np.frombuffer(r.embedding.data, dtype="<f2").reshape(1, 256, 16, 16)
    assert np.isfinite(emb).all() and emb.astype(np.float32).std() > 0
    assert not client.embed(data).HasField("embedding")


def test_embedding_matches_reference_encoder(client, small_sam, fresh_seed):
    import torch
    from segment_anything import SamPredictor

    from samserve.devtools.sample_images import encode, synthetic_image

    img = synthetic_image(240, 320, fresh_seed)
    r = client.embed(encode(img), return_embedding=True)
    served = np.frombuffer(r.embedding.data, dtype="<f2").reshape(1, 256, 16, 16).astype(np.float32)
    p = SamPredictor(small_sam.sam)
    with torch.no_grad():
        p.set_image(img)
    ref = p.features.numpy()
    assert np.abs(served - ref).max() <= 2e-3 * max(1.0, np.abs(ref).max())  # fp16 rounding only


@pytest.mark.parametrize(
    "fmt",
    [
        pb.MASK_FORMAT_COCO_RLE,
        pb.MASK_FORMAT_UNCOMPRESSED_RLE,
        pb.MASK_FORMAT_PNG,
        pb.MASK_FORMAT_PACKED_BITS,
    ],
    ids=["coco_rle", "uncompressed_rle", "png", "packed_bits"],
)
def test_every_mask_format_encodes_the_same_masks(stub, fresh_seed, fmt):
    data = png_image(123, 77, 7)
    prompt = pb.Prompt(points=[pb.Point(x=30, y=60, label=1)])
    ref = stub.Segment(pb.SegmentRequest(image=data, prompts=[prompt], mask_format=pb.MASK_FORMAT_PACKED_BITS))
    got = stub.Segment(pb.SegmentRequest(image=data, prompts=[prompt], mask_format=fmt))
    assert len(got.results[0].masks) == 3
    for a, b in zip(got.results[0].masks, ref.results[0].masks, strict=True):
        assert a.WhichOneof("data") == {1: "coco_rle", 2: "uncompressed_rle", 3: "png", 4: "packed_bits"}[fmt]
        assert (a.height, a.width) == (123, 77)
        np.testing.assert_array_equal(decode_mask(a), decode_mask(b))


def test_coco_rle_decodes_with_pycocotools(stub):
    from pycocotools import mask as mask_utils

    data = png_image(200, 150, 8)
    r = stub.Segment(
        pb.SegmentRequest(
            image=data,
            prompts=[pb.Prompt(points=[pb.Point(x=70, y=90, label=1)])],
            mask_format=pb.MASK_FORMAT_COCO_RLE,
        )
    )
    for m in r.results[0].masks:
        decoded = mask_utils.decode({"size": list(m.coco_rle.size), "counts": m.coco_rle.counts.encode()})
        np.testing.assert_array_equal(decoded.astype(bool), decode_mask(m))
        assert mask_utils.area({"size": list(m.coco_rle.size), "counts": m.coco_rle.counts.encode()}) == decoded.sum()


def test_segment_by_image_id_equals_segment_by_bytes(client, fresh_seed):
    data = png_image(180, 260, fresh_seed)
    image_id = client.embed(data).image_id
    prompt = PromptSpec(points=[(100, 90)], labels=[1], box=(20, 20, 200, 170))
    by_id = client.segment(image_id=image_id, prompts=[prompt])
    by_bytes = client.segment(data, [prompt])
    assert by_id.cached and by_bytes.cached and by_id.image_id == image_id
    np.testing.assert_array_equal(by_id.prompts[0].masks, by_bytes.prompts[0].masks)
    np.testing.assert_array_equal(by_id.prompts[0].iou_predictions, by_bytes.prompts[0].iou_predictions)


def test_concurrent_decoder_requests_are_batched_by_triton(gateway, triton_stats):
    """Requests from several clients reach sam_decoder in fewer executions than requests."""
    images = [png_image(160, 200, 50 + i) for i in range(4)]
    with SamClient(gateway.target) as c:
        for img in images:
            c.embed(img)  # cached: only the decoder runs below
    before = triton_stats.counts("sam_decoder")

    def one(i: int) -> int:
        with SamClient(gateway.target) as c:
            seg = c.segment(images[i % 4], [PromptSpec(points=[(20 + i, 30)], labels=[1])])
            return len(seg.prompts)

    n = 32
    with cf.ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(one, range(n))) == n
    inferences, executions = (a - b for a, b in zip(triton_stats.counts("sam_decoder"), before, strict=True))
    assert inferences == n
    assert executions < inferences, f"{executions} executions for {inferences} requests: no batching"


def test_client_deadline_is_honoured(stub, fresh_seed):
    data = png_image(900, 900, fresh_seed)
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(
            pb.SegmentRequest(image=data, prompts=[pb.Prompt(points=[pb.Point(x=1, y=1, label=1)])]),
            timeout=0.001,
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_metrics_count_requests_and_cache(gateway, client, fresh_seed):
    data = png_image(100, 100, fresh_seed)
    ok_before = gateway.metric("samserve_requests_total", {"method": "Embed", "code": "OK"})
    miss_before = gateway.metric("samserve_cache_total", {"result": "miss"})
    hit_before = gateway.metric("samserve_cache_total", {"result": "hit"})
    client.embed(data)
    client.embed(data)
    assert gateway.metric("samserve_requests_total", {"method": "Embed", "code": "OK"}) == ok_before + 2
    assert gateway.metric("samserve_cache_total", {"result": "miss"}) == miss_before + 1
    assert gateway.metric("samserve_cache_total", {"result": "hit"}) == hit_before + 1
    assert gateway.metric("samserve_request_seconds_count", {"method": "Embed", "code": "OK"}) >= 2
