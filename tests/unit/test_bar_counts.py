"""training/bar_counts.py: the quality test's prompt protocol, in-process."""

from __future__ import annotations

import torch

from build_engines.models import build_small_sam
from training.bar_counts import counts, prompt_ious
from training.held_out import MIN_AREA, scenes


def test_one_iou_per_scored_shape_and_the_best_of_three_bounds_the_ranked_one():
    torch.set_num_threads(1)
    sam = build_small_sam(img_size=128, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, seed=3).sam
    ious = prompt_ious(sam, n_scenes=2)
    scored = sum(int((s.masks.sum(axis=(1, 2)) >= MIN_AREA).sum()) for s in scenes(2))
    assert scored and all(len(v) == scored for v in ious.values())
    assert all(((v >= 0) & (v <= 1)).all() for v in ious.values())
    assert (ious["best_of_3"] >= ious["point"]).all()
    row = counts(ious)
    assert row["shapes"] == scored
    assert row["point >= 0.8"] == int((ious["point"] >= 0.8).sum()) <= row["best of 3 >= 0.8"]
