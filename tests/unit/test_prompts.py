"""Prompt validation messages and the decoder input layout of SamPredictor."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything.utils.transforms import ResizeLongestSide

from samserve.core.errors import InvalidInput
from samserve.core.prompts import Prompt, apply_coords, decoder_batches, validate_prompts


def P(points=(), labels=(), box=None, mask=None) -> Prompt:
    return Prompt(
        np.array(points, dtype=np.float64).reshape(-1, 2),
        np.array(labels, dtype=np.int64),
        None if box is None else np.array(box, dtype=np.float64),
        mask,
    )


@pytest.mark.parametrize("size", [(480, 640), (333, 1500), (1500, 333)], ids=str)
def test_apply_coords_equals_reference(size):
    pts = np.random.default_rng(0).uniform(0, min(size), (5, 2))
    ref = ResizeLongestSide(1024).apply_coords(pts, size)
    np.testing.assert_array_equal(apply_coords(pts, size, 1024), ref)


def test_decoder_batches_layout_and_grouping():
    prompts = [
        P([(10, 20)], [1]),
        P(box=(0, 0, 100, 50)),
        P([(5, 5), (6, 6)], [1, 0], box=(1, 2, 3, 4)),
        P([(1, 1)], [0], mask=np.ones((64, 64), np.float32)),
    ]
    batches = decoder_batches(prompts, (200, 400), 256, 64)
    by_n = {b.point_coords.shape[1]: b for b in batches}
    assert sorted(by_n) == [2, 4]
    two = by_n[2]
    assert two.indices == [0, 1, 3]
    np.testing.assert_array_equal(two.point_labels, [[1, -1], [2, 3], [0, -1]])
    np.testing.assert_allclose(two.point_coords[0], [[6.4, 12.8], [0, 0]], rtol=1e-6)  # scale 256/400 = 0.64
    np.testing.assert_allclose(two.point_coords[1], [[0, 0], [64, 32]], rtol=1e-6)
    assert two.has_mask_input.tolist() == [0, 0, 1] and two.mask_input[2].min() == 1
    np.testing.assert_array_equal(by_n[4].point_labels, [[1, 0, 2, 3]])
    assert all(b.point_coords.dtype == np.float32 for b in batches)


@pytest.mark.parametrize(
    "prompt, message",
    [
        (P([(np.inf, 1)], [1]), "prompts[0].points[0].x = inf is not a finite number"),
        (P([(1, 101)], [1]), "prompts[0].points[0].y = 101 is outside the image; allowed 0..100"),
        (P([(1, 1)], [3]), "prompts[0].points[0].label = 3"),
        (P(box=(0, 50, 10, 40)), "needs x0 <= x1 and y0 <= y1"),
        (P(box=(0, 0, 201, 40)), "prompts[0].box (x1, y1).x = 201 is outside"),
        (P([(1, 1)], [1], mask=np.zeros((32, 32), np.float32)), "shape 32x32; this model takes 64x64"),
        (P([(1, 1)], [1], mask=np.full((64, 64), np.nan, np.float32)), "mask_input: contains NaN"),
        (P(), "needs at least one point or a box"),
    ],
    ids=["inf", "outside", "label", "box_order", "box_outside", "mask_shape", "mask_nan", "empty"],
)
def test_validate_names_the_field(prompt, message):
    with pytest.raises(InvalidInput) as err:
        validate_prompts([prompt], (100, 200), 64, 8, 8)
    assert message in str(err.value)


def test_points_on_the_border_are_accepted():
    validate_prompts([P([(0, 0), (200, 100)], [1, 0], box=(0, 0, 200, 100))], (100, 200), 64, 8, 8)
