"""Bad input gets the documented status and a message naming the field; nothing is lost:
no encoder run is wasted on a request that is rejected, and the server keeps serving."""

from __future__ import annotations

import io
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from samserve.devtools.sample_images import encode, png_image, synthetic_image
from samserve.v1 import samserve_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no pixel data: what a decompression
    bomb or a 0x0 image looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def point(x, y, label=1) -> pb.Point:
    return pb.Point(x=x, y=y, label=label)


def ico_bomb() -> bytes:
    """97 KB: an ICO whose directory declares 16x16 and which holds a 10000x10000 PNG (Pillow's
    ICO plugin decodes it inside Image.open, before any size check)."""
    buf = io.BytesIO()
    Image.new("L", (10000, 10000)).save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png


def tiff(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="TIFF")
    return buf.getvalue()


IMAGE = png_image(120, 200, 3)  # 200 wide, 120 tall
JPEG = encode(synthetic_image(200, 200, 4), "JPEG", quality=90)


def seg(prompts, image=IMAGE, **kw) -> pb.SegmentRequest:
    return pb.SegmentRequest(image=image, prompts=prompts, **kw)


def mask_input(h, w, nbytes=None) -> pb.MaskInput:
    data = np.zeros((h, w), "<f4").tobytes()
    return pb.MaskInput(data=data[:nbytes] if nbytes is not None else data, height=h, width=w)


