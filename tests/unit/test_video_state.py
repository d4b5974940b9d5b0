"""A video session's state as the state Redis keeps it (core.video_state_codec) and what a
WINDOW session keeps of it (core.video_window)."""

from __future__ import annotations

import numpy as np
import pytest

from samserve.core.video_memory import FrameOutput, MemoryFlags, to_bf16
from samserve.core.video_state_codec import CorruptState, decode_output, encode_output, referenced, restore, skeleton
from samserve.core.video_tracking import ObjectState, TrackingState
from samserve.core.video_window import correction_gap, prune, spans, window_gap

FLAGS = MemoryFlags(7, -1, 1, True, 16, True, True)


def output(seed: int, memory: bool = True, masks: bool = True) -> FrameOutput:
    rng = np.random.default_rng(seed)
    return FrameOutput(
        rng.standard_normal((16, 16)).astype(np.float32) if masks else None,
        rng.standard_normal(256).astype(np.float32),
        float(rng.standard_normal()),
        to_bf16(rng.standard_normal((64, 4, 4)).astype(np.float32)) if memory else None,
    )


def same(a: FrameOutput, b: FrameOutput) -> bool:
    arrays = [(a.pred_masks, b.pred_masks), (a.obj_ptr, b.obj_ptr), (a.maskmem_features, b.maskmem_features)]
    return a.object_score_logits == b.object_score_logits and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y)) for x, y in arrays
    )


@pytest.mark.parametrize("memory,masks", [(True, True), (False, True), (False, False)])
def test_an_output_round_trips(memory, masks):
    out = output(1, memory, masks)
    assert same(decode_output(encode_output(out)), out)


def test_a_damaged_output_is_refused_never_half_read():
    value = encode_output(output(2))
    flipped = bytearray(value)
    flipped[-5] ^= 1
    for bad in (
        b"",
        b"garbage",
        value[:-1],
        bytes(flipped),
        b"SSVFO\x01" + b"\xff" * 8,
        value.replace(b'"ptr":256', b'"ptr":1e9'),
    ):
        with pytest.raises(CorruptState):
            decode_output(bad)


def state_with_every_kind() -> TrackingState:
    state = TrackingState(30, 120, 160)
    a, b = ObjectState(7), ObjectState(-3)
    a.point_inputs[0] = (np.array([[1.5, 2.5]], np.float32), np.array([1], np.int32))
    a.cond[0], a.non_cond[1], a.non_cond[2] = output(3), output(4), output(5, memory=False, masks=False)
    a.temp_non_cond[5] = output(6, memory=False)
    a.tracked.update({0: False, 1: False, 2: False})
    b.point_inputs[4] = (np.zeros((0, 2), np.float32), np.zeros((0,), np.int32))
    b.temp_cond[4] = output(7, memory=False)
    state.objects += [a, b]
    return state


def test_the_state_round_trips_in_order():
    state = state_with_every_kind()
    outs = [o for obj in state.objects for k in ("cond", "non_cond", "temp_cond", "temp_non_cond")
            for o in getattr(obj, k).values()]  # fmt: skip
    uid_of = {id(o): 100 + i for i, o in enumerate(outs)}
    sk = skeleton(state, uid_of)
    assert referenced(sk) == set(uid_of.values())
    back = restore(sk, {uid_of[id(o)]: decode_output(encode_output(o)) for o in outs})
    assert back.obj_ids == [7, -3] and (back.num_frames, back.video_height, back.video_width) == (30, 120, 160)
    for x, y in zip(state.objects, back.objects, strict=True):
        for k in ("cond", "non_cond", "temp_cond", "temp_non_cond"):
            assert list(getattr(x, k)) == list(getattr(y, k))
            assert all(same(o, getattr(y, k)[f]) for f, o in getattr(x, k).items())
        assert x.tracked == y.tracked
        assert all(np.array_equal(x.point_inputs[f][i], y.point_inputs[f][i]) for f in x.point_inputs for i in (0, 1))
    with pytest.raises(CorruptState):
        restore(sk, {})  # an output it names is missing


def tracked_forward(n: int) -> TrackingState:
    state = TrackingState(200, 64, 64)
    obj = ObjectState(1)
    state.objects.append(obj)
    obj.cond[0] = output(0)
    obj.tracked[0] = False
    for f in range(1, n):
        obj.non_cond[f] = output(f)
        obj.tracked[f] = False
        prune(state, f, False, FLAGS)
    return state


def test_a_window_keeps_what_forward_tracking_reads_whatever_the_length():
    mem_span, ptr_span = spans(FLAGS)
    assert (mem_span, ptr_span) == (6, 15)
    sizes = []
    for n in (50, 120):
        state = tracked_forward(n)
        obj, last = state.objects[0], n - 1
        with_masks = [f for f, o in obj.non_cond.items() if o.pred_masks is not None]
        with_memory = sorted(f for f, o in obj.non_cond.items() if o.maskmem_features is not None)
        assert with_masks == [last] and with_memory == list(range(last - mem_span + 1, last + 1))
        assert sorted(obj.non_cond) == list(range(last - ptr_span + 1, last + 1))
        assert 0 in obj.cond and window_gap(state, last + 1, False, FLAGS) is None
        sizes.append(sum(o.nbytes for o in obj.non_cond.values()))
    assert sizes[0] == sizes[1]  # bounded by the window, not the video's length


def test_a_window_refuses_what_it_no_longer_keeps():
    state = tracked_forward(60)
    assert "frame" in window_gap(state, 20, False, FLAGS)  # a re-run from an old frame
    assert window_gap(state, 56, True, FLAGS) is None  # backward from near the end reads what it keeps
    assert "frame 50" in window_gap(state, 49, True, FLAGS)  # backward into the dropped frames
    assert "correct" in correction_gap(state, 58, 1)  # its logits are dropped
    assert correction_gap(state, 59, 1) is None and correction_gap(state, 0, 1) is None


def test_holes_are_filled_as_the_reference_fills_them():
    """core.video_tracking.fill_holes (OpenCV) against sam2's fill_holes_in_mask_scores with the
    written CPU connected components (scipy): random logits with regions of every size."""
    import torch
    from sam2.utils.misc import fill_holes_in_mask_scores

    from samserve.core.video_tracking import fill_holes
    from tests.support.sam2_video import reference_hole_filling

    rng = np.random.default_rng(3)
    filled_any = kept_any = False
    for seed in range(6):
        logits = (rng.standard_normal((64, 64)) + 0.4 * (seed % 3)).astype(np.float32)
        for area in (1, 4, 8, 30):
            with reference_hole_filling():
                ref = fill_holes_in_mask_scores(torch.from_numpy(logits)[None, None], area)[0, 0].numpy()
            got = fill_holes(logits, area)
            np.testing.assert_array_equal(got, ref)
            filled_any |= bool((got != logits).any())
            kept_any |= bool(((got <= 0) & (logits <= 0)).any())
    assert filled_any and kept_any  # holes filled, larger background regions kept
