"""The held-out scenes the shipped model is judged on: seeds the training never draws. Both
the served quality test (tests/quality) and `training.bar_counts` (in-process) use these."""

from __future__ import annotations

import numpy as np

from training.synthetic import make_scene, random_size

HELD_OUT_SEED = 2_000_003  # training draws default_rng([seed, step]); its evaluation 1_000_003
MIN_AREA = 200  # shapes smaller than this are not scored (a few low-res mask cells)


def scenes(n: int, offset: int = 0):
    for i in range(n):
        rng = np.random.default_rng(HELD_OUT_SEED + offset + i)
        yield make_scene(rng, *random_size(rng, 256))
