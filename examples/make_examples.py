"""Writes the example images: synthetic shape scenes from seeds the training never drew.

.venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from training.synthetic import make_scene  # noqa: E402

SCENES = {
    "shapes_1.png": (3_000_001, 256, 320),
    "shapes_2.png": (3_000_004, 240, 320),
    "shapes_3.png": (3_000_007, 320, 256),
}

if __name__ == "__main__":
    for name, (seed, h, w) in SCENES.items():
        scene = make_scene(np.random.default_rng(seed), h, w)
        Image.fromarray(scene.image).save(HERE / name)
        print(name, f"{w}x{h}", len(scene.masks), "shapes:", ", ".join(scene.kinds))
