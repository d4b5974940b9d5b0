"""Synthetic training scenes as encoder inputs, for the tests of training/."""

from __future__ import annotations

import numpy as np

from training.synthetic import make_scene, random_size
from training.train import to_input


def scene_input(size: int = 128, seed: int = 11):
    """A synthetic training scene as the encoder's (1, 3, size, size) input tensor."""
    rng = np.random.default_rng(seed)
    return to_input(make_scene(rng, *random_size(rng, size)).image, size)[None]
