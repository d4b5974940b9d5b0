"""GenerateMasks through the API: option validation, the work budget, cache reuse, and the
sam_amg ensemble answering one Triton request on its own."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from samserve.core.amg_options import AmgOptions
from samserve.devtools.sample_images import png_image, synthetic_image
from samserve.v1 import samserve_pb2 as pb

BAD_OPTIONS = {
    "points_per_side": [0, 257, -3],
    "points_per_batch": [0, 1025],
    "pred_iou_thresh": [-0.1, 1.5, float("nan")],
    "stability_score_thresh": [-1.0, 1.01],
    "stability_score_offset": [-0.5, float("inf")],
    "box_nms_thresh": [-0.01, 2.0],
    "crop_n_layers": [-1, 5],
    "crop_nms_thresh": [1.2],
    "crop_overlap_ratio": [-0.1, 1.0],
    "crop_n_points_downscale_factor": [0, 65],
    "min_mask_region_area": [-1],
}
CASES = [(name, v) for name, values in BAD_OPTIONS.items() for v in values]


@pytest.mark.parametrize("name, value", CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_every_option_out_of_range_is_invalid_argument(stub, triton_stats, name, value):
    before = triton_stats.inferences("sam_encoder")
    request = pb.GenerateMasksRequest(image=png_image(64, 64, 11), options=pb.AmgOptions(**{name: value}))
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"options.{name}" in err.value.details() and "must be" in err.value.details()
    assert triton_stats.inferences("sam_encoder") == before


def test_a_layer_without_points_is_invalid_argument(stub):
    options = pb.AmgOptions(points_per_side=4, crop_n_layers=2, crop_n_points_downscale_factor=8)
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(pb.GenerateMasksRequest(image=png_image(64, 64, 12), options=options), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "crop_n_points_downscale_factor" in err.value.details()


def test_work_over_the_budget_is_refused_before_any_work(stub, triton_stats, fresh_seed):
    options = pb.AmgOptions(points_per_side=64, crop_n_layers=2)  # 4096 + 4 * 4096 + 16 * 4096 points
    assert AmgOptions(points_per_side=64, crop_n_layers=2).total_points() == 86016
    before = (triton_stats.inferences("sam_encoder"), triton_stats.inferences("sam_decoder"))
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(pb.GenerateMasksRequest(image=png_image(64, 64, fresh_seed), options=options), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "86016 point prompts over 21 crops" in err.value.details() and "16384" in err.value.details()
    assert (triton_stats.inferences("sam_encoder"), triton_stats.inferences("sam_decoder")) == before


def test_an_embedded_image_skips_the_encoder_for_the_whole_image_layer(client, triton_stats, fresh_seed):
    data = png_image(150, 200, fresh_seed)
    client.embed(data)
    before = triton_stats.inferences("sam_encoder")
    response = client.generate_masks_pb(data, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert response.cached
    assert triton_stats.inferences("sam_encoder") == before  # no crops: no encoder run at all
    client.generate_masks_pb(data, points_per_side=4, crop_n_layers=1)
    assert triton_stats.inferences("sam_encoder") == before + 4  # only the four crops


def test_generate_masks_by_image_id_equals_by_bytes_without_an_upload(client, stub, triton_stats, fresh_seed):
    data = png_image(140, 190, fresh_seed)
    image_id = client.embed(data).image_id
    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    by_bytes = client.generate_masks_pb(data, **options)
    before = triton_stats.inferences("sam_encoder")
    by_id = client.generate_masks_pb(image_id=image_id, **options)
    assert triton_stats.inferences("sam_encoder") == before
    assert by_id.cached and by_id.image_id == image_id and len(by_id.masks) > 0
    assert by_id == by_bytes
    # crops are embedded from the pixels: by image_id they cannot be
    request = pb.GenerateMasksRequest(image_id=image_id, options=pb.AmgOptions(points_per_side=4, crop_n_layers=1))
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "send the image bytes" in err.value.details()
    for bad, code in (("ab" * 32, grpc.StatusCode.NOT_FOUND), ("nope", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as err:
            stub.GenerateMasks(pb.GenerateMasksRequest(image_id=bad), timeout=30)
        assert err.value.code() == code, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(pb.GenerateMasksRequest(), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image_source" in err.value.details()


def test_the_sam_amg_ensemble_answers_one_triton_request(triton_server, small_sam):
    import tritonclient.grpc as tc

    from samserve.core.preprocess import preprocess

    image = synthetic_image(120, 180, seed=13)
    sam = small_sam.sam
    x, _ = preprocess(image, 256, sam.pixel_mean.flatten().numpy(), sam.pixel_std.flatten().numpy())
    opts = AmgOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    arrays = {
        "images": (x, "FP32"),
        "image": (image[None], "UINT8"),
        "original_size": (np.array([[120, 180]], np.int64), "INT64"),
        "amg_options": (np.array([[opts.to_json().encode()]], dtype=np.object_), "BYTES"),
    }
    inputs = []
    for name, (arr, dtype) in arrays.items():
        i = tc.InferInput(name, list(arr.shape), dtype)
        i.set_data_from_numpy(arr)
        inputs.append(i)
    result = tc.InferenceServerClient(triton_server.grpc_url).infer("sam_amg", inputs)
    assert result.as_numpy("rle_counts").shape == (1, 48)  # 16 points x 3 masks, nothing filtered
    assert result.as_numpy("boxes").shape == (1, 48, 4)
    assert result.as_numpy("image_embeddings").shape == (1, 256, 16, 16)
    counts = np.frombuffer(result.as_numpy("rle_counts")[0, 0], dtype="<u4")
    assert counts.sum() == 120 * 180


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"points_per_side": 6, "crop_n_layers": 4},  # 341 encoder runs, 12276 prompts (under 16384)
            "crop_n_layers = 4 needs 341 encoder runs (the image and its crops); the configured budget is 21",
        ),
        (
            {"points_per_side": 64, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
            "on a 1500x1000 image this request may upsample 18432000000 mask pixels; the configured budget is "
            "17179869184",
        ),
    ],
    ids=["encoder_runs", "mask_pixels"],
)
def test_work_the_image_makes_too_costly_is_refused_before_any_model_runs(
    triton_server, redis_server, triton_stats, options, message, fresh_seed
):
    """Issue 25 #6: budgets that need the image's size are checked once it is decoded, before
    the encoder: RESOURCE_EXHAUSTED naming the budget and the request's figure."""
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.v1 import samserve_pb2_grpc as pb_grpc

    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, amg_max_mask_pixels=1 << 34))
    try:
        with grpc.insecure_channel(gw.target) as ch:
            before = triton_stats.inferences("sam_encoder"), triton_stats.inferences("sam_amg_generate")
            request = pb.GenerateMasksRequest(image=png_image(1000, 1500, fresh_seed), options=pb.AmgOptions(**options))
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.SegmentAnythingStub(ch).GenerateMasks(request, timeout=60)
    finally:
        gw.stop()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert message in err.value.details()
    assert (triton_stats.inferences("sam_encoder"), triton_stats.inferences("sam_amg_generate")) == before


