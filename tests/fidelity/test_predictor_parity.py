"""Masks and IoU predictions through gateway + Triton + Redis equal SamPredictor's."""

from __future__ import annotations

import numpy as np
import pytest

from samserve.client import PromptSpec
from samserve.devtools.sample_images import encode, synthetic_image

# (height, width): a portrait, a landscape, a square 1024 and a very elongated one
SHAPES = {
    "portrait": (640, 427),
    "landscape": (375, 500),
    "square1024": (1024, 1024),
    "elongated": (333, 1500),
}


def prompt_kinds(h: int, w: int) -> dict[str, dict]:
    return {
        "one_point": {"points": [(0.4 * w, 0.55 * h)], "labels": [1]},
        "pos_neg_points": {
            "points": [(0.3 * w, 0.3 * h), (0.6 * w, 0.5 * h), (0.8 * w, 0.85 * h)],
            "labels": [1, 1, 0],
        },
        "box": {"box": (0.15 * w, 0.2 * h, 0.7 * w, 0.9 * h)},
        "box_and_points": {
            "points": [(0.4 * w, 0.5 * h), (0.2 * w, 0.8 * h)],
            "labels": [1, 0],
            "box": (0.1 * w, 0.1 * h, 0.75 * w, 0.95 * h),
        },
    }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def predictors(small_sam):
    from segment_anything import SamPredictor

    cache = {}

    def get(name: str):
        if name not in cache:
            h, w = SHAPES[name]
            img = synthetic_image(h, w, seed=list(SHAPES).index(name))
            p = SamPredictor(small_sam.sam)
            p.set_image(img)
            cache[name] = (p, encode(img))
        return cache[name]

    return get


def reference(predictor, spec: dict, multimask: bool, mask_input=None):
    import torch

    with torch.no_grad():
        masks, scores, logits = predictor.predict(
            point_coords=np.array(spec["points"], dtype=np.float32) if spec.get("points") else None,
            point_labels=np.array(spec["labels"]) if spec.get("points") else None,
            box=np.array(spec["box"]) if spec.get("box") else None,
            mask_input=mask_input,
            multimask_output=multimask,
        )
    return masks, scores, logits


