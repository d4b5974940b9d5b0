"""GenerateMasks (served: gateway + Triton sam_amg_generate) vs SamAutomaticMaskGenerator in-process.

The test model has random weights: its predicted IoUs are ~0.05 and its masks are noise that
spans the whole image, so every box is the image box. The options are lowered for that:
pred_iou_thresh 0.01 and stability_score_thresh 0.25 with stability_score_offset 0.02 (at the
default offset 1.0 every noise mask scores 0), and NMS thresholds 1.0 (any lower NMS leaves a
single mask), so the reference returns ~70 masks a case instead of 0 or 1 and both filters
still drop masks. A separate case keeps the reference's NMS thresholds and checks that the
few survivors agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samserve.client import amg_records_from_pb, decode_mask
from samserve.core.rle import counts_to_mask
from samserve.devtools.sample_images import encode, synthetic_image
from samserve.v1 import samserve_pb2 as pb

SHAPES = {"landscape": (300, 420), "portrait": (380, 250)}
LOW = {
    "points_per_side": 8,
    "pred_iou_thresh": 0.01,
    "stability_score_thresh": 0.25,
    "stability_score_offset": 0.02,
    "box_nms_thresh": 1.0,
    "crop_nms_thresh": 1.0,
}
CASES = {
    "grid8_no_crops": LOW,
    "grid8_one_crop_layer": {**LOW, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
    "grid8_min_region_area": {**LOW, "min_mask_region_area": 150},
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def reference_records(sam, image: np.ndarray, options: dict) -> list[dict]:
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    with torch.no_grad():
        return SamAutomaticMaskGenerator(sam, output_mode="uncompressed_rle", **options).generate(image)


def match(ref: list[dict], ref_masks: list[np.ndarray], got, got_masks) -> list[tuple[int, int, float]]:
    """One-to-one: each reference record takes the unmatched served record with IoU >= 0.95
    whose scores are closest (identical masks from different points are common)."""
    taken: set[int] = set()
    pairs = []
    for i, r in enumerate(ref):
        candidates = []
        for j, g in enumerate(got):
            if j in taken:
                continue
            m_iou = iou(ref_masks[i], got_masks[j])
            if m_iou >= 0.95:
                gap = abs(g.predicted_iou - r["predicted_iou"]) + abs(g.stability_score - r["stability_score"])
                candidates.append((gap, -m_iou, j))
        if candidates:
            _, neg_iou, j = min(candidates)
            taken.add(j)
            pairs.append((i, j, -neg_iou))
    return pairs


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_generate_masks_matches_reference(client, small_sam, fidelity_results, shape, case):
    h, w = SHAPES[shape]
    image = synthetic_image(h, w, seed=40 + list(SHAPES).index(shape))
    options = CASES[case]
    ref = reference_records(small_sam.sam, image, options)
    assert len(ref) >= 20, f"the reference returned only {len(ref)} masks: the case proves too little"
    response = client.generate_masks_pb(encode(image), output_format=pb.MASK_FORMAT_COCO_RLE, **options)
    got = amg_records_from_pb(response)
    ref_masks = [counts_to_mask(r["segmentation"]["counts"], h, w) for r in ref]
    got_masks = [r.segmentation for r in got]
    pairs = match(ref, ref_masks, got, got_masks)
    matched = len(pairs) / len(ref)
    extra = (len(got) - len(pairs)) / len(ref)
    diffs = [
        max(
            abs(got[j].predicted_iou - ref[i]["predicted_iou"]), abs(got[j].stability_score - ref[i]["stability_score"])
        )
        for i, j, _ in pairs
    ]
    fidelity_results.append(
        (
            f"amg {shape}/{case} ({len(ref)} ref, {len(got)} served)",
            float(np.mean([p[2] for p in pairs])),
            float(min(p[2] for p in pairs)),
            max(diffs),
        )
    )
    assert matched >= 0.98, f"{matched:.1%} of the reference's masks have a served counterpart"
    assert extra <= 0.02, f"{extra:.1%} extra served masks"
    assert max(diffs) <= 1e-3, f"matched predicted_iou / stability_score differ by {max(diffs):.2e}"
    for record, m in zip(response.masks, got_masks, strict=True):
        rle = {"size": list(record.segmentation.coco_rle.size), "counts": record.segmentation.coco_rle.counts.encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), m)  # pycocotools reads it
        assert record.area == m.sum()
        ys, xs = np.nonzero(m)
        assert list(record.bbox) == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    for i, j, _ in pairs:
        assert got[j].crop_box == ref[i]["crop_box"]
        np.testing.assert_allclose(got[j].point_coords, ref[i]["point_coords"], atol=1e-6)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_reference_nms_thresholds_give_the_same_survivors(client, small_sam, shape):
    h, w = SHAPES[shape]
    image = synthetic_image(h, w, seed=50)
    options = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "crop_n_layers": 1}
    ref = reference_records(small_sam.sam, image, options)
    got = client.generate_masks(encode(image), output_format=pb.MASK_FORMAT_UNCOMPRESSED_RLE, **options)
    assert len(got) == len(ref) >= 1
    for g, r in zip(got, ref, strict=True):
        assert iou(g.segmentation, counts_to_mask(r["segmentation"]["counts"], h, w)) >= 0.95
        assert abs(g.predicted_iou - r["predicted_iou"]) <= 1e-3


def test_default_thresholds_on_random_weights_give_an_empty_valid_answer(client, small_sam):
    """The reference's defaults filter out every random-weight mask: an empty list, not an error."""
    image = synthetic_image(200, 240, seed=60)
    ref = reference_records(small_sam.sam, image, {"points_per_side": 4})
    response = client.generate_masks_pb(encode(image), points_per_side=4)
    assert len(ref) == 0 and len(response.masks) == 0
    assert response.original_size.height == 200


@pytest.mark.parametrize("fmt", [pb.MASK_FORMAT_PNG, pb.MASK_FORMAT_PACKED_BITS, pb.MASK_FORMAT_UNCOMPRESSED_RLE])
def test_every_output_format_carries_the_same_masks(client, fmt):
    image = encode(synthetic_image(120, 160, seed=70))
    base = client.generate_masks_pb(image, **{**LOW, "points_per_side": 2})
    other = client.generate_masks_pb(image, output_format=fmt, **{**LOW, "points_per_side": 2})
    assert len(base.masks) == len(other.masks) > 0
    for a, b in zip(base.masks, other.masks, strict=True):
        np.testing.assert_array_equal(decode_mask(a.segmentation), decode_mask(b.segmentation))
