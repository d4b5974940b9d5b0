"""SAM 2's new-memory encoding, rewritten for export (the click-made-mask choice as an input),
equals SAM2VideoPredictor._encode_new_memory on the video predictor's own built flags, in
PyTorch and through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from build_engines.sam2_memory_encoder import ExportableMemoryEncoder


@pytest.fixture(scope="module")
def predictor():
    from tests.support.sam2_video import scaled_video_predictor

    return scaled_video_predictor(seed=4)


def inputs(p, b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    f = p.image_size // 16
    feats = torch.randn(b, p.hidden_dim, f, f, generator=g)
    masks = torch.randn(b, 1, 4 * f, 4 * f, generator=g) * 8  # low-resolution logits
    scores = torch.randn(b, 1, generator=g) * 3  # some objects present, some not
    scores[0, 0] = -abs(scores[0, 0]) - 0.5
    scores[-1, 0] = abs(scores[-1, 0]) + 0.5
    return feats, masks, scores


@torch.no_grad()
def reference(p, feats, masks, scores, from_points: bool):
    h, w = feats.shape[-2:]
    seq = feats.flatten(2).permute(2, 0, 1)  # (HW, B, C), as the predictor holds them
    s = p.image_size  # upsampled as propagate_in_video_preflight and _forward_sam_heads do
    high_res = torch.nn.functional.interpolate(masks, size=(s, s), mode="bilinear", align_corners=False)
    f, pos = p._encode_new_memory([seq], [(h, w)], high_res, scores, from_points)
    return f, pos[0]


def test_the_flags_are_the_video_predictors(predictor):
    m = ExportableMemoryEncoder(predictor)
    assert m.binarize  # build_sam2_video_predictor's override: the masks of clicks binarised
    assert (m.scale, m.bias) == (20.0, -10.0) and predictor.no_obj_embed_spatial is not None


@pytest.mark.parametrize("from_points", [True, False])
@torch.no_grad()
def test_equal_to_encode_new_memory(predictor, from_points):
    x = inputs(predictor, 3, seed=int(from_points))
    ref_f, ref_pos = reference(predictor, *x, from_points)
    f, pos = ExportableMemoryEncoder(predictor).eval()(*x, torch.tensor([float(from_points)]))
    assert ref_f.std() > 0.1 and not torch.equal(ref_f[0], ref_f[-1])
    torch.testing.assert_close(f, ref_f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pos, ref_pos)


@torch.no_grad()
def test_exported_it_keeps_both_mask_kinds_and_any_object_count(predictor, tmp_path):
    import onnxruntime as ort

    m = ExportableMemoryEncoder(predictor).eval()
    names = ["pix_feat", "pred_masks", "object_score_logits", "mask_from_points"]
    path = tmp_path / "memory_encoder.onnx"
    torch.onnx.export(
        m, (*inputs(predictor, 2, seed=9), torch.tensor([1.0])), str(path), input_names=names,
        output_names=["maskmem_features", "maskmem_pos_enc"], opset_version=17, dynamo=False,
        dynamic_axes={n: {0: "b"} for n in names[:3]},
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, from_points in [(1, True), (4, False), (4, True)]:
        x = inputs(predictor, b, seed=20 + b)
        feed = dict(zip(names, [t.numpy() for t in x] + [np.array([float(from_points)], np.float32)], strict=True))
        f, pos = sess.run(None, feed)
        ref_f, ref_pos = reference(predictor, *x, from_points)
        np.testing.assert_allclose(f, ref_f.numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(pos, ref_pos.numpy(), atol=1e-5)
