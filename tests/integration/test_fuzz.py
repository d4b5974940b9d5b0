"""Fuzzing the API with hypothesis: random bytes as images, random prompt fields and random
options. Every answer is OK or a documented error status; never UNKNOWN or INTERNAL."""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samserve.devtools.sample_images import encode, synthetic_image
from samserve.v1 import samserve_pb2 as pb

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
VALID = encode(synthetic_image(48, 64, 77))
CASES = {"Embed": 0, "Segment": 0, "GenerateMasks": 0}

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=-10, max_value=80, width=32),
)
images = st.one_of(
    st.binary(max_size=2048),
    st.just(VALID),
    st.builds(lambda cut: VALID[:cut], st.integers(0, len(VALID))),  # truncated PNGs
    st.builds(
        lambda pos, b: VALID[:pos] + bytes([b]) + VALID[pos + 1 :], st.integers(0, len(VALID) - 1), st.integers(0, 255)
    ),  # one corrupted byte
)
points = st.builds(pb.Point, x=floats, y=floats, label=st.integers(-3, 4))
boxes = st.builds(pb.Box, x0=floats, y0=floats, x1=floats, y1=floats)
mask_inputs = st.builds(
    lambda h, w, n: pb.MaskInput(data=b"\0" * n, height=h, width=w),
    st.integers(-2, 70),
    st.integers(-2, 70),
    st.sampled_from([0, 4, 64 * 64 * 4, 100]),
)
prompts = st.builds(
    lambda pts, box, mask: pb.Prompt(
        points=pts, **({"box": box} if box else {}), **({"mask_input": mask} if mask else {})
    ),
    st.lists(points, max_size=4),
    st.one_of(st.none(), boxes),
    st.one_of(st.none(), mask_inputs),
)


def call(method, request) -> grpc.StatusCode:
    try:
        method(request, timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(image=images, ret=st.booleans())
def test_fuzz_embed(stub, image, ret):
    CASES["Embed"] += 1
    assert call(stub.Embed, pb.EmbedRequest(image=image, return_embedding=ret)) in DOCUMENTED


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    image=images,
    image_id=st.one_of(st.none(), st.text(max_size=70)),
    ps=st.lists(prompts, max_size=3),
    multimask=st.one_of(st.none(), st.booleans()),
    fmt=st.integers(-1, 6),
    logits=st.booleans(),
)
def test_fuzz_segment(stub, image, image_id, ps, multimask, fmt, logits):
    CASES["Segment"] += 1
    req = pb.SegmentRequest(prompts=ps, mask_format=fmt, return_low_res_logits=logits)
    if image_id is not None:
        req.image_id = image_id
    else:
        req.image = image
    if multimask is not None:
        req.multimask_output = multimask
    assert call(stub.Segment, req) in DOCUMENTED


option_values = {
    "points_per_side": st.integers(-2, 6),
    "points_per_batch": st.integers(-1, 70),
    "pred_iou_thresh": st.floats(allow_nan=True, min_value=None, max_value=None),
    "stability_score_thresh": st.floats(-0.5, 1.5),
    "stability_score_offset": st.floats(-1, 3),
    "box_nms_thresh": st.floats(-0.5, 1.5),
    "crop_n_layers": st.integers(-1, 2),
    "crop_nms_thresh": st.floats(-0.5, 1.5),
    "crop_overlap_ratio": st.floats(-0.5, 1.5),
    "crop_n_points_downscale_factor": st.integers(-1, 4),
    "min_mask_region_area": st.integers(-5, 200),
}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(image=images, options=st.fixed_dictionaries({}, optional=option_values), fmt=st.integers(-1, 5))
def test_fuzz_generate_masks(stub, image, options, fmt):
    CASES["GenerateMasks"] += 1
    options = {
        k: v for k, v in options.items() if not (isinstance(v, float) and math.isinf(v) and k != "pred_iou_thresh")
    }
    req = pb.GenerateMasksRequest(image=image, options=pb.AmgOptions(**options), output_format=fmt)
    assert call(stub.GenerateMasks, req) in DOCUMENTED


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    print(f"\nfuzz cases tried: {CASES} (total {sum(CASES.values())})")


def test_still_serving_after_fuzzing(stub):
    r = stub.Segment(pb.SegmentRequest(image=VALID, prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]))
    assert len(r.results[0].masks) == 3
