"""MobileSAM (vit_t) served through gateway + Triton + Redis equals mobile_sam's own SamPredictor
and SamAutomaticMaskGenerator on the same weights. The model is MobileSAM's full architecture
(TinyViT takes 1024 px inputs only) with random weights, saved as mobile_sam.pt is (a plain
state_dict) and loaded through the same path as a downloaded checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samserve.client import PromptSpec
from samserve.devtools.sample_images import encode, synthetic_image
from tests.fidelity.conftest import predictors_by_shape, serving
from tests.fidelity.test_amg_parity import LOW, match
from tests.fidelity.test_predictor_parity import (
    assert_reference_masks_nontrivial,
    compare,
    prompt_kinds,
    reference,
)

SHAPES = {"portrait": (640, 427), "elongated": (333, 1500)}


@pytest.fixture(scope="module")
def mobile_sam_stack(redis_server, cache_dir, tmp_path_factory):
    from build_engines.models import build_mobile_sam, load_checkpoint

    work = tmp_path_factory.mktemp("mobile_sam")
    torch.save(build_mobile_sam(seed=3).sam.state_dict(), work / "mobile_sam.pt")  # the checkpoint's layout
    loaded = load_checkpoint(work / "mobile_sam.pt", "vit_t")
    with serving(loaded, work, redis_server.url, cache_dir) as client:
        yield loaded, client


@pytest.fixture(scope="module")
def predictors(mobile_sam_stack):
    from mobile_sam import SamPredictor

    loaded, _ = mobile_sam_stack
    return predictors_by_shape(lambda: SamPredictor(loaded.sam), SHAPES, 60)


def test_the_served_model_says_it_is_mobile_sam(mobile_sam_stack):
    loaded, client = mobile_sam_stack
    r = client.embed(encode(synthetic_image(64, 64, 1)))
    assert r.model_id == f"{loaded.model_id}-cpu-fp32" and r.model_id.startswith("vit_t-")


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("kind", ["one_point", "pos_neg_points", "box", "box_and_points"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_segment_matches_mobile_sams_predictor(mobile_sam_stack, predictors, fidelity_results, shape, kind, multimask):
    _, client = mobile_sam_stack
    predictor, data = predictors(shape)
    h, w = SHAPES[shape]
    spec = prompt_kinds(h, w)[kind]
    seg = client.segment(data, [PromptSpec(**spec)], multimask_output=multimask)
    ref_masks, ref_scores, _ = reference(predictor, spec, multimask)
    compare(
        f"mobile_sam {shape}/{kind}/{'multi' if multimask else 'single'}",
        seg.prompts[0],
        ref_masks,
        ref_scores,
        fidelity_results,
    )


def test_second_round_with_mask_input_matches(mobile_sam_stack, predictors, fidelity_results):
    _, client = mobile_sam_stack
    predictor, data = predictors("portrait")
    h, w = SHAPES["portrait"]
    first = {"points": [(0.45 * w, 0.5 * h)], "labels": [1]}
    seg1 = client.segment(data, [PromptSpec(**first)], return_low_res_logits=True)
    _, ref_scores1, ref_logits1 = reference(predictor, first, True)
    best = int(np.argmax(ref_scores1))
    second = {"points": [(0.45 * w, 0.5 * h), (0.7 * w, 0.3 * h)], "labels": [1, 0]}
    seg2 = client.segment(data, [PromptSpec(**second, mask_input=seg1.prompts[0].low_res_logits[best])])
    ref_masks, ref_scores, _ = reference(predictor, second, True, mask_input=ref_logits1[best][None])
    compare(
        "mobile_sam portrait/second_round_mask_input/multi", seg2.prompts[0], ref_masks, ref_scores, fidelity_results
    )


def test_generate_masks_matches_mobile_sams_generator(mobile_sam_stack, fidelity_results):
    from mobile_sam import SamAutomaticMaskGenerator

    loaded, client = mobile_sam_stack
    h, w = 300, 420
    image = synthetic_image(h, w, seed=70)
    options = {**LOW, "points_per_side": 6}
    with torch.no_grad():
        ref = SamAutomaticMaskGenerator(loaded.sam, output_mode="uncompressed_rle", **options).generate(image)
    assert len(ref) >= 10, f"the reference returned only {len(ref)} masks: the case proves too little"
    from samserve.core.rle import counts_to_mask

    got = client.generate_masks(encode(image), **options)
    ref_masks = [counts_to_mask(r["segmentation"]["counts"], h, w) for r in ref]
    pairs = match(ref, ref_masks, got, [g.segmentation for g in got])
    diffs = [abs(got[j].predicted_iou - ref[i]["predicted_iou"]) for i, j, _ in pairs]
    fidelity_results.append(
        (
            f"mobile_sam amg grid6 ({len(ref)} ref, {len(got)} served)",
            float(np.mean([p[2] for p in pairs])),
            float(min(p[2] for p in pairs)),
            max(diffs),
        )
    )
    assert len(pairs) / len(ref) >= 0.98 and (len(got) - len(pairs)) / len(ref) <= 0.02
    assert max(diffs) <= 1e-3


def test_reference_masks_are_not_trivial(predictors):
    assert_reference_masks_nontrivial(predictors, SHAPES)
