"""SAM 2.1 served through gateway + Triton + Redis equals sam2's own SAM2ImagePredictor on the
same weights. The model is built by build_sam2 from the packaged sam2.1_hiera_t config, scaled
down by hydra overrides (S=256, a narrow trunk; the decoder at full size) with random weights,
saved in the released checkpoints' layout ({"model": state_dict}) and loaded through build_sam2
as a downloaded sam2.1_hiera_*.pt is."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from samserve.client import PromptSpec
from samserve.devtools.sample_images import encode, synthetic_image
from tests.fidelity.conftest import predictors_by_shape, serving
from tests.fidelity.test_amg_parity import LOW, match
from tests.fidelity.test_predictor_parity import assert_reference_masks_nontrivial, compare, prompt_kinds, reference

SHAPES = {"portrait": (640, 427), "landscape": (300, 520), "square": (256, 256), "elongated": (96, 1200)}


@pytest.fixture(scope="module")
def sam2_stack(redis_server, cache_dir, tmp_path_factory):
    from build_engines.models import load_checkpoint
    from build_engines.sam2_models import build_sam2_model, save_sam2_checkpoint

    work = tmp_path_factory.mktemp("sam2")
    path = save_sam2_checkpoint(build_sam2_model("sam2.1_scaled", seed=5), work / "sam2.1_scaled.pt")
    loaded = load_checkpoint(path, "sam2.1_scaled")
    with serving(loaded, work, redis_server.url, cache_dir) as client:
        yield loaded, client


def sam2_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from build_engines.sam2_models import feature_sizes

    p = SAM2ImagePredictor(model)
    p._bb_feat_sizes = feature_sizes(model)  # the reference hard-codes S=1024's
    return p


@pytest.fixture(scope="module")
def predictors(sam2_stack):
    loaded, _ = sam2_stack
    return predictors_by_shape(lambda: sam2_predictor(loaded.sam), SHAPES, 80)


def test_the_served_model_says_it_is_sam2(sam2_stack):
    loaded, client = sam2_stack
    r = client.embed(encode(synthetic_image(64, 64, 1)))
    assert r.model_id == f"{loaded.model_id}-cpu-fp32" and r.model_id.startswith("sam2.1_scaled-")
    assert (r.input_size.height, r.input_size.width) == (256, 256)  # a square resize, whatever the aspect
    (model,) = client.list_models().models
    assert (model.family, model.model_type, model.input_size.width) == ("sam2", "sam2.1_scaled", 256)


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("kind", ["one_point", "pos_neg_points", "box", "box_and_points"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_segment_matches_sam2_predictor(sam2_stack, predictors, fidelity_results, shape, kind, multimask):
    _, client = sam2_stack
    predictor, data = predictors(shape)
    h, w = SHAPES[shape]
    spec = prompt_kinds(h, w)[kind]
    seg = client.segment(data, [PromptSpec(**spec)], multimask_output=multimask, return_low_res_logits=True)
    assert seg.original_size == (h, w)
    ref_masks, ref_scores, ref_logits = reference(predictor, spec, multimask)
    compare(
        f"sam2.1 {shape}/{kind}/{'multi' if multimask else 'single'}",
        seg.prompts[0],
        ref_masks,
        ref_scores,
        fidelity_results,
    )
    # the returned low-res logits are the reference's: clamped to +-32 (float16 embeddings: ~1e-2)
    np.testing.assert_allclose(seg.prompts[0].low_res_logits, ref_logits, atol=0.1)
    assert np.abs(seg.prompts[0].low_res_logits).max() <= 32.0


def test_second_round_with_mask_input_matches(sam2_stack, predictors, fidelity_results):
    _, client = sam2_stack
    predictor, data = predictors("portrait")
    h, w = SHAPES["portrait"]
    first = {"points": [(0.45 * w, 0.5 * h)], "labels": [1]}
    seg1 = client.segment(data, [PromptSpec(**first)], return_low_res_logits=True)
    _, ref_scores1, ref_logits1 = reference(predictor, first, True)
    best = int(np.argmax(ref_scores1))
    second = {"points": [(0.45 * w, 0.5 * h), (0.7 * w, 0.3 * h)], "labels": [1, 0]}
    seg2 = client.segment(data, [PromptSpec(**second, mask_input=seg1.prompts[0].low_res_logits[best])])
    ref_masks, ref_scores, _ = reference(predictor, second, True, mask_input=ref_logits1[best][None])
    compare("sam2.1 portrait/second_round_mask_input/multi", seg2.prompts[0], ref_masks, ref_scores, fidelity_results)


def test_reference_masks_are_not_trivial(predictors):
    assert_reference_masks_nontrivial(predictors, SHAPES)


AMG_CASES = {
    "grid8": LOW,
    "grid8_m2m": {**LOW, "use_m2m": True},
    "grid8_single_mask": {**LOW, "multimask_output": False},
    # a higher mask_threshold and no stability filter, or every crop's masks touch its edges
    "grid8_one_crop_layer_threshold1": {
        **LOW,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "stability_score_thresh": 0.0,
        "mask_threshold": 1.0,
    },
    "grid8_holes_and_sprinkles": {**LOW, "min_mask_region_area": 40},
    # the generator's threshold binarises; its predictor still fills at its own, 0
    "grid8_holes_threshold1": {**LOW, "min_mask_region_area": 40, "mask_threshold": 1.0, "stability_score_thresh": 0.0},
}


def scipy_connected_components(mask: torch.Tensor):
    """sam2.utils.misc.get_connected_components (8-connectivity labels and each pixel's component
    area, 0 on the background), which the reference computes with its CUDA kernel only."""
    from scipy import ndimage

    labels = np.zeros(mask.shape, np.int32)
    areas = np.zeros(mask.shape, np.int32)
    for n, m in enumerate(mask[:, 0].numpy().astype(bool)):
        lab, count = ndimage.label(m, structure=np.ones((3, 3), bool))
        labels[n, 0] = lab
        areas[n, 0] = np.where(lab > 0, np.bincount(lab.ravel(), minlength=count + 1)[lab], 0)
    return torch.from_numpy(labels), torch.from_numpy(areas)


@pytest.mark.parametrize("case", list(AMG_CASES))
def test_generate_masks_matches_sam2_generator(sam2_stack, fidelity_results, monkeypatch, case):
    """SAM2AutomaticMaskGenerator on the same weights. Its hole/sprinkle filling (min_mask_region_area)
    needs sam2's CUDA kernel for the connected components, or it is skipped with a warning: the
    reference runs here with those components found by scipy instead, so the case compares what the
    reference does with them (which logits, which values, before the upsampling)."""
    import sam2.utils.misc
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from build_engines.sam2_models import feature_sizes
    from samserve.core.rle import counts_to_mask

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", scipy_connected_components)
    loaded, client = sam2_stack
    h, w = 300, 420
    image = synthetic_image(h, w, seed=90)
    options = AMG_CASES[case]
    generator = SAM2AutomaticMaskGenerator(loaded.sam, output_mode="uncompressed_rle", **options)
    generator.predictor._bb_feat_sizes = feature_sizes(loaded.sam)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the filling must run, not be skipped
        with torch.no_grad():
            ref = generator.generate(image)
    assert len(ref) >= 10, f"the reference returned only {len(ref)} masks: the case proves too little"
    if options.get("crop_n_layers"):
        assert sum(r["crop_box"] != [0, 0, w, h] for r in ref) >= 10, "no masks of the crops: proves too little"
    got = client.generate_masks(encode(image), **options)
    ref_masks = [counts_to_mask(r["segmentation"]["counts"], h, w) for r in ref]
    pairs = match(ref, ref_masks, got, [g.segmentation for g in got])
    diffs = [abs(got[j].predicted_iou - ref[i]["predicted_iou"]) for i, j, _ in pairs]
    fidelity_results.append(
        (
            f"sam2.1 amg {case} ({len(ref)} ref, {len(got)} served)",
            float(np.mean([p[2] for p in pairs])),
            float(min(p[2] for p in pairs)),
            max(diffs),
        )
    )
    assert len(pairs) / len(ref) >= 0.98 and (len(got) - len(pairs)) / len(ref) <= 0.02
    assert max(diffs) <= 1e-3
    for i, j, _ in pairs:
        assert np.allclose(got[j].point_coords, ref[i]["point_coords"], atol=1e-3)


def test_generator_defaults_are_sam2s():
    import inspect

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from samserve.core.amg_options import AmgOptions

    ref = {k: p.default for k, p in inspect.signature(SAM2AutomaticMaskGenerator).parameters.items()}
    ours = AmgOptions().for_family("sam2")
    for name in ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh"):
        assert getattr(ours, name) == ref[name], name
    for name in ("use_m2m", "multimask_output", "mask_threshold", "min_mask_region_area", "box_nms_thresh"):
        assert getattr(ours, name) == ref[name], name
    assert AmgOptions().for_family("sam").pred_iou_thresh == 0.88
