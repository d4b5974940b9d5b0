"""The tracking core (core.video_tracking over the exportable PyTorch modules the Triton graphs
are made from) against SAM2VideoPredictor on the same weights and the same JPEG frames: one
session of clicks, a correction, propagation, a box for a second object mid-video, a correction
on a tracked frame and its re-propagation, a backward pass, clearing and removing. Masks,
object scores, pointers and memories are compared on every frame the reference keeps."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from samserve.core.tracking_heads import NO_OBJ_SCORE
from samserve.core.video_memory import from_bf16
from samserve.core.video_tracking import FrameMasks, TrackingState, VideoTracker
from samserve.devtools.sample_videos import moving_shapes, shape_centre, write_jpeg_frames
from tests.support.sam2_video import (
    TorchTrackingModels,
    draw_object_scores,
    frame_features,
    reference_hole_filling,
    scaled_video_predictor,
    tracker_config_of,
)

T, H, W, SEED = 24, 144, 192, 7
STATS: dict[str, list] = {"iou": [], "present": [], "absent": [], "area": [], "dscore": []}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def video_res(logits: np.ndarray) -> np.ndarray:
    """_get_orig_video_res_output's upsampling (the gateway's own is tested apart)."""
    x = torch.from_numpy(logits)[:, None]
    return torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)[:, 0].numpy()


def same_masks(ref_masks: torch.Tensor, ref_ids: list[int], ours: FrameMasks, what: str) -> None:
    assert list(ref_ids) == ours.obj_ids, what
    ref = ref_masks[:, 0].numpy()
    got = video_res(ours.logits)
    for i, obj_id in enumerate(ours.obj_ids):
        score = iou(ref[i] > 0, got[i] > 0)
        STATS["iou"].append(score)
        STATS["area"].append(float((got[i] > 0).mean()))
        assert score >= 0.99, f"{what}: object {obj_id} IoU {score:.4f}"
        if ours.object_scores[i] is not None:
            STATS["present" if ours.object_scores[i] > 0 else "absent"].append(ours.object_scores[i])


def same_state(ref_state: dict, ours: TrackingState, what: str) -> None:
    """Every kept output of every object: logits, pointer, score to float rounding, the memories
    one bfloat16 step apart at most (where the float32s straddle a rounding)."""
    for idx, obj in enumerate(ours.objects):
        ref_out = ref_state["output_dict_per_obj"][idx]
        for key, kept in (("cond_frame_outputs", obj.cond), ("non_cond_frame_outputs", obj.non_cond)):
            assert sorted(ref_out[key]) == sorted(kept), f"{what}: object {obj.obj_id} {key}"
            for f, r in ref_out[key].items():
                o, where = kept[f], f"{what}: object {obj.obj_id} frame {f}"
                STATS["dscore"].append(abs(o.object_score_logits - float(r["object_score_logits"])))
                np.testing.assert_allclose(
                    o.pred_masks, r["pred_masks"][0, 0].numpy(), atol=2e-3, rtol=1e-3, err_msg=where
                )
                np.testing.assert_allclose(o.obj_ptr, r["obj_ptr"][0].numpy(), atol=2e-4, rtol=1e-3, err_msg=where)
                assert STATS["dscore"][-1] < 2e-4, where
                mem, ref_mem = from_bf16(o.maskmem_features), r["maskmem_features"][0].float().numpy()
                np.testing.assert_allclose(mem, ref_mem, atol=1e-3, rtol=2**-7, err_msg=where)


@pytest.fixture(scope="module", autouse=True)
def holes_filled_as_on_a_gpu():
    """The reference fills small holes (fill_hole_area) on a GPU only: here on the CPU too."""
    with reference_hole_filling():
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    predictor = scaled_video_predictor(seed=SEED)
    frames = moving_shapes(T, H, W, seed=SEED)
    folder = write_jpeg_frames(frames, tmp_path_factory.mktemp("video"))
    draw_object_scores(predictor, str(folder), [list(shape_centre(T, H, W, SEED, 0, 0))])
    decoded = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))]
    cache = {i: frame_features(predictor, f) for i, f in enumerate(decoded)}
    return predictor, str(folder), cache


def test_a_session_equals_sam2_video_predictor(setup, fidelity_results):
    """The tracking core over the exportable modules, on float32 features: equal to float
    rounding (the served graphs on float16 cached features: test_sam2_video_served.py)."""
    predictor, folder, cache = setup
    models = TorchTrackingModels(predictor)
    tracker = VideoTracker(models, tracker_config_of(predictor))

    async def features(i: int):
        return cache[i]

    async def propagate(state, **kw):
        return [m async for m in tracker.propagate(state, features, **kw)]

    def ref_propagate(ref_state, **kw):
        return list(predictor.propagate_in_video(ref_state, **kw))

    def compare_runs(ref_run, ours_run, what):
        assert [f for f, _, _ in ref_run] == [m.frame_idx for m in ours_run], what
        for (f, ids, masks), ours in zip(ref_run, ours_run, strict=True):
            same_masks(masks, ids, ours, f"{what}, frame {f}")

    ref = predictor.init_state(folder)
    ours = TrackingState(T, H, W)
    run = asyncio.run

    # object 1: a click on frame 0, then a negative click added to it
    x, y = shape_centre(T, H, W, SEED, 0, 0)
    _, ids, masks = predictor.add_new_points_or_box(ref, 0, 1, points=[[x, y]], labels=[1])
    same_masks(masks, ids, run(tracker.add_points(ours, 0, 1, features, np.array([[x, y]]), np.array([1]))), "click")
    nx, ny = 5.0, 5.0
    _, ids, masks = predictor.add_new_points_or_box(ref, 0, 1, points=[[nx, ny]], labels=[0], clear_old_points=False)
    got = run(tracker.add_points(ours, 0, 1, features, np.array([[nx, ny]]), np.array([0]), clear_old_points=False))
    same_masks(masks, ids, got, "second click")

    compare_runs(ref_propagate(ref), run(propagate(ours)), "forward")
    same_state(ref, ours, "after the forward pass")

    # object 2 added mid-video with a box, then tracked from there
    cx, cy = shape_centre(T, H, W, SEED, 1, 8)
    box = [cx - 20, cy - 15, cx + 20, cy + 15]
    _, ids, masks = predictor.add_new_points_or_box(ref, 8, 2, box=box)
    same_masks(masks, ids, run(tracker.add_points(ours, 8, 2, features, box=np.array(box))), "box mid-video")
    compare_runs(ref_propagate(ref, start_frame_idx=8), run(propagate(ours, start_frame_idx=8)), "from frame 8")
    same_state(ref, ours, "after the second object")

    # a correction on a tracked frame: kept as a non-conditioning output
    cx, cy = shape_centre(T, H, W, SEED, 0, 12)
    _, ids, masks = predictor.add_new_points_or_box(ref, 12, 1, points=[[cx, cy]], labels=[1])
    got = run(tracker.add_points(ours, 12, 1, features, np.array([[cx, cy]]), np.array([1])))
    same_masks(masks, ids, got, "correction on frame 12")
    compare_runs(ref_propagate(ref, start_frame_idx=12), run(propagate(ours, start_frame_idx=12)), "from 12")

    # backward from frame 8: object 2 goes back in time from its box
    back_ref = ref_propagate(ref, start_frame_idx=8, reverse=True)
    compare_runs(back_ref, run(propagate(ours, start_frame_idx=8, reverse=True)), "backward")
    same_state(ref, ours, "after the backward pass")

    # a bounded run
    compare_runs(
        ref_propagate(ref, start_frame_idx=3, max_frame_num_to_track=4),
        run(propagate(ours, start_frame_idx=3, max_frames=4)),
        "four frames from 3",
    )

    # clearing object 2's box, then removing object 1
    _, ids, masks = predictor.clear_all_prompts_in_frame(ref, 8, 2)
    same_masks(masks, ids, tracker.clear_prompts(ours, 8, 2), "cleared")
    ref_ids, ref_updated = predictor.remove_object(ref, 1)
    updated = tracker.remove_object(ours, 1)
    assert list(ref_ids) == ours.obj_ids == [2]
    assert [f for f, _ in ref_updated] == [m.frame_idx for m in updated]
    for (f, masks), m in zip(ref_updated, updated, strict=True):
        same_masks(masks, ours.obj_ids, m, f"frame {f} after the removal")

    # holes were filled (fill_hole_area, as the reference does on a GPU): the comparison covers it
    filled = sum(int((o.pred_masks == np.float32(0.1)).sum()) for obj in ours.objects for o in obj.non_cond.values())
    assert filled > 0
    # objects are batched: two objects tracked on a frame go to each model once
    assert max(models.calls["decode"]) == 2 and max(models.calls["condition"]) == 2

    # not vacuous: masks of every size, objects judged present and absent
    assert np.mean(STATS["iou"]) >= 0.999
    # not vacuous: objects judged present and absent, away from the boundary where a rounding
    # could flip them; present masks of varied sizes
    present, absent, areas = STATS["present"], STATS["absent"], np.array(STATS["area"])
    assert len(STATS["iou"]) > 100 and len(present) > 30 and len(absent) > 30, (len(present), len(absent))
    assert min(map(abs, present + absent)) > 1e-3
    assert (areas > 0.01).sum() > 30 and areas[areas > 0].std() > 0.02
    fidelity_results.append(
        (
            "sam2.1 video session (tracking core, pytorch)",
            float(np.mean(STATS["iou"])),
            min(STATS["iou"]),
            max(STATS["dscore"]),
        )
    )


def test_an_object_tracked_before_its_first_prompt_does_not_fail(setup):
    """The reference raises there (bfloat16 memory, float32 weights, no pointer to widen it):
    the tracker widens the memories and tracks."""
    predictor, folder, cache = setup
    tracker = VideoTracker(TorchTrackingModels(predictor), tracker_config_of(predictor))
    ref = predictor.init_state(folder)
    x, y = shape_centre(T, H, W, SEED, 2, 6)
    predictor.add_new_points_or_box(ref, 6, 5, points=[[x, y]], labels=[1])
    predictor.add_new_points_or_box(ref, 2, 4, points=[[x, y]], labels=[1])
    with pytest.raises(RuntimeError, match="same dtype"):
        list(predictor.propagate_in_video(ref))  # object 5 on frames 2-5

    async def features(i: int):
        return cache[i]

    async def run():
        state = TrackingState(T, H, W)
        await tracker.add_points(state, 6, 5, features, np.array([[x, y]]), np.array([1]))
        await tracker.add_points(state, 2, 4, features, np.array([[x, y]]), np.array([1]))
        return [m async for m in tracker.propagate(state, features)]

    masks = asyncio.run(run())
    assert [m.frame_idx for m in masks] == list(range(2, T))
    assert all(np.isfinite(m.logits).all() for m in masks)
    assert any((m.logits[1] != NO_OBJ_SCORE).any() for m in masks[:4])  # object 5 has masks before frame 6
