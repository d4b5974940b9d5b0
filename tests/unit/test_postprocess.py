"""numpy mask post-processing == Sam.postprocess_masks (torch bilinear, align_corners=False)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samserve.core.postprocess import postprocess_masks, resize_bilinear, select_masks
from samserve.core.preprocess import preprocess_shape


@pytest.mark.parametrize("size", [(256, 256), (1500, 333), (77, 1024), (64, 64), (30, 20), (1, 5)])
def test_resize_bilinear_equals_torch(size):
    x = np.random.default_rng(0).normal(0, 5, (2, 3, 64, 64)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(resize_bilinear(x, size), ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("original", [(480, 640), (333, 1500), (1024, 1024), (17, 9)], ids=str)
def test_postprocess_masks_equals_reference(small_sam, original):
    s = small_sam.img_size
    input_size = preprocess_shape(*original, s)
    low = np.random.default_rng(1).normal(0, 3, (1, 3, s // 4, s // 4)).astype(np.float32)
    ref = small_sam.sam.postprocess_masks(torch.from_numpy(low), input_size, original).numpy()
    got = postprocess_masks(low, s, input_size, original)
    assert got.shape == ref.shape == (1, 3, *original)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)
    assert ((got > 0) != (ref > 0)).mean() < 1e-5


@pytest.mark.parametrize("input_size", [(1024, 768), (683, 1024), (1024, 1), (1024, 1024), (5, 1024)], ids=str)
def test_only_the_unpadded_part_is_upsampled_yet_every_sample_is_torchs(input_size):
    """S = 1024 from L = 256: the cut source's edge clamp lands where the whole resize's does."""
    low = np.random.default_rng(2).normal(0, 5, (2, 3, 256, 256)).astype(np.float32)
    full = F.interpolate(torch.from_numpy(low), (1024, 1024), mode="bilinear", align_corners=False)
    ref = full[..., : input_size[0], : input_size[1]].numpy()
    got = postprocess_masks(low, 1024, input_size, input_size)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-6)


def test_select_masks_slices_like_mask_decoder():
    low = np.arange(4)[None, :, None, None] * np.ones((2, 4, 3, 3))
    iou = np.tile(np.arange(4.0), (2, 1))
    m, s = select_masks(low, iou, True)
    assert m.shape == (2, 3, 3, 3) and s.tolist() == [[1, 2, 3]] * 2
    m, s = select_masks(low, iou, False)
    assert m.shape == (2, 1, 3, 3) and s.tolist() == [[0], [0]]


@pytest.mark.parametrize("original", [(768, 1024), (1536, 2048), (300, 400)], ids=str)
def test_column_major_upsampling_is_the_same_logits_laid_out_for_rle(original):
    """column_major (what COCO RLE asks for) changes the memory layout, and the order of the
    two passes (so a float rounding), never a mask."""
    from samserve.core.postprocess import postprocess_sam2_masks

    low = np.random.default_rng(3).normal(0, 5, (1, 3, 256, 256)).astype(np.float32)
    input_size = preprocess_shape(*original, 1024)
    for run in (
        lambda cm: postprocess_masks(low, 1024, input_size, original, column_major=cm),
        lambda cm: postprocess_sam2_masks(low, original, column_major=cm),
    ):
        rows, cols = run(False), run(True)
        np.testing.assert_allclose(cols, rows, atol=1e-5, rtol=1e-6)
        assert ((cols > 0) != (rows > 0)).mean() < 1e-5
        if original[0] >= input_size[0]:  # upsampled last (not shrunk): each mask column-major
            assert all((m > 0).flags.f_contiguous for m in cols[0])
