"""RLE and the other mask formats round-trip and agree with pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samserve.core.mask_formats import (
    MaskFormat,
    encode_mask,
    packed_bits_to_mask,
    png_to_mask,
)
from samserve.core.rle import coco_rle_to_mask, counts_to_mask, mask_to_coco_rle, mask_to_counts

MASKS = {
    "empty": np.zeros((7, 5), bool),
    "full": np.ones((7, 5), bool),
    "random": np.random.default_rng(0).random((37, 53)) < 0.5,
    "sparse": np.random.default_rng(1).random((120, 80)) < 0.01,
    "blob": np.pad(np.ones((30, 40), bool), ((10, 20), (5, 15))),
    "one_pixel": np.ones((1, 1), bool),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_coco_rle_equals_pycocotools(name):
    m = MASKS[name]
    ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    got = mask_to_coco_rle(m)
    assert got["counts"] == ref["counts"].decode() and got["size"] == list(ref["size"])
    np.testing.assert_array_equal(coco_rle_to_mask(got), m)


@pytest.mark.parametrize("name", list(MASKS))
def test_uncompressed_counts_equal_reference_amg(name):
    import torch
    from segment_anything.utils.amg import mask_to_rle_pytorch

    m = MASKS[name]
    ref = mask_to_rle_pytorch(torch.from_numpy(m)[None])[0]
    assert mask_to_counts(m) == ref["counts"]
    np.testing.assert_array_equal(counts_to_mask(ref["counts"], *m.shape), m)


@pytest.mark.parametrize("name", list(MASKS))
def test_png_and_packed_bits_round_trip(name):
    m = MASKS[name]
    np.testing.assert_array_equal(png_to_mask(encode_mask(m, MaskFormat.PNG)), m)
    np.testing.assert_array_equal(packed_bits_to_mask(encode_mask(m, MaskFormat.PACKED_BITS), *m.shape), m)


def test_the_c_encoder_gives_the_same_coco_rle():
    from samserve.core.mask_formats import mask_to_coco_rle_c
    from samserve.core.rle import mask_to_coco_rle

    rng = np.random.default_rng(3)
    for shape in ((1, 1), (7, 5), (200, 300)):
        for density in (0.0, 0.3, 1.0):
            m = rng.random(shape) < density
            assert mask_to_coco_rle_c(m) == mask_to_coco_rle(m)
            assert mask_to_coco_rle_c(np.asfortranarray(m)) == mask_to_coco_rle(m)


@pytest.mark.parametrize(
    "counts",
    ["Q", "0", "\\\\", "~", "g0", "zzzzzzzzzzzzzzzzzzzzzzzzzzz0", "oooooooooooooooo0"],
    ids=[
        "ends-inside-a-value",
        "sums-short",
        "unterminated",
        "outside-the-alphabet",
        "negative",
        "sums-long",
        "over-60-bits",
    ],
)
def test_a_malformed_counts_string_is_a_value_error_never_a_mask(counts):
    """pycocotools' decoder returns uninitialised memory for counts that sum short ("0");
    this one refuses every malformed string."""
    with pytest.raises(ValueError):
        coco_rle_to_mask({"size": [4, 4], "counts": counts})


def test_speckled_masks_decode_exactly():
    """Many runs, multi-chunk values of both signs: the vectorised decoder == the mask."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        h, w = rng.integers(1, 200, 2)
        m = rng.random((h, w)) < rng.random()
        m[: rng.integers(0, h + 1), : rng.integers(0, w + 1)] = rng.random() < 0.5  # long runs too
        np.testing.assert_array_equal(coco_rle_to_mask(mask_to_coco_rle(m)), m)
