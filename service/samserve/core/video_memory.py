"""Which memories a tracked frame attends to: SAM2Base._prepare_memory_conditioned_features's
choice (sam2==1.1.0), without its tensors, and the arrays the conditioning model takes.

An object's memory is what it left on the frames it was prompted on (conditioning frames) and
on the frames it was tracked on (the others). On a frame that is not an initial conditioning
frame the reference attends to: every conditioning frame (or the max_cond_frames_in_attn
temporally closest), the num_maskmem - 1 frames before it (after it, tracking in reverse; with
a stride for evaluation), each with its t_pos; and up to max_obj_ptrs_in_encoder object
pointers: the conditioning frames' (only those not in the future, with
only_obj_ptrs_in_the_past_for_eval), then the frames just before, each at its signed (or
absolute) temporal distance over max_obj_ptrs - 1. The flags come from the built model.

Memories are kept as the reference keeps them: features in bfloat16 (here the upper 16 bits of
the float32, rounded to nearest even as torch rounds), the object pointer in float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even as torch's .to(torch.bfloat16)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(x)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    if nan.any():  # a NaN stays a (quiet) NaN, never rounded into an infinity
        rounded[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return rounded


def from_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32, exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


@dataclass
class FrameOutput:
    """One object's output on one frame, as the reference keeps it (its compact_current_out):
    the low-resolution mask logits, the object pointer and score, and, once the memory
    encoder has run, the memory features as bfloat16 bits (maskmem_pos_enc is a constant).
    A session that keeps only a forward window (core.video_window) drops the logits of older
    frames (pred_masks None), and their memories too beyond the frames tracking reads."""

    pred_masks: np.ndarray | None  # (L, L) float32
    obj_ptr: np.ndarray  # (C,) float32
    object_score_logits: float
    maskmem_features: np.ndarray | None = None  # (Cm, e, e) uint16 (bfloat16 bits)

    @property
    def nbytes(self) -> int:
        mem = 0 if self.maskmem_features is None else self.maskmem_features.nbytes
        masks = 0 if self.pred_masks is None else self.pred_masks.nbytes
        return masks + self.obj_ptr.nbytes + 4 + mem

    @property
    def pointer_only(self) -> bool:
        return self.pred_masks is None and self.maskmem_features is None


@dataclass(frozen=True)
class MemoryFlags:
    """The built model's, never assumed (read at build time: TrackerConfig)."""

    num_maskmem: int
    max_cond_frames_in_attn: int
    memory_temporal_stride_for_eval: int
    use_obj_ptrs_in_encoder: bool
    max_obj_ptrs_in_encoder: int
    only_obj_ptrs_in_the_past_for_eval: bool
    use_signed_tpos_enc_to_obj_ptrs: bool


def select_closest_cond_frames(
    frame_idx: int, cond: Mapping[int, T], max_cond: int
) -> tuple[dict[int, T], dict[int, T]]:
    """sam2.modeling.sam2_utils.select_closest_cond_frames: (selected, unselected), in the
    reference's order."""
    if max_cond == -1 or len(cond) <= max_cond:
        return dict(cond), {}
    if max_cond < 2:
        raise ValueError("max_cond_frames_in_attn must allow 2 or more conditioning frames")
    selected: dict[int, T] = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    selected.update((t, cond[t]) for t in rest[: max_cond - len(selected)])
    return selected, {t: v for t, v in cond.items() if t not in selected}


@dataclass(frozen=True)
class MemoryPlan(Generic[T]):
    """What one object attends to on one frame: (t_pos, frame output) for the spatial memories
    and (normalised signed distance, frame output) for the object pointers, in the reference's
    order (the model's attention does not depend on it; its float sums do, a little)."""

    memories: list[tuple[int, T]]
    pointers: list[tuple[float, T]]

    @property
    def shape(self) -> tuple[int, int]:
        """(memory frames, pointers): objects of one shape are conditioned in one batch."""
        return len(self.memories), len(self.pointers)


def plan_memory(
    frame_idx: int,
    cond: Mapping[int, T],
    non_cond: Mapping[int, T],
    num_frames: int,
    reverse: bool,
    flags: MemoryFlags,
) -> MemoryPlan[T]:
    """The memories and pointers for a frame that is not an initial conditioning frame."""
    if not cond:
        raise ValueError("a tracked frame needs at least one conditioning frame (a prompted frame) of its object")
    selected, unselected = select_closest_cond_frames(frame_idx, cond, flags.max_cond_frames_in_attn)
    memories: list[tuple[int, T]] = [(0, out) for out in selected.values()]
    stride = flags.memory_temporal_stride_for_eval
    n = flags.num_maskmem
    for t_pos in range(1, n):
        t_rel = n - t_pos
        if t_rel == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        out = non_cond.get(prev)
        if out is None:
            out = unselected.get(prev)
        if out is not None:
            memories.append((t_pos, out))
    pointers: list[tuple[float, T]] = []
    if flags.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, flags.max_obj_ptrs_in_encoder)
        if flags.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
        else:
            ptr_cond = selected
        sign = -1 if reverse else 1
        raw: list[tuple[int, T]] = [
            ((frame_idx - t) * sign if flags.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o)
            for t, o in ptr_cond.items()
        ]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            out = non_cond.get(t, unselected.get(t))
            if out is not None:
                raw.append((t_diff, out))
        # torch.tensor(int positions) / t_diff_max: float32 quotients, as the reference divides
        t_diff_max = max_ptrs - 1
        # (a one-frame video: the reference divides by zero and attends to NaN; here 0)
        pointers = [(float(np.float32(p) / np.float32(t_diff_max)) if t_diff_max else 0.0, o) for p, o in raw]
    return MemoryPlan(memories, pointers)


def conditioning_inputs(
    plans: list[MemoryPlan[FrameOutput]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The conditioning model's inputs for objects whose plans have one shape: memory (B, F, Cm,
    e, e) float32 (the bfloat16 memories widened exactly), memory_tpos (B, F) int64, pointers
    (B, P, C) float32, pointer_positions (B, P) float32."""
    if len({p.shape for p in plans}) != 1:
        raise ValueError("objects are conditioned together only when their plans have one shape")
    memory = np.stack([np.stack([from_bf16(o.maskmem_features) for _, o in p.memories]) for p in plans])
    tpos = np.array([[t for t, _ in p.memories] for p in plans], dtype=np.int64)
    n_ptr = plans[0].shape[1]
    c = len(plans[0].memories[0][1].obj_ptr)
    pointers = np.zeros((len(plans), n_ptr, c), np.float32)
    positions = np.zeros((len(plans), n_ptr), np.float32)
    for i, p in enumerate(plans):
        for j, (pos, o) in enumerate(p.pointers):
            pointers[i, j], positions[i, j] = o.obj_ptr, pos
    return memory, tpos, pointers, positions
