"""A tracked frame's masks at the video's size: _get_orig_video_res_output's one bilinear
upsampling of the low-res logits (align_corners=False), the non-overlap constraint when the
model sets non_overlap_masks, then logits > 0, each mask encoded in the asked format with its
bounding box."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samserve.core.mask_formats import MaskFormat, Payload, encode_mask
from samserve.core.postprocess import postprocess_sam2_masks
from samserve.core.video_tracking import FrameMasks


@dataclass(frozen=True)
class ObjectMask:
    object_id: int
    mask: Payload
    score: float  # the object score logit (0 without an output)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (pixel edges); zeros when empty
    has_output: bool


def non_overlapping(logits: np.ndarray) -> np.ndarray:
    """SAM2Base._apply_non_overlapping_constraints on (n, H, W) logits: where an object is not
    the highest, its logits are clamped to -10 at most."""
    if len(logits) <= 1:
        return logits
    best = np.argmax(logits, axis=0)
    keep = best[None] == np.arange(len(logits))[:, None, None]
    return np.where(keep, logits, np.minimum(logits, np.float32(-10.0)))


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def object_masks(
    masks: FrameMasks,
    size: tuple[int, int],
    fmt: MaskFormat,
    tolerance: float,
    non_overlap: bool,
    only: set[int] | None = None,
) -> list[ObjectMask]:
    """`only`: the objects to return (all are upsampled when the non-overlap constraint needs them)."""
    rows = [i for i, o in enumerate(masks.obj_ids) if only is None or o in only]
    if not rows:
        return []
    chosen = masks.logits if non_overlap else masks.logits[rows]
    video = postprocess_sam2_masks(chosen[None], size)[0]
    if non_overlap:
        video = non_overlapping(video)[rows]
    out = []
    for k, i in enumerate(rows):
        binary = video[k] > 0
        score = masks.object_scores[i]
        out.append(
            ObjectMask(
                masks.obj_ids[i],
                encode_mask(np.ascontiguousarray(binary), fmt, tolerance),
                0.0 if score is None else float(score),
                _box(binary),
                score is not None,
            )
        )
    return out
