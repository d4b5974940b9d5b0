"""numpy preprocessing == ResizeLongestSide.apply_image + Sam.preprocess, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from samserve.core.preprocess import preprocess, preprocess_shape
from samserve.devtools.sample_images import synthetic_image

SHAPES = [(480, 640), (640, 427), (1024, 1024), (333, 1500), (1500, 333), (17, 9), (256, 256)]
IDS = ["landscape", "portrait", "square1024", "elongated", "tall", "tiny", "exact"]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("img_size", [256, 1024])
def test_preprocess_equals_reference(small_sam, shape, img_size):
    sam = small_sam.sam
    image = synthetic_image(*shape, seed=shape[0])
    t = ResizeLongestSide(img_size)
    resized = t.apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
    x = (x - sam.pixel_mean) / sam.pixel_std
    ref = torch.nn.functional.pad(x, (0, img_size - x.shape[-1], 0, img_size - x.shape[-2])).numpy()
    got, input_size = preprocess(image, img_size, sam.pixel_mean.flatten().numpy(), sam.pixel_std.flatten().numpy())
    assert input_size == resized.shape[:2]
    assert got.dtype == np.float32 and got.shape == (1, 3, img_size, img_size)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_preprocess_shape_equals_reference(shape):
    assert preprocess_shape(*shape, 1024) == ResizeLongestSide.get_preprocess_shape(*shape, 1024)
