"""SAM 2.1 served through gateway + Triton + Redis equals sam2's own SAM2ImagePredictor on the
same weights. The model is built by build_sam2 from the packaged sam2.1_hiera_t config, scaled
down by hydra overrides (S=256, a narrow trunk; the decoder at full size) with random weights,
saved in the released checkpoints' layout ({"model": state_dict}) and loaded through build_sam2
as a downloaded sam2.1_hiera_*.pt is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samserve.client import PromptSpec
from samserve.devtools.sample_images import encode, synthetic_image
from tests.fidelity.test_predictor_parity import assert_reference_masks_nontrivial, compare, prompt_kinds, reference

SHAPES = {"portrait": (640, 427), "landscape": (300, 520), "square": (256, 256), "elongated": (96, 1200)}


@pytest.fixture(scope="module")
def sam2_stack(redis_server, cache_dir, tmp_path_factory):
    from build_engines.models import load_checkpoint
    from build_engines.repository import write_cpu_repository
    from build_engines.sam2_models import build_sam2_model, save_sam2_checkpoint
    from samserve.client import SamClient
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    work = tmp_path_factory.mktemp("sam2")
    path = save_sam2_checkpoint(build_sam2_model("sam2.1_scaled", seed=5), work / "sam2.1_scaled.pt")
    loaded = load_checkpoint(path, "sam2.1_scaled")
    repo = write_cpu_repository(loaded, work / "repo")
    triton = start_triton(repo, work / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    try:
        with SamClient(gw.target, timeout_s=300) as client:
            yield loaded, client
    finally:
        gw.stop()
        triton.stop()


def sam2_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from build_engines.sam2_models import feature_sizes

    p = SAM2ImagePredictor(model)
    p._bb_feat_sizes = feature_sizes(model)  # the reference hard-codes S=1024's
    return p


@pytest.fixture(scope="module")
def predictors(sam2_stack):
    loaded, _ = sam2_stack
    cache = {}

    def get(name: str):
        if name not in cache:
            h, w = SHAPES[name]
            img = synthetic_image(h, w, seed=80 + list(SHAPES).index(name))
            p = sam2_predictor(loaded.sam)
            with torch.no_grad():
                p.set_image(img)
            cache[name] = (p, encode(img))
        return cache[name]

    return get


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
