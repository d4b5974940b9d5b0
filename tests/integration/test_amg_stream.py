"""GenerateMasksStream: the unary call's records, in order, in messages of bounded size; no
limit on the whole answer; over gRPC and HTTP (NDJSON); errors before the first message are
the call's status."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from google.protobuf import json_format

from samserve.client import SamClient
from samserve.core.mask_formats import MaskFormat, payload_bytes
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from samserve.gateway.transport.http_json import to_json
from samserve.v1 import samserve_pb2 as pb

OPTIONS = {
    "points_per_side": 8,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}  # no NMS: every mask kept
CHUNK = 16 * 1024


@pytest.fixture(scope="module")
def tight(triton_server, redis_server):
    """16 KiB stream messages, and a 1 MiB limit on a whole (unary) answer."""
    gw = GatewayThread(
        gateway_settings(
            triton_server.grpc_url, redis_server.url, amg_stream_chunk_bytes=CHUNK, max_response_bytes=1 << 20
        )
    )
    yield gw
    gw.stop()


def test_the_stream_holds_the_unary_records_in_bounded_messages(client, tight):
    image = png_image(200, 260, 91)
    unary = client.generate_masks_pb(image, output_format=pb.MASK_FORMAT_PACKED_BITS, **OPTIONS)
    assert len(unary.masks) > 40  # over 1 MiB as one answer on the tight gateway
    with SamClient(tight.target, timeout_s=120) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.generate_masks_pb(image, output_format=pb.MASK_FORMAT_PACKED_BITS, **OPTIONS)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "GenerateMasksStream" in err.value.details()
        chunks = list(c.generate_masks_stream(image, output_format=pb.MASK_FORMAT_PACKED_BITS, **OPTIONS))
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.image_id == unary.image_id and chunk.original_size == unary.original_size
        sizes = [payload_bytes(m.segmentation.packed_bits, MaskFormat.PACKED_BITS) + 64 for m in chunk.masks]
        assert len(sizes) == 1 or sum(sizes) <= CHUNK
    assert [m for chunk in chunks for m in chunk.masks] == list(unary.masks)


def test_over_http_each_line_is_a_chunk(gateway, tight, stub):
    image = png_image(200, 260, 91)
    fields = {"options": OPTIONS, "output_format": "MASK_FORMAT_POLYGONS"}
    want = to_json(stub.GenerateMasks(json_format.ParseDict(fields, pb.GenerateMasksRequest(image=image)), timeout=120))
    schema = httpx.get(tight.http_url + "/openapi.json").json()
    files = {"image": image}
    url = tight.http_url + "/v1/generate_masks_stream"
    with httpx.stream("POST", url, files=files, data={"request": json.dumps(fields)}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) > 1
    for line in lines:
        ref = {"$ref": "#/components/schemas/GenerateMasksResponse", "components": schema["components"]}
        __import__("jsonschema").validate(line, ref)
    assert [m for line in lines for m in line["masks"]] == want["masks"]


def test_errors_before_the_first_message_are_the_calls_status(tight):
    with SamClient(tight.target, timeout_s=60) as c, pytest.raises(grpc.RpcError) as err:
        list(c.generate_masks_stream(png_image(64, 64, 93), points_per_side=0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "points_per_side" in err.value.details()
    r = httpx.post(tight.http_url + "/v1/generate_masks_stream", json={"image_id": "ab" * 32}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    ok = {"method": "GenerateMasksStream", "code": "INVALID_ARGUMENT"}
    assert tight.metric("samserve_requests_total", ok) >= 1
