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
