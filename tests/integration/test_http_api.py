"""The HTTP/JSON API against the real stack: every RPC answers as over gRPC (the same JSON of
the same messages), with gRPC's validation, messages and limits, statuses mapped to HTTP codes,
the OpenAPI schema true to the endpoints, and a client's disconnect stopping its work."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import grpc
import httpx
import jsonschema
import pytest
from google.protobuf import json_format

from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from samserve.gateway.transport.http_json import to_json
from samserve.v1 import samserve_pb2 as pb

FORMATS = ["MASK_FORMAT_COCO_RLE", "MASK_FORMAT_UNCOMPRESSED_RLE", "MASK_FORMAT_PNG", "MASK_FORMAT_PACKED_BITS"]
PROMPTS = [
    {"points": [{"x": 60, "y": 40, "label": 1}]},
    {
        "points": [{"x": 100, "y": 80, "label": 1}, {"x": 20, "y": 30, "label": 0}],
        "box": {"x0": 5, "y0": 6, "x1": 150, "y1": 120},
    },
]


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.http_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def schema(http) -> dict:
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    return doc


def conforms(schema: dict, name: str, value) -> None:
    """`value` against #/components/schemas/<name> of the served document."""
    jsonschema.validate(value, {"$ref": f"#/components/schemas/{name}", "components": schema["components"]})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def grpc_json(stub_call, request) -> dict:
    return to_json(stub_call(request, timeout=120))


def test_embed_as_json_and_as_upload_answers_as_grpc(http, stub, schema, fresh_seed):
    image = png_image(150, 230, fresh_seed)
    up = http.post("/v1/embed", files={"image": ("a.png", image, "image/png")}, data={"request": '{"model": ""}'})
    assert up.status_code == 200, up.text
    conforms(schema, "EmbedResponse", up.json())
    assert up.json()["cached"] is False
    want = grpc_json(stub.Embed, pb.EmbedRequest(image=image))
    assert want["cached"] is True
    assert {**up.json(), "cached": True} == want
    body = {"image": b64(image), "return_embedding": True}
    conforms(schema, "EmbedRequest", body)
    as_json = http.post("/v1/embed", json=body)
    assert as_json.status_code == 200
    conforms(schema, "EmbedResponse", as_json.json())
    assert as_json.json() == grpc_json(stub.Embed, pb.EmbedRequest(image=image, return_embedding=True))
    assert as_json.json()["embedding"]["dtype"] == "float16"


@pytest.mark.parametrize("fmt", [*FORMATS, "MASK_FORMAT_POLYGONS"])
def test_segment_answers_as_grpc_in_every_format(http, stub, schema, fmt):
    image = png_image(130, 170, 77)
    image_id = http.post("/v1/embed", json={"image": b64(image)}).json()["image_id"]
    body = {"image_id": image_id, "prompts": PROMPTS, "mask_format": fmt, "return_low_res_logits": True}
    conforms(schema, "SegmentRequest", body)
    r = http.post("/v1/segment", json=body)
    assert r.status_code == 200, r.text
    conforms(schema, "SegmentResponse", r.json())
    assert r.json() == grpc_json(stub.Segment, json_format.ParseDict(body, pb.SegmentRequest()))
    assert len(r.json()["results"]) == 2 and len(r.json()["results"][1]["masks"]) == 3


def test_generate_masks_and_list_models_answer_as_grpc(http, stub, schema):
    image = png_image(96, 128, 78)
    options = {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0}
    fields = {"options": options, "output_format": "MASK_FORMAT_POLYGONS", "polygon_tolerance": 0.5}
    r = http.post("/v1/generate_masks", files={"image": image}, data={"request": json.dumps(fields)})
    assert r.status_code == 200, r.text
    conforms(schema, "GenerateMasksResponse", r.json())
    req = json_format.ParseDict(fields, pb.GenerateMasksRequest(image=image))
    assert r.json()["masks"] and r.json()["masks"][0]["segmentation"]["polygons"]["parts"]
    assert {**r.json(), "cached": True} == grpc_json(stub.GenerateMasks, req)
    models = http.get("/v1/models")
    conforms(schema, "ListModelsResponse", models.json())
    assert models.json() == grpc_json(stub.ListModels, pb.ListModelsRequest())
    health = http.get("/v1/health")
    assert health.status_code == 200 and health.json() == {"status": "SERVING"}
    conforms(schema, "Health", health.json())