ONE = [pb.Prompt(points=[point(10, 10)])]
CASES = {
    "empty_bytes": ("Embed", pb.EmbedRequest(image=b""), INVALID, "image: empty"),
    "garbage_bytes": (
        "Embed",
        pb.EmbedRequest(image=b"not an image at all" * 10),
        INVALID,
        "cannot identify",
    ),
    "truncated_jpeg": ("Embed", pb.EmbedRequest(image=JPEG[: len(JPEG) // 2]), INVALID, "truncated"),
    "zero_by_zero": ("Embed", pb.EmbedRequest(image=png_header_only(0, 0)), INVALID, "image"),
    "one_by_n": (
        "Embed",
        pb.EmbedRequest(image=encode(np.zeros((1, 300, 3), np.uint8))),
        INVALID,
        "too small",
    ),
    "over_pixel_limit": (
        "Embed",
        pb.EmbedRequest(image=png_header_only(10000, 10000)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "exceeds the limit of 50000000 pixels",
    ),
    "elongated_8x16385": (
        "Embed",
        pb.EmbedRequest(image=encode(np.zeros((8, 16385, 3), np.uint8))),
        INVALID,
        "16385x8 is too elongated for this model: with its long side resized to 256 px the short side would "
        "be 0 px; the long side may be at most 512 times the short side",
    ),
    "ico_holding_a_10000x10000_png": (
        "Embed",
        pb.EmbedRequest(image=ico_bomb()),
        INVALID,
        "other formats are not accepted",
    ),
    "int32_tiff": (
        "Embed",
        pb.EmbedRequest(image=tiff(np.full((32, 32), 70000, np.int32))),
        INVALID,
        "pixel mode I (32-bit integer) has no unambiguous 8-bit mapping",
    ),
    "float_tiff": (
        "Segment",
        seg(ONE, image=tiff(np.full((32, 32), 0.25, np.float32))),
        INVALID,
        "pixel mode F (32-bit floating-point) has no unambiguous 8-bit mapping",
    ),
    "point_outside": (
        "Segment",
        seg([pb.Prompt(points=[point(250, 10)])]),
        INVALID,
        "prompts[0].points[0].x = 250 is outside the image; allowed 0..200",
    ),
    "negative_y": (
        "Segment",
        seg([pb.Prompt(points=[point(5, 5), point(10, -1)])]),
        INVALID,
        "prompts[0].points[1].y",
    ),
    "nan_coordinate": (
        "Segment",
        seg([pb.Prompt(points=[point(float("nan"), 10)])]),
        INVALID,
        "prompts[0].points[0].x = nan is not a finite number",
    ),
    "box_x1_lt_x0": (
        "Segment",
        seg([pb.Prompt(box=pb.Box(x0=100, y0=10, x1=50, y1=80))]),
        INVALID,
        "prompts[0].box: (100, 10, 50, 80) needs x0 <= x1",
    ),
    "wrong_label": (
        "Segment",
        seg([pb.Prompt(points=[point(10, 10, label=2)])]),
        INVALID,
        "prompts[0].points[0].label = 2; allowed 1 (foreground) or 0 (background)",
    ),
    "mask_input_wrong_shape": (
        "Segment",
        seg([pb.Prompt(points=[point(10, 10)], mask_input=mask_input(256, 256))]),
        INVALID,
        "prompts[0].mask_input: shape 256x256; this model takes 64x64",
    ),
    "mask_input_short_data": (
        "Segment",
        seg([pb.Prompt(points=[point(10, 10)], mask_input=mask_input(64, 64, 100))]),
        INVALID,
        "prompts[0].mask_input.data: 100 bytes",
    ),
    "empty_prompt": ("Segment", seg([pb.Prompt()]), INVALID, "prompts[0]: needs at least one point or a box"),
    "no_prompts": ("Segment", seg([]), INVALID, "prompts: at least one prompt is required"),
    "second_prompt_bad": (
        "Segment",
        seg([ONE[0], pb.Prompt(points=[point(1, 1, label=-1)])]),
        INVALID,
        "prompts[1].points[0].label",
    ),
    "no_image_source": ("Segment", pb.SegmentRequest(prompts=ONE), INVALID, "image_source"),
    "unknown_image_id": (
        "Segment",
        pb.SegmentRequest(image_id="ab" * 32, prompts=ONE),
        grpc.StatusCode.NOT_FOUND,
        "image_id abab",
    ),
    "malformed_image_id": (
        "Segment",
        pb.SegmentRequest(image_id="../etc/passwd", prompts=ONE),
        INVALID,
        "image_id: '../etc/passwd' is not a sha256",
    ),
    "unknown_mask_format": ("Segment", seg(ONE, mask_format=99), INVALID, "mask_format: unknown value 99"),
    "too_many_prompts": ("Segment", seg(ONE * 65), INVALID, "at most 64 per request"),
    "too_many_points": (
        "Segment",
        seg([pb.Prompt(points=[point(1, 1)] * 65)]),
        INVALID,
        "at most 64 per prompt",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_precise_status(stub, triton_stats, case):
    method, request, code, message = CASES[case]
    before = triton_stats.inferences("sam_encoder")
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request, timeout=30)
    assert err.value.code() == code, err.value.details()
    assert message in err.value.details()
    assert triton_stats.inferences("sam_encoder") == before, "a rejected request ran the encoder"
    ok = stub.Segment(seg(ONE, image=png_image(64, 64, 5)), timeout=30)  # still serving
    assert len(ok.results[0].masks) == 3


def test_a_rejected_prompt_does_not_poison_the_cache(stub):
    image = png_image(90, 90, 6)
    with pytest.raises(grpc.RpcError):
        stub.Segment(seg([pb.Prompt(points=[point(500, 10)])], image=image))
    r = stub.Segment(seg([pb.Prompt(points=[point(50, 10)])], image=image))
    assert not r.cached and r.original_size.width == 90


def test_message_over_the_request_limit_is_resource_exhausted(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Embed(pb.EmbedRequest(image=b"\0" * (33 * 1024 * 1024)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_over_capacity_is_refused_quickly(triton_server, redis_server):
    import concurrent.futures as cf

    from samserve.client import SamClient
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings

    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, max_concurrent_requests=1))
    try:
        images = [png_image(700, 700, 900 + i) for i in range(6)]

        def one(img):
            started = time.monotonic()
            with SamClient(gw.target) as c:
                try:
                    c.embed(img)
                    return "OK", time.monotonic() - started
                except grpc.RpcError as exc:
                    return exc.code().name, time.monotonic() - started

        with cf.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, images))
        codes = [code for code, _ in results]
        assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes, codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
        refused = [t for code, t in results if code == "RESOURCE_EXHAUSTED"]
        served = [t for code, t in results if code == "OK"]
        assert max(refused) < min(served), results  # refused at once, not after queueing
    finally:
        gw.stop()


def test_millions_of_points_are_refused_from_their_count(gateway):
    """A ~30 MB Segment with 2M points (under the request limit): refused with the per-prompt
    limit, counted before any point becomes a Python object; health answers meanwhile."""
    import concurrent.futures as cf

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    point = pb.Point(x=1, y=1, label=1).SerializeToString()
    entry = b"\x0a" + bytes([len(point)]) + point  # Prompt.points = field 1, length-delimited
    prompt = entry * 2_000_000
    field = pb.SegmentRequest(prompts=[pb.Prompt()]).SerializeToString()[:1]  # the prompts tag
    length = pb.SegmentRequest(image=b"x" * len(prompt)).SerializeToString()[1 : -len(prompt)]  # its varint
    raw = pb.SegmentRequest(image=IMAGE).SerializeToString() + field + length + prompt
    assert len(raw) < 32 * 1024 * 1024
    with grpc.insecure_channel(gateway.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        segment = ch.unary_unary("/samserve.v1.SegmentAnything/Segment", request_serializer=None)
        health = health_pb2_grpc.HealthStub(ch)
        with cf.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(segment, raw, timeout=60)
            ok = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert ok.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:
                pending.result()
    assert err.value.code() == INVALID
    assert "prompts[0].points: 2000000 points; at most 64 per prompt" in err.value.details()


def test_segment_output_over_the_mask_pixel_limit_is_refused_before_any_work(gateway, stub, triton_stats):
    """64 prompts x 3 masks of a 1500x1000 image are 288 M mask pixels, over the 2^28 default:
    refused with the numbers, no encoder or decoder run, counted as RESOURCE_EXHAUSTED (not OK);
    the same prompts with one mask each are served."""
    image = png_image(1000, 1500, 77)
    prompts = [pb.Prompt(points=[point(10 + i, 20 + i)]) for i in range(64)]
    labels = {"method": "Segment", "code": "RESOURCE_EXHAUSTED"}
    refused_before = gateway.metric("samserve_requests_total", labels)
    encoder, decoder = triton_stats.inferences("sam_encoder"), triton_stats.inferences("sam_decoder")
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(seg(prompts, image=image), timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "192 masks of 1500x1000 = 288000000 mask pixels exceeds the limit of 268435456" in err.value.details()
    assert triton_stats.inferences("sam_encoder") == encoder and triton_stats.inferences("sam_decoder") == decoder
    assert gateway.metric("samserve_requests_total", labels) == refused_before + 1
    ok = stub.Segment(seg(prompts, image=image, multimask_output=False), timeout=120)
    assert len(ok.results) == 64 and all(len(r.masks) == 1 for r in ok.results)
