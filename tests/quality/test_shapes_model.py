"""The shipped model really segments: held-out synthetic scenes (seeds the training never
drew), through the served stack (gateway + Triton + Redis)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from samserve.client import PromptSpec
from tests.support.images import encode
from training.synthetic import make_scene, random_size

HELD_OUT_SEED = 2_000_003  # training draws default_rng([seed, step]); its evaluation 1_000_003
MIN_AREA = 200  # shapes smaller than this are not scored (a few low-res mask cells)
RESULTS: dict[str, float] = {}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def scenes(n: int, offset: int = 0):
    for i in range(n):
        rng = np.random.default_rng(HELD_OUT_SEED + offset + i)
        yield make_scene(rng, *random_size(rng, 256))


def center_point(mask: np.ndarray) -> tuple[float, float]:
    """The inside point farthest from the boundary (the usual single-click protocol)."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


@pytest.fixture(scope="module")
def prompt_results(trained_client):
    point_ious, box_ious = [], []
    for scene in scenes(40):
        masks = [m for m in scene.masks if m.sum() >= MIN_AREA]
        if not masks:
            continue
        data = encode(scene.image)
        points = [PromptSpec(points=[center_point(m)], labels=[1]) for m in masks]
        seg = trained_client.segment(data, points)
        for m, out in zip(masks, seg.prompts, strict=True):
            point_ious.append(iou(out.masks[int(np.argmax(out.iou_predictions))], m))
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append(PromptSpec(box=(xs.min(), ys.min(), xs.max(), ys.max())))
        seg = trained_client.segment(data, boxes, multimask_output=False)
        box_ious.extend(iou(out.masks[0], m) for m, out in zip(masks, seg.prompts, strict=True))
    return np.array(point_ious), np.array(box_ious)


def test_one_positive_point_segments_the_shape(prompt_results):
    point, _ = prompt_results
    RESULTS.update(point_instances=len(point), point_mean_iou=point.mean(), point_frac_ge_0_8=(point >= 0.8).mean())
    print(
        f"\npoint prompts: {len(point)} shapes, mean IoU {point.mean():.3f}, IoU >= 0.8 in {(point >= 0.8).mean():.1%}"
    )
    assert len(point) >= 80
    assert (point >= 0.8).mean() >= 0.90


def test_a_box_segments_the_shape(prompt_results):
    _, box = prompt_results
    RESULTS.update(box_mean_iou=box.mean(), box_frac_ge_0_85=(box >= 0.85).mean())
    print(f"\nbox prompts: {len(box)} shapes, mean IoU {box.mean():.3f}, IoU >= 0.85 in {(box >= 0.85).mean():.1%}")
    assert (box >= 0.85).mean() >= 0.90


def test_amg_recovers_the_shapes(trained_client):
    found, total = 0, 0
    for scene in scenes(12, offset=500):
        records = trained_client.generate_masks(encode(scene.image), points_per_side=16)
        predicted = [r.segmentation for r in records]
        for m in scene.masks:
            if m.sum() < MIN_AREA:
                continue
            total += 1
            found += any(iou(p, m) >= 0.7 for p in predicted)
    RESULTS.update(amg_shapes=total, amg_recall=found / max(total, 1))
    print(
        f"\nAMG (points_per_side 16, other options the reference's defaults): {found}/{total} shapes "
        f"recovered with IoU >= 0.7 ({found / max(total, 1):.1%})"
    )
    assert total >= 20
    assert found / total >= 0.80