def _grpc_error(stub, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(request, timeout=60)
    return err.value.code(), err.value.details()


@pytest.mark.parametrize(
    "body, http_code",
    [
        ({"image_id": "ab" * 32, "prompts": PROMPTS}, 404),  # never embedded
        ({"image": b64(png_image(64, 64, 79)), "prompts": [{"points": [{"x": -1, "y": 3, "label": 1}]}]}, 400),
        ({"image": b64(png_image(64, 64, 79)), "prompts": []}, 400),
        ({"image": b64(b"not an image"), "prompts": PROMPTS}, 400),
        ({"image_id": "ab" * 32, "prompts": PROMPTS, "model": "nope"}, 404),
        ({"image_id": "ab" * 32, "prompts": PROMPTS, "mask_format": "MASK_FORMAT_PNG", "polygon_tolerance": 2}, 400),
        ({"image_id": "ab" * 32, "prompts": PROMPTS, "mask_format": 99}, 400),
    ],
    ids=[
        "unknown-image-id",
        "point-outside",
        "no-prompts",
        "undecodable",
        "unknown-model",
        "tolerance",
        "format",
    ],
)
def test_errors_are_grpcs_statuses_and_messages(http, stub, schema, body, http_code):
    code, details = _grpc_error(stub, json_format.ParseDict(body, pb.SegmentRequest()))
    r = http.post("/v1/segment", json=body)
    assert r.status_code == http_code
    conforms(schema, "Error", r.json())
    assert r.json()["error"] == {"code": http_code, "status": code.name, "message": details}


@pytest.mark.parametrize(
    "content, content_type, needle",
    [
        (b"{not json", "application/json", "not JSON"),
        (b"[1, 2]", "application/json", "a JSON object is expected"),
        (b'{"image_id": 3}', "application/json", "image_id"),
        (b'{"bogus": 1}', "application/json", "bogus"),
        (b'{"prompts": [' + b"{}," * 200_000 + b"{}]}", "application/json", "JSON separators"),
        (b"[" * 5000 + b"]" * 5000, "application/json", "not JSON"),
        (b"x=1", "application/x-www-form-urlencoded", "Content-Type"),
    ],
    ids=["syntax", "not-object", "type", "unknown-field", "structure-bomb", "deep", "content-type"],
)
def test_bodies_that_are_no_request_are_invalid_argument(http, schema, content, content_type, needle):
    started = time.perf_counter()
    r = http.post("/v1/segment", content=content, headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    conforms(schema, "Error", r.json())
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT" and needle in r.json()["error"]["message"]
    assert time.perf_counter() - started < 5  # refused, not worked through


def test_uploads_are_checked(http):
    no_image = http.post("/v1/segment", files={"other": b"x"}, data={"request": "{}"})
    assert no_image.status_code == 400 and "'image'" in no_image.json()["error"]["message"]
    both = http.post("/v1/segment", files={"image": png_image(32, 32, 80)}, data={"request": '{"image_id": "x"}'})
    assert both.status_code == 400 and "image_id" in both.json()["error"]["message"]
    two = http.post("/v1/embed", files=[("image", b"a"), ("image", b"b")])
    assert two.status_code == 400 and "several" in two.json()["error"]["message"]
    other = http.post("/v1/embed", files={"image": b"a", "extra": b"b"})
    assert other.status_code == 400 and "extra" in other.json()["error"]["message"]
    # the other fields as a file part (curl -F request=@fields.json) are read as JSON too
    image = png_image(48, 40, 85)
    as_file = http.post("/v1/embed", files={"image": image, "request": ("f.json", b'{"return_embedding": true}')})
    assert as_file.status_code == 200 and as_file.json()["embedding"]["dtype"] == "float16"


def test_over_a_budget_is_429_without_retry_after(http):
    """A request over a work budget will not fit later either: no Retry-After (over capacity has one)."""
    fields = {"options": {"points_per_side": 256, "crop_n_layers": 1}}
    r = http.post("/v1/generate_masks", files={"image": png_image(64, 64, 86)}, data={"request": json.dumps(fields)})
    assert r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "retry-after" not in r.headers


def test_deadline_header(http):
    image = b64(png_image(64, 64, 81))
    bad = http.post("/v1/embed", json={"image": image}, headers={"x-request-timeout": "soon"})
    assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]["message"]
    late = http.post("/v1/embed", json={"image": image}, headers={"x-request-timeout": "0.000001"})
    assert late.status_code == 504 and late.json()["error"]["status"] == "DEADLINE_EXCEEDED"


def test_unknown_routes_and_methods_are_json_errors(http):
    assert http.get("/v1/nope").status_code == 404 and http.get("/v1/nope").json()["error"]["status"] == "NOT_FOUND"
    r = http.get("/v1/segment")
    assert r.status_code == 405 and r.json()["error"]["status"] == "UNIMPLEMENTED"
    # a path that climbs out of the page's folder (sent raw: HTTP clients resolve the dots)
    host, port = str(http.base_url).removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /static/../../../contract.py HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b"\r\n")[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request"), answer[:200]
    assert b"ModelInfo" not in answer


def test_every_route_is_in_the_schema_and_answers(http, schema):
    for path, ops in schema["paths"].items():
        for method in ops:
            r = http.request(method.upper(), path, json={} if method == "post" else None)
            assert r.status_code not in (404, 405), (method, path)
    expected = {"/v1/embed", "/v1/embed_many", "/v1/segment", "/v1/generate_masks", "/v1/generate_masks_stream"}
    expected |= {"/v1/models", "/v1/health", "/v1/video/add_frames", "/v1/video/propagate"}
    expected |= {f"/v1/video/{r}" for r in ("start", "add_prompt", "cancel", "remove_object", "clear_prompts")}
    expected |= {f"/v1/video/{r}" for r in ("reset", "get", "close")}
    assert set(schema["paths"]) == expected


def test_page_is_served_with_a_strict_policy(http):
    page = http.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert http.get("/static/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_metrics_per_route(gateway, http):
    labels = {"route": "/v1/models", "status": "200"}
    before = gateway.metric("samserve_http_requests_total", labels)
    rpc_before = gateway.metric("samserve_requests_total", {"method": "ListModels", "code": "OK"})
    http.get("/v1/models")
    assert gateway.metric("samserve_http_requests_total", labels) == before + 1
    assert gateway.metric("samserve_requests_total", {"method": "ListModels", "code": "OK"}) == rpc_before + 1
    http.get("/no/such/thing")
    assert gateway.metric("samserve_http_requests_total", {"route": "other", "status": "404"}) >= 1


def test_the_model_label_names_served_models_only(gateway, http):
    """Per-model metrics, with a bounded label set: a name not served counts as "unknown"."""
    image_id = http.post("/v1/embed", json={"image": b64(png_image(64, 64, 87))}).json()["image_id"]
    ok = {"method": "Segment", "code": "OK", "model": "default"}
    before = gateway.metric("samserve_requests_total", ok)
    assert http.post("/v1/segment", json={"image_id": image_id, "prompts": PROMPTS[:1]}).status_code == 200
    assert gateway.metric("samserve_requests_total", ok) == before + 1
    unknown = {"method": "Segment", "code": "NOT_FOUND", "model": "unknown"}
    before = gateway.metric("samserve_requests_total", unknown)
    for name in ("nope", "other-name"):
        body = {"image_id": image_id, "prompts": PROMPTS[:1], "model": name}
        assert http.post("/v1/segment", json=body).status_code == 404
    assert gateway.metric("samserve_requests_total", unknown) == before + 2
    assert gateway.metric("samserve_requests_total", {"model": "nope"}) == 0


@pytest.fixture(scope="module")
def small_gateway(triton_server, redis_server):
    """A gateway with a 1 MiB request limit, room for one request at a time, and 1 s to send a body."""
    gw = GatewayThread(
        gateway_settings(
            triton_server.grpc_url,
            redis_server.url,
            max_request_bytes=1 << 20,
            max_concurrent_requests=1,
            http_read_timeout_s=1.0,
        )
    )
    yield gw
    gw.stop()


def test_bodies_over_the_limit_are_refused_before_they_are_read(small_gateway):
    url = small_gateway.http_url + "/v1/embed"
    big = httpx.post(url, content=b"x" * (3 << 20), headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["status"] == "RESOURCE_EXHAUSTED"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(64):
            yield b"0" * 65536

    streamed = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    # base64 of a 1 MiB image fits the body limit but not the request limit (gRPC's)
    image = b64(b"\0" * ((1 << 20) + 10))
    over = httpx.post(url, json={"image": image})
    assert over.status_code == 413 and "limit of 1048576" in over.json()["error"]["message"]


def _raw(url: str, data: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(data)
    return sock


def test_a_body_not_sent_in_time_is_408_and_one_cut_short_is_cancelled(small_gateway):
    gw = small_gateway
    head = b"POST /v1/embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    with _raw(gw.http_url, head + b'{"image": "') as slow:
        slow.settimeout(10)
        answer = b""
        while not answer.endswith(b"}}"):
            answer += slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"not received within 1 s" in answer
    cancelled = {"method": "Embed", "code": "CANCELLED"}
    before = gw.metric("samserve_requests_total", cancelled)
    internal = gw.metric("samserve_requests_total", {"method": "Embed", "code": "INTERNAL"})
    _raw(gw.http_url, head + b'{"image": "').close()  # the client leaves mid-upload
    deadline = time.monotonic() + 10
    while gw.metric("samserve_requests_total", cancelled) < before + 1:
        assert time.monotonic() < deadline, "an upload cut short was not counted as cancelled"
        time.sleep(0.02)
    assert gw.metric("samserve_requests_total", {"method": "Embed", "code": "INTERNAL"}) == internal
    assert gw.metric("samserve_requests_in_flight") == 0


def _slow_amg_request(url: str) -> bytes:
    body = json.dumps({"image": b64(png_image(200, 260, 82)), "options": {"points_per_side": 64}}).encode()
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /v1/generate_masks HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body, (host, int(port))


def test_a_client_that_leaves_stops_its_work_and_admission_is_shared(small_gateway):
    """One slot (max_concurrent_requests=1) for gRPC and HTTP together; a client that closes
    its connection has its request cancelled and the slot freed."""
    gw = small_gateway
    cancelled = {"method": "GenerateMasks", "code": "CANCELLED"}
    before = gw.metric("samserve_requests_total", cancelled)
    request, address = _slow_amg_request(gw.http_url)
    sock = socket.create_connection(address)
    sock.sendall(request)
    deadline = time.monotonic() + 30
    while gw.metric("samserve_requests_in_flight") < 1:
        assert time.monotonic() < deadline, "the slow request never started"
        time.sleep(0.02)
    # the slot is taken: gRPC and HTTP are both refused at once
    from samserve.client import SamClient

    with SamClient(gw.target, timeout_s=30) as c, pytest.raises(grpc.RpcError) as err:
        c.embed(png_image(32, 32, 83))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    busy = httpx.get(gw.http_url + "/v1/models")
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    sock.close()  # the client leaves
    while gw.metric("samserve_requests_total", cancelled) < before + 1:
        assert time.monotonic() < deadline, "the request was not cancelled"
        time.sleep(0.02)
    assert gw.metric("samserve_requests_in_flight") == 0
    assert httpx.get(gw.http_url + "/v1/models").status_code == 200


def test_concurrent_http_requests_are_served(http):
    image = png_image(160, 200, 84)
    image_id = http.post("/v1/embed", json={"image": b64(image)}).json()["image_id"]
    results: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=str(http.base_url), timeout=120) as c:
            results.append(c.post("/v1/segment", json={"image_id": image_id, "prompts": PROMPTS}).status_code)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
