"""The tracker's decoder step, exported (all four tokens' masks, IoU, pointers and the object
score) and finished in numpy (core.tracking_heads), equals SAM2Base._forward_sam_heads of the
video predictor: masks, IoU, best mask, object pointer and object score, with and without
multimask output and a mask input, in PyTorch and through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from build_engines.sam2_tracking_decoder import Sam2TrackingDecoderOnnx
from samserve.core.tracking_heads import tracking_heads
from tests.support.sam2_video import tracker_config_of

B, N = 4, 2  # objects, clicks each


@pytest.fixture(scope="module")
def predictor():
    from tests.support.sam2_video import scaled_video_predictor

    return scaled_video_predictor(seed=5)


@torch.no_grad()
def centre_scores(p, x, has: torch.Tensor) -> None:
    """Shifts the object score head's bias so that on these inputs half the objects are judged
    present and half absent: both paths are compared, never only one."""
    feats, s0, s1, coords, labels, mask = x
    scores = Sam2TrackingDecoderOnnx(p)(feats, s0, s1, *padded(coords, labels), mask, has)[2].reshape(-1)
    bias = p.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    bias -= scores.sort().values[B // 2 - 1 : B // 2 + 1].mean()


def inputs(p, seed: int):
    g = torch.Generator().manual_seed(seed)
    e = p.image_size // 16
    feats = torch.randn(B, 256, e, e, generator=g)
    s0, s1 = torch.randn(B, 32, 4 * e, 4 * e, generator=g), torch.randn(B, 64, 2 * e, 2 * e, generator=g)
    coords = torch.rand(B, N, 2, generator=g) * p.image_size
    labels = torch.randint(0, 2, (B, N), generator=g).int()
    mask = torch.randn(B, 1, 4 * e, 4 * e, generator=g) * 4
    return feats, s0, s1, coords, labels, mask


def padded(coords, labels):
    """As the prompt encoder pads points without a box: a (0, 0) point labelled -1."""
    c = torch.cat((coords, torch.zeros(len(coords), 1, 2)), 1)
    return c, torch.cat((labels.float(), -torch.ones(len(labels), 1)), 1)


@torch.no_grad()
def reference(p, feats, s0, s1, coords, labels, mask, with_mask: bool, multimask: bool):
    out = p._forward_sam_heads(
        backbone_features=feats,
        point_inputs={"point_coords": coords, "point_labels": labels},
        mask_inputs=mask if with_mask else None,
        high_res_features=[s0, s1],
        multimask_output=multimask,
    )
    low_multi, _, ious, low, _, ptr, score = out
    return [t.numpy() for t in (low_multi, ious, low, ptr, score)]


def check(got, ref):
    names = ["low_res_multimasks", "ious", "low_res_masks", "object_pointer", "object_score_logits"]
    for name, r in zip(names, ref, strict=True):
        np.testing.assert_allclose(getattr(got, name), r, atol=2e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
@torch.no_grad()
def test_equal_to_forward_sam_heads(predictor, with_mask, multimask):
    x = inputs(predictor, seed=2 * with_mask + multimask)
    feats, s0, s1, coords, labels, mask = x
    graph = Sam2TrackingDecoderOnnx(predictor).eval()
    has = torch.full((B,), float(with_mask))
    centre_scores(predictor, x, has)
    outs = graph(feats, s0, s1, *padded(coords, labels), mask, has)
    got = tracking_heads(*(t.numpy() for t in outs), multimask, tracker_config_of(predictor).heads)
    ref = reference(predictor, feats, s0, s1, coords, labels, mask, with_mask, multimask)
    check(got, ref)
    score = ref[4].reshape(-1)
    assert (score > 0).any() and (score < 0).any(), score  # objects present and absent: not vacuous
    assert np.ptp(ref[3], axis=0).max() > 0.1  # the pointers differ between objects


@torch.no_grad()
def test_exported_through_onnx_runtime(predictor, tmp_path):
    import onnxruntime as ort

    graph = Sam2TrackingDecoderOnnx(predictor).eval()
    feats, s0, s1, coords, labels, mask = inputs(predictor, seed=7)
    names = ["backbone_features", "feat_s0", "feat_s1", "point_coords", "point_labels", "mask_input", "has_mask_input"]
    example = (feats, s0, s1, *padded(coords, labels), mask, torch.ones(B))
    dyn = {n: {0: "b"} for n in names}
    dyn["point_coords"][1] = dyn["point_labels"][1] = "n"
    path = tmp_path / "tracking_decoder.onnx"
    torch.onnx.export(
        graph, example, str(path), input_names=names, opset_version=17, dynamo=False, dynamic_axes=dyn,
        output_names=["low_res_masks", "iou_predictions", "object_score_logits", "object_pointers"],
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    flags = tracker_config_of(predictor).heads
    for seed, with_mask in [(11, False), (12, True)]:
        feats, s0, s1, coords, labels, mask = inputs(predictor, seed)
        x = (feats, s0, s1, *padded(coords, labels), mask, torch.full((B,), float(with_mask)))
        # the bias is a graph constant: scores are not re-centred here, the comparison holds as is
        outs = sess.run(None, {n: t.numpy() for n, t in zip(names, x, strict=True)})
        got = tracking_heads(*outs, True, flags)
        check(got, reference(predictor, feats, s0, s1, coords, labels, mask, with_mask, True))