def compare(case: str, served, ref_masks, ref_scores, results) -> None:
    assert served.masks.shape == ref_masks.shape, case
    ious = [iou(a, b) for a, b in zip(served.masks, ref_masks, strict=True)]
    diff = float(np.abs(served.iou_predictions - ref_scores).max())
    results.append((case, float(np.mean(ious)), float(np.min(ious)), diff))
    assert np.mean(ious) >= 0.99, f"{case}: mean mask IoU {np.mean(ious):.4f} < 0.99 ({ious})"
    assert diff <= 1e-3, f"{case}: |IoU prediction difference| {diff:.2e} > 1e-3"


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("kind", ["one_point", "pos_neg_points", "box", "box_and_points"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_segment_matches_predictor(client, predictors, fidelity_results, shape, kind, multimask):
    predictor, data = predictors(shape)
    h, w = SHAPES[shape]
    spec = prompt_kinds(h, w)[kind]
    seg = client.segment(data, [PromptSpec(**spec)], multimask_output=multimask)
    assert seg.original_size == (h, w)
    ref_masks, ref_scores, _ = reference(predictor, spec, multimask)
    compare(
        f"{shape}/{kind}/{'multi' if multimask else 'single'}",
        seg.prompts[0],
        ref_masks,
        ref_scores,
        fidelity_results,
    )


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_second_round_with_mask_input_matches_predictor(client, predictors, fidelity_results, shape, multimask):
    """Round 2 feeds round 1's best low-res logits back as mask_input, with an extra point."""
    predictor, data = predictors(shape)
    h, w = SHAPES[shape]
    first = {"points": [(0.45 * w, 0.5 * h)], "labels": [1]}
    seg1 = client.segment(data, [PromptSpec(**first)], return_low_res_logits=True)
    _, ref_scores1, ref_logits1 = reference(predictor, first, True)
    best = int(np.argmax(ref_scores1))
    assert int(np.argmax(seg1.prompts[0].iou_predictions)) == best
    np.testing.assert_allclose(seg1.prompts[0].low_res_logits[best], ref_logits1[best], atol=0.05)
    second = {"points": [(0.45 * w, 0.5 * h), (0.7 * w, 0.3 * h)], "labels": [1, 0]}
    seg2 = client.segment(
        data,
        [PromptSpec(**second, mask_input=seg1.prompts[0].low_res_logits[best])],
        multimask_output=multimask,
    )
    ref_masks, ref_scores, _ = reference(predictor, second, multimask, mask_input=ref_logits1[best][None])
    compare(
        f"{shape}/second_round_mask_input/{'multi' if multimask else 'single'}",
        seg2.prompts[0],
        ref_masks,
        ref_scores,
        fidelity_results,
    )


def test_several_prompts_in_one_request_match_one_by_one(client, predictors):
    """Prompts of different point counts in one request (two decoder batches) keep their order."""
    predictor, data = predictors("landscape")
    h, w = SHAPES["landscape"]
    kinds = prompt_kinds(h, w)
    specs = [
        kinds["box"],
        kinds["one_point"],
        kinds["pos_neg_points"],
        kinds["box_and_points"],
        kinds["one_point"],
    ]
    seg = client.segment(data, [PromptSpec(**s) for s in specs])
    assert len(seg.prompts) == len(specs)
    for i, spec in enumerate(specs):
        ref_masks, ref_scores, _ = reference(predictor, spec, True)
        assert np.abs(seg.prompts[i].iou_predictions - ref_scores).max() <= 1e-3, i
        assert np.mean([iou(a, b) for a, b in zip(seg.prompts[i].masks, ref_masks, strict=True)]) >= 0.99, i


def assert_reference_masks_nontrivial(predictors, shapes: dict[str, tuple[int, int]]) -> None:
    """Guards parity tests: a random-weight model must produce masks that are neither empty
    nor full, or equal masks would prove nothing."""
    fractions = []
    for shape, (h, w) in shapes.items():
        predictor, _ = predictors(shape)
        for spec in prompt_kinds(h, w).values():
            masks, _, _ = reference(predictor, spec, True)
            fractions.extend(m.mean() for m in masks)
    nontrivial = [f for f in fractions if 0.02 < f < 0.98]
    assert len(nontrivial) >= len(fractions) // 2, fractions


def test_reference_masks_are_not_trivial(predictors):
    assert_reference_masks_nontrivial(predictors, SHAPES)


def sixteen_bit_png(h: int, w: int, channels: int, seed: int) -> bytes:
    """A 16-bit PNG (cv2 writes BGR): the synthetic image scaled to 16 bits, low bytes random."""
    import cv2

    rgb = synthetic_image(h, w, seed).astype(np.uint16) * 256
    rgb += np.random.default_rng(seed).integers(0, 256, rgb.shape, dtype=np.uint16)
    arr = rgb[..., 0] if channels == 1 else rgb[..., ::-1]
    return cv2.imencode(".png", arr)[1].tobytes()


@pytest.mark.parametrize("channels", [1, 3], ids=["gray16", "rgb16"])
def test_16_bit_png_matches_predictor_on_cv2_imread(client, small_sam, fidelity_results, channels):
    """Users load images with cv2.imread (16 bits -> value >> 8) and hand SamPredictor RGB."""
    import cv2
    from segment_anything import SamPredictor

    h, w = 300, 420
    data = sixteen_bit_png(h, w, channels, seed=40 + channels)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    predictor = SamPredictor(small_sam.sam)
    predictor.set_image(image)
    spec = prompt_kinds(h, w)["box_and_points"]
    seg = client.segment(data, [PromptSpec(**spec)])
    ref_masks, ref_scores, _ = reference(predictor, spec, True)
    compare(
        f"{'gray16' if channels == 1 else 'rgb16'}/box_and_points/multi",
        seg.prompts[0],
        ref_masks,
        ref_scores,
        fidelity_results,
    )
