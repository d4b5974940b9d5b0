"""core/amg.py and core/amg_options.py: NMS equal to torchvision's in bounded memory, and the
GenerateMasks budgets that need the image's size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from samserve.core.amg import nms
from samserve.core.amg_options import AmgOptions
from samserve.core.errors import Overloaded


def random_boxes(rng: np.random.Generator, n: int, extent: float = 500.0, size: float = 120.0) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, size, (n, 2))], axis=1).round()
    boxes[::9] = boxes[::9][:, [0, 1, 0, 1]]  # zero-area boxes, as empty masks give
    return boxes


@pytest.mark.parametrize("n, threshold", [(300, 0.7), (1200, 0.5), (800, 0.0), (400, 1.0)])
def test_nms_equals_torchvisions_nms(n, threshold):
    from torchvision.ops import nms as tv_nms  # the real one, or the test stand-in where none imports

    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n)
    scores = rng.choice([0.5, 0.7, 0.9], n).astype(np.float32)  # ties, broken by input order
    expected = tv_nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores), threshold).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, threshold), expected)


def test_nms_of_30k_boxes_stays_in_megabytes():
    """The n x n IoU matrix of 30,000 boxes would be 3.6 GB per float32 copy."""
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 30_000, extent=300.0, size=200.0)  # heavily overlapping: most suppressed
    tracemalloc.start()
    try:
        kept = nms(boxes, rng.random(30_000).astype(np.float32), 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0 < len(kept) < 30_000
    assert peak < 32 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def test_encoder_runs_over_the_budget_are_refused_with_the_figures():
    opts = AmgOptions(points_per_side=6, crop_n_layers=4)
    opts.check_budget(16384)  # 12276 prompts: within the prompt budget
    with pytest.raises(Overloaded, match=r"crop_n_layers = 4 needs 341 encoder runs .* budget is 21"):
        opts.check_image_budget((600, 800), 1024, max_encoder_runs=21, max_mask_pixels=1 << 40)


def test_mask_pixels_count_every_crop_at_its_size():
    opts = AmgOptions(points_per_side=4, crop_n_layers=1, crop_overlap_ratio=0.0)
    # whole image 100x100: 3 x 16 x 10000; four 50x50 crops: 4 x 3 x 16 x 2500
    opts.check_image_budget((100, 100), 64, 21, 3 * 16 * 10000 + 4 * 3 * 16 * 2500)
    with pytest.raises(Overloaded, match="may upsample 960000 mask pixels; the configured budget is 959999"):
        opts.check_image_budget((100, 100), 64, 21, 959_999)
