"""Hypothesis strategies for hostile requests to every RPC: image bytes (random, truncated,
corrupted, header-only bombs, formats outside the allow-list, odd pixel modes) and every field.
The suite's short fuzz run (tests/integration/test_fuzz.py) and the long one
(benchmarks/fuzz.py) draw from the same strategies. Needs hypothesis (the test extra)."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from samserve.devtools.sample_images import encode, synthetic_image
from samserve.v1 import samserve_pb2 as pb

VALID = encode(synthetic_image(48, 64, 77))
# every status the API documents; anything else (UNKNOWN, INTERNAL, ...) is a defect
DOCUMENTED = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
}


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG that declares width x height and has no pixels: a bomb's header, or 0 x 0."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _saved(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _odd_images() -> list[bytes]:
    small = synthetic_image(20, 30, 5)
    gray16 = (small[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    return [
        _saved(small, "JPEG"),
        _saved(small, "WEBP"),
        _saved(small, "BMP"),
        _saved(small, "GIF"),
        _saved(small, "TIFF"),
        _saved(gray16, "PNG"),  # 16-bit
        _saved(np.full((16, 16), 7, np.int32), "TIFF"),  # 32-bit integer
        _saved(np.full((16, 16), 0.5, np.float32), "TIFF"),  # float
        _saved(small, "ICO"),  # a format outside the allow-list
        _saved(np.zeros((8, 4200, 3), np.uint8), "PNG"),  # too elongated for S=256
        _saved(np.zeros((1, 300, 3), np.uint8), "PNG"),  # too small
        png_header(0, 0),
        png_header(100_000, 100_000),  # a bomb's header
        png_header(30_000, 30_000, 16, 6),
    ]


ODD = _odd_images()
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=-10, max_value=80, width=32),
)
images = st.one_of(
    st.binary(max_size=2048),
    st.just(VALID),
    st.sampled_from(ODD),
    st.builds(lambda cut: VALID[:cut], st.integers(0, len(VALID))),  # truncated
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
embed_requests = st.builds(lambda image, ret: pb.EmbedRequest(image=image, return_embedding=ret), images, st.booleans())


@st.composite
def segment_requests(draw) -> pb.SegmentRequest:
    req = pb.SegmentRequest(
        prompts=draw(st.lists(prompts, max_size=3)),
        mask_format=draw(st.integers(-1, 6)),
        return_low_res_logits=draw(st.booleans()),
    )
    image_id = draw(st.one_of(st.none(), st.text(max_size=70), st.just("ab" * 32)))
    if image_id is not None:
        req.image_id = image_id
    else:
        req.image = draw(images)
    multimask = draw(st.one_of(st.none(), st.booleans()))
    if multimask is not None:
        req.multimask_output = multimask
    return req


option_values = {
    "points_per_side": st.integers(-2, 6),
    "points_per_batch": st.integers(-1, 70),
    "pred_iou_thresh": st.floats(allow_nan=True, min_value=None, max_value=None),
    "stability_score_thresh": st.floats(-0.5, 1.5),
    "stability_score_offset": st.floats(-1, 3),
    "box_nms_thresh": st.floats(-0.5, 1.5),
    "crop_n_layers": st.integers(-1, 5),
    "crop_nms_thresh": st.floats(-0.5, 1.5),
    "crop_overlap_ratio": st.floats(-0.5, 1.5),
    "crop_n_points_downscale_factor": st.integers(-1, 4),
    "min_mask_region_area": st.integers(-5, 200),
}


def _finite_options(options: dict) -> dict:
    # protobuf floats take inf; keep one option (pred_iou_thresh) that may be infinite
    return {k: v for k, v in options.items() if not (isinstance(v, float) and math.isinf(v) and k != "pred_iou_thresh")}


generate_requests = st.builds(
    lambda image, options, fmt: pb.GenerateMasksRequest(
        image=image, options=pb.AmgOptions(**_finite_options(options)), output_format=fmt
    ),
    images,
    st.fixed_dictionaries({}, optional=option_values),
    st.integers(-1, 5),
)
RPCS = {"Embed": embed_requests, "Segment": segment_requests(), "GenerateMasks": generate_requests}
