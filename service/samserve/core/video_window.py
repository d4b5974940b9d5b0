"""A session's WINDOW mode: only what forward tracking reads is kept, so a session's state is
bounded per object whatever the video's length.

Tracking frame t reads every conditioning output, the memories of the num_maskmem - 1 frames
before it (at the evaluation stride) and the pointers of up to max_obj_ptrs_in_encoder - 1
frames before it. After each tracked frame, an object's outputs on older non-conditioning
frames are cut to that: the last frame kept whole, the frames within the memory span their
memory and pointer (not their logits), the frames within the pointer span their pointer, none
beyond. Per object: about num_maskmem - 1 memories, one frame's logits, the pointers and the
prompted frames' outputs, whatever the video's length (the reference keeps every frame's). The
frames stay marked as tracked (their masks were answered).

What needs something dropped is refused, never answered inexactly (the caller says so): a
propagation whose first frame would read a dropped memory (a re-run from an old frame, a
backward pass over frames tracked forward), or a correction on a frame whose logits were
dropped (any tracked frame but the last). FULL mode keeps everything and refuses none of it.
"""

from __future__ import annotations

from samserve.core.video_memory import FrameOutput, MemoryFlags
from samserve.core.video_tracking import TrackingState


def spans(flags: MemoryFlags) -> tuple[int, int]:
    """(memory span, pointer span): the farthest frame back a tracked frame reads each from."""
    stride = max(flags.memory_temporal_stride_for_eval, 1)
    return (flags.num_maskmem - 1) * stride, max(flags.max_obj_ptrs_in_encoder - 1, 0)


def prune(state: TrackingState, frame_idx: int, reverse: bool, flags: MemoryFlags) -> int:
    """Drops what no later frame of this direction reads, after frame_idx was tracked; the
    bytes dropped."""
    mem_span, ptr_span = spans(flags)
    dropped = 0
    for obj in state.objects:
        for f in list(obj.non_cond):
            back = (f - frame_idx) if reverse else (frame_idx - f)
            out = obj.non_cond[f]
            if back <= 0:
                continue  # this frame, or one ahead of it (tracked before, in the other direction)
            if back >= ptr_span:
                kept = None
            elif back >= mem_span:
                kept = FrameOutput(None, out.obj_ptr, out.object_score_logits, None)
            else:
                kept = FrameOutput(None, out.obj_ptr, out.object_score_logits, out.maskmem_features)
            if kept is None:
                dropped += out.nbytes
                del obj.non_cond[f]
            elif kept.nbytes < out.nbytes:
                dropped += out.nbytes - kept.nbytes
                obj.non_cond[f] = kept
    return dropped


def _dropped(state: TrackingState, obj_index: int, frame: int, need_memory: bool) -> bool:
    obj = state.objects[obj_index]
    if frame not in obj.tracked or frame in obj.cond:
        return False  # never tracked (the reference has nothing there either), or kept whole
    out = obj.non_cond.get(frame)
    return out is None or (need_memory and out.maskmem_features is None)


def window_gap(state: TrackingState, frame_idx: int, reverse: bool, flags: MemoryFlags) -> str | None:
    """Why tracking frame_idx in this direction would read an output the window dropped, or None."""
    mem_span, ptr_span = spans(flags)
    sign = 1 if reverse else -1
    for i, obj in enumerate(state.objects):
        if frame_idx in obj.cond:
            continue
        for back in range(1, max(ptr_span, mem_span) + 1):
            f = frame_idx + sign * back
            if 0 <= f < state.num_frames and _dropped(state, i, f, need_memory=back <= mem_span):
                return (
                    f"tracking frame {frame_idx} {'backward' if reverse else 'forward'} reads object {obj.obj_id}'s "
                    f"memory of frame {f}, which this WINDOW session no longer keeps (it keeps the frames just "
                    "behind the last tracked one): propagate from a later frame, or use a FULL session"
                )
    return None


def correction_gap(state: TrackingState, frame_idx: int, obj_id: int) -> str | None:
    """Why a correction of obj_id on frame_idx would need an output the window dropped, or None."""
    obj = state.object(obj_id)
    if obj is None or frame_idx not in obj.tracked or frame_idx in obj.cond:
        return None  # an initial conditioning frame needs no memory
    out = obj.non_cond.get(frame_idx)
    if out is None or out.pred_masks is None:
        return (
            f"object {obj_id} on frame {frame_idx} was tracked, and this WINDOW session keeps the mask to correct "
            "of its last tracked frame only: correct it there, or use a FULL session"
        )
    return None
