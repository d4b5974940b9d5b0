"""training/: the synthetic scenes and the pieces of a training step (not a training run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.synthetic import make_scene, random_size
from training.train import (
    MEAN,
    STD,
    batch_input,
    center_point,
    data_stream,
    freeze_except,
    lr_at,
    noisy_box,
    prompt_losses,
    sample_point,
    step_data,
    to_input,
)


@pytest.mark.parametrize("seed", range(5))
def test_scenes_are_deterministic_and_masks_are_disjoint_visible_parts(seed):
    a = make_scene(np.random.default_rng(seed), *random_size(np.random.default_rng(seed), 256))
    b = make_scene(np.random.default_rng(seed), *random_size(np.random.default_rng(seed), 256))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    h, w = a.image.shape[:2]
    assert max(h, w) == 256 and 0.5 <= w / h <= 2.01
    assert a.masks.shape[1:] == (h, w) and a.masks.dtype == bool
    assert len(a.kinds) == len(a.masks) >= 1
    assert (a.masks.sum(axis=0) <= 1).all()  # a pixel belongs to at most one visible shape
    assert (a.masks.sum(axis=(1, 2)) >= 60).all()


def test_scene_mix_options_give_more_shapes_and_outlines():
    from scipy import ndimage

    def scenes(**mix):
        return [make_scene(np.random.default_rng(s), 128, 128, **mix) for s in range(40)]

    crowded = scenes(max_shapes=12)
    assert np.mean([len(sc.masks) for sc in crowded]) > np.mean([len(sc.masks) for sc in scenes()]) + 1
    assert all((sc.masks.sum(axis=0) <= 1).all() for sc in crowded)
    for share, thin in ((1.0, True), (0.0, False)):  # lone circles: an outline (3-7 px) is thin, a disc is not
        circles = [sc.masks[0] for sc in scenes(max_shapes=1, outline_share=share) if sc.kinds == ["circle"]]
        depth = [ndimage.distance_transform_edt(np.pad(m, 1)).max() for m in circles]
        assert circles and all((d <= 5) == thin for d in depth)


def test_box_noise_is_the_papers_scaled_to_the_input_frame():
    mask = np.zeros((200, 256), dtype=bool)
    mask[50:150, 60:200] = True
    rng = np.random.default_rng(0)
    boxes = np.stack([noisy_box(rng, mask, 256) for _ in range(500)])
    exact = np.array([60, 50, 199, 149])
    shift = np.abs(boxes - exact)
    assert shift.max() <= 20 * 256 / 1024 + 1e-9  # 20 px at 1024 -> 5 px at 256
    assert shift.mean() > 1  # and it is noisy
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 255 and boxes[:, [1, 3]].max() <= 199


def test_learning_rate_warms_up_then_anneals_to_zero():
    assert lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, warmup=10) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("use_box", [False, True])
def test_prompt_losses_train_the_decoder_and_weight_the_iou_head(use_box):
    from build_engines.models import build_small_sam

    torch.set_num_threads(1)
    sam = build_small_sam(img_size=128, seed=0).sam.train()
    rng = np.random.default_rng(3)
    scene = make_scene(rng, *random_size(rng, 128))
    emb = sam.image_encoder(to_input(scene.image, 128)[None])

    def loss(iou_weight):
        return prompt_losses(sam, emb, scene.masks[:2], np.random.default_rng(7), use_box, 2, 1.0, iou_weight)

    l0, l1, l2 = loss(0.0), loss(1.0), loss(2.0)
    assert torch.isfinite(l1) and l1 > l0 > 0
    # same prompts (same generator), so the IoU term enters linearly with its weight
    assert (l2 - l1).item() == pytest.approx((l1 - l0).item(), rel=1e-4, abs=1e-7)
    l1.backward()
    for module in (sam.mask_decoder.iou_prediction_head, sam.mask_decoder.output_upscaling, sam.image_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("use_box", [False, True])
def test_prompts_reach_a_larger_input_scaled_and_masks_are_scored_at_the_scene_size(use_box):
    """A 128-px scene on a model with a 256 input (as the service would resize it): the prompt
    encoder sees points and boxes in the 256 frame, the loss is taken against the 128-px masks."""
    from build_engines.models import build_small_sam

    torch.set_num_threads(1)
    sam = build_small_sam(img_size=256, seed=0).sam.train()
    rng = np.random.default_rng(5)
    scene = make_scene(rng, *random_size(rng, 128))
    gt = scene.masks[:2]
    x = to_input(scene.image, 256)
    h, w = scene.image.shape[:2]
    assert x.shape == (3, 256, 256) and x[:, 2 * h :, :].abs().sum() == 0 and x[:, :, 2 * w :].abs().sum() == 0
    seen = []
    forward = sam.prompt_encoder.forward

    def recording(points, boxes, masks):
        seen.append((points, boxes, masks))
        return forward(points, boxes, masks)

    sam.prompt_encoder.forward = recording
    loss = prompt_losses(sam, sam.image_encoder(x[None]), gt, np.random.default_rng(7), use_box, 2, scene_size=128)
    assert torch.isfinite(loss) and loss > 0
    points, boxes, masks = seen[0]
    assert masks is None and seen[1][2].shape == (2, 1, 64, 64)  # round 2: the previous low-res logits
    if use_box:
        for m, box in zip(gt, boxes.numpy() / 2, strict=True):
            ys, xs = np.nonzero(m)
            assert np.abs(box - [xs.min(), ys.min(), xs.max(), ys.max()]).max() <= 20 * 128 / 1024 + 1e-6
    else:
        for m, (px, py) in zip(gt, points[0][:, 0].numpy() / 2, strict=True):
            assert m[int(py), int(px)]  # the point, back in the scene's frame, is inside its mask


def test_center_point_is_the_inside_point_farthest_from_the_boundary():
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:12, 3:10] = True  # a 7 x 7 square
    mask[10:31, 30:51] = True  # a 21 x 21 square: the deepest inside point is its centre
    assert center_point(mask) == (40.0, 20.0)
    ring = np.zeros((41, 41), dtype=bool)
    yy, xx = np.mgrid[:41, :41]
    ring[(np.hypot(yy - 20, xx - 20) <= 18) & (np.hypot(yy - 20, xx - 20) >= 8)] = True
    x, y = center_point(ring)
    assert ring[int(y), int(x)]  # inside the ring, not in its hole


@pytest.mark.parametrize("use_box", [False, True])
def test_first_prompts_can_be_centre_points_and_exact_boxes_and_unset_shares_draw_nothing(use_box):
    """--center-share 1 / --exact-box-share 1: every first point is the mask's centre point,
    every box its exact box (scaled to the input frame). Unset or 0, they draw nothing: the first
    prompt is the paper's, from the generator's first draw, as in runs from before the options."""
    from build_engines.models import build_small_sam

    torch.set_num_threads(1)
    sam = build_small_sam(img_size=256, seed=0).sam.train()
    rng = np.random.default_rng(5)
    scene = make_scene(rng, *random_size(rng, 128))
    gt = scene.masks[:2]
    emb = sam.image_encoder(to_input(scene.image, 256)[None])
    seen = []
    forward = sam.prompt_encoder.forward

    def recording(points, boxes, masks):
        seen.append((points, boxes))
        return forward(points, boxes, masks)

    sam.prompt_encoder.forward = recording
    prompt_losses(sam, emb, gt, np.random.default_rng(7), use_box, 1, scene_size=128, center_share=1, exact_box_share=1)
    points, boxes = seen[0]
    for i, m in enumerate(gt):
        ys, xs = np.nonzero(m)
        if use_box:
            assert boxes[i].tolist() == [2.0 * v for v in (xs.min(), ys.min(), xs.max(), ys.max())]
        else:
            assert points[0][i, 0].tolist() == [2 * v for v in center_point(m)]
    for share in (None, 0.0):  # unset: the paper's prompts, from the generator's first draw as before
        seen.clear()
        prompt_losses(
            sam,
            emb,
            gt,
            np.random.default_rng(7),
            use_box,
            1,
            scene_size=128,
            center_share=share,
            exact_box_share=share,
        )
        first = seen[0][1][0] / 2 if use_box else seen[0][0][0][0, 0] / 2
        paper = (
            noisy_box(np.random.default_rng(7), gt[0], 128)
            if use_box
            else sample_point(np.random.default_rng(7), gt[0])
        )
        assert first.tolist() == pytest.approx(list(paper))


def test_train_only_freezes_all_but_the_named_parameters():
    """--train-only mask_decoder.iou_prediction_head: the loss still reaches the IoU head, and
    nothing else gets a gradient (the masks it ranks stay as they are)."""
    from build_engines.models import build_small_sam

    torch.set_num_threads(1)
    sam = build_small_sam(img_size=128, seed=0).sam.train()
    assert len(freeze_except(sam, None)) == len(list(sam.parameters()))
    trainable = freeze_except(sam, ["mask_decoder.iou_prediction_head"])
    assert trainable and all(n.startswith("mask_decoder.iou_prediction_head.") for n, _ in trainable)
    rng = np.random.default_rng(3)
    scene = make_scene(rng, *random_size(rng, 128))
    loss = prompt_losses(
        sam, sam.image_encoder(to_input(scene.image, 128)[None]), scene.masks[:2], rng, False, 2, 1.0, 3.0
    )
    loss.backward()
    head = {id(p) for _, p in trainable}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)
    assert all(p.grad is None for p in sam.parameters() if id(p) not in head)
    with pytest.raises(SystemExit, match="no parameter"):
        freeze_except(sam, ["no_such_module"])


def test_data_workers_make_the_same_steps_as_inline_and_stop_when_closed():
    from functools import partial

    make = partial(step_data, 5, n=2, scene_size=64, s=96, mix={"max_shapes": 3})
    inline = list(data_stream(make, 3, 9, workers=0))
    ahead = list(data_stream(make, 3, 9, workers=2))
    assert len(inline) == len(ahead) == 6
    for (rng_a, scenes_a, resized_a), (rng_b, scenes_b, resized_b) in zip(inline, ahead, strict=True):
        assert rng_a.bit_generator.state == rng_b.bit_generator.state  # the prompts draw on alike
        assert all(np.array_equal(a.masks, b.masks) for a, b in zip(scenes_a, scenes_b, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(resized_a, resized_b, strict=True))
        assert all(max(r.shape[:2]) == 96 for r in resized_a)
    assert not np.array_equal(inline[0][2][0], inline[1][2][0])  # each step its own scenes
    stream = data_stream(make, 0, 10**9, workers=2)
    next(stream)
    stream.close()  # leaves the pool: would hang or leak if the workers ran on


def test_training_inputs_are_the_served_pipelines():
    from samserve.core.preprocess import preprocess, to_model_input

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((64, 40), (30, 64), (64, 64))]
    x = batch_input(images, 64, "cpu")
    served = np.concatenate([to_model_input(im, 64, MEAN, STD) for im in images])
    assert x.shape == (3, 3, 64, 64) and np.array_equal(x.numpy(), served)
    small = rng.integers(0, 256, (20, 37, 3), dtype=np.uint8)  # resized up to the input first
    assert np.array_equal(to_input(small, 64).numpy(), preprocess(small, 64, MEAN, STD)[0][0])