def test_a_generate_masks_past_its_deadline_stops_within_one_batch(stub, triton_stats, fresh_seed):
    """Issue 25 #6: when the deadline passes, Triton cancels the request and sam_amg_generate
    stops between decoder batches instead of finishing work nobody reads; Triton is then free."""
    import time

    request = pb.GenerateMasksRequest(
        image=png_image(300, 400, fresh_seed),
        options=pb.AmgOptions(points_per_side=64, points_per_batch=16),  # 256 decoder batches, ~30 s
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(request, timeout=3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(max(0.0, started + 5 - time.monotonic()))  # the batch running at the deadline ends
    settled = triton_stats.inferences("sam_decoder")
    time.sleep(3)
    assert triton_stats.inferences("sam_decoder") - settled <= 1, "the cancelled AMG kept calling the decoder"
    small = pb.GenerateMasksRequest(image=png_image(64, 64, fresh_seed + 1), options=pb.AmgOptions(points_per_side=2))
    stub.GenerateMasks(small, timeout=30)  # the model instance is free again


def test_a_burst_of_cancelled_generate_masks_leaves_triton_free(stub, gateway, triton_stats, fresh_seed):
    """Issue 28: clients that cancel (gRPC) or hang up (HTTP) stop their work everywhere: the
    gateway's, Triton's queue and sam_amg_generate's loop, each within one decoder batch; the
    next request is served at once."""
    import socket
    import time

    options = pb.AmgOptions(points_per_side=64, points_per_batch=16)  # 256 decoder batches each
    calls = [
        stub.GenerateMasks.future(pb.GenerateMasksRequest(image=png_image(300, 400, fresh_seed + i), options=options))
        for i in range(4)
    ]
    host, port = gateway.http_url.removeprefix("http://").split(":")
    body = b'{"image_id": "%s", "options": {"points_per_side": 64, "points_per_batch": 16}}'
    image_id = stub.Embed(pb.EmbedRequest(image=png_image(300, 400, fresh_seed + 9)), timeout=60).image_id
    body = body % image_id.encode()
    http = socket.create_connection((host, int(port)))
    http.sendall(b"POST /v1/generate_masks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
    http.sendall(b"content-length: %d\r\n\r\n" % len(body) + body)
    time.sleep(2)  # the first is running in sam_amg_generate, the others wait in Triton's queue
    for call in calls:
        call.cancel()
    http.close()
    for call in calls:
        assert call.cancelled() or call.exception().code() == grpc.StatusCode.CANCELLED
    time.sleep(3)  # the batch running at the cancel ends; queued requests are dropped or stop at once
    settled = triton_stats.inferences("sam_decoder")
    time.sleep(3)
    assert triton_stats.inferences("sam_decoder") - settled <= 1, "cancelled AMG work kept calling the decoder"
    started = time.monotonic()
    small = pb.GenerateMasksRequest(image=png_image(64, 64, fresh_seed + 5), options=pb.AmgOptions(points_per_side=2))
    stub.GenerateMasks(small, timeout=30)
    assert time.monotonic() - started < 10, "Triton was still busy with cancelled work"
    assert gateway.metric("samserve_requests_in_flight") == 0


def test_a_generate_masks_answer_over_the_response_limit_is_resource_exhausted(triton_server, redis_server, fresh_seed):
    """An answer that cannot be sent is refused with its size, not counted OK and dropped."""
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.v1 import samserve_pb2_grpc as pb_grpc

    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, max_response_bytes=1 << 20))
    try:
        with grpc.insecure_channel(gw.target) as ch:
            request = pb.GenerateMasksRequest(
                image=png_image(300, 400, fresh_seed),
                options=pb.AmgOptions(points_per_side=8, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1),
                output_format=pb.MASK_FORMAT_PACKED_BITS,  # 15 kB a mask
            )
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.SegmentAnythingStub(ch).GenerateMasks(request, timeout=120)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
        assert "over the response limit of 1048576 bytes" in err.value.details()
        labels = {"method": "GenerateMasks", "code": "RESOURCE_EXHAUSTED"}
        assert gw.metric("samserve_requests_total", labels) == 1
    finally:
        gw.stop()
