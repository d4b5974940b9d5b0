"""The quality test's prompt protocol in-process, for checkpoints side by side: on the held-out
scenes (training.held_out: the quality test's seed and minimum area), how many shapes a centre point (the
best-scored of its three masks) gives IoU >= 0.8, an exact box IoU >= 0.85, and the best of
the point's three masks >= 0.8 (what a perfect IoU head would rank first).

The counts are the served test's (the reference's SamPredictor on the same weights; equal for
every checkpoint compared so far) in about a minute, without a Triton: for choosing which
candidate to serve, not instead of serving it (`pytest tests/quality`).

    .venv/bin/python -m training.bar_counts models/sam_small_shapes.pth /tmp/candidate.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from training.held_out import MIN_AREA, scenes
from training.train import center_point, click_and_box_ious


def prompt_ious(sam, n_scenes: int = 40) -> dict[str, np.ndarray]:
    """Per scored shape: IoU of the centre point's best-scored mask ("point"), of the exact
    box's single mask ("box") and the best of the point's three masks ("best_of_3")."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam.eval())
    out = {"point": [], "best_of_3": [], "box": []}  # in the order click_and_box_ious returns
    with torch.no_grad():
        for scene in scenes(n_scenes):
            kept = [m for m in scene.masks if m.sum() >= MIN_AREA]
            if not kept:
                continue
            predictor.set_image(scene.image)
            for m in kept:
                for key, value in zip(out, click_and_box_ious(predictor, m, center_point(m)), strict=True):
                    out[key].append(value)
    return {k: np.array(v) for k, v in out.items()}


def counts(ious: dict[str, np.ndarray]) -> dict[str, int | float]:
    n = len(ious["point"])
    return {
        "shapes": n,
        "point >= 0.8": int((ious["point"] >= 0.8).sum()),
        "box >= 0.85": int((ious["box"] >= 0.85).sum()),
        "best of 3 >= 0.8": int((ious["best_of_3"] >= 0.8).sum()),
        "point mean": round(float(ious["point"].mean()), 3),
        "box mean": round(float(ious["box"].mean()), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from build_engines import torchvision_compat
    from build_engines.models import load_checkpoint

    torchvision_compat.install()
    for path in args.checkpoints:
        row = counts(prompt_ious(load_checkpoint(path, "small").sam))
        print(f"{path}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
