"""What SAM 2's tracker makes of its decoder's outputs (SAM2Base._forward_sam_heads and
MaskDecoder.forward's selection), in numpy, with the built model's flags.

From all four mask tokens' logits, IoU predictions and object pointers and the object score:
the multimask slice (or the single mask, with the stability fallback), the masks of an object
judged absent replaced by NO_OBJ_SCORE, the best mask by predicted IoU, and the object pointer
of the chosen token (the single-mask token unless use_multimask_token_for_obj_ptr), mixed with
the learned no-object pointer by the object's presence (hard or soft)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samserve.core.postprocess import stable_single_mask

NO_OBJ_SCORE = -1024.0  # sam2.modeling.sam2_base.NO_OBJ_SCORE


@dataclass(frozen=True)
class TrackingFlags:
    """The built model's, never assumed (build_engines.export_sam2_tracking.tracker_config
    reads them; core.video_tracking.TrackerConfig.from_json carries them here)."""

    pred_obj_scores: bool
    soft_no_obj_ptr: bool
    fixed_no_obj_ptr: bool
    use_multimask_token_for_obj_ptr: bool
    dynamic_multimask_via_stability: bool
    no_obj_ptr: np.ndarray | None  # (256,) float32, with pred_obj_scores


@dataclass(frozen=True)
class TrackingOutputs:
    low_res_multimasks: np.ndarray  # (B, C, L, L): C = 3 with multimask output, else 1
    ious: np.ndarray  # (B, C)
    low_res_masks: np.ndarray  # (B, 1, L, L): the best (or only) mask
    object_pointer: np.ndarray  # (B, 256)
    object_score_logits: np.ndarray  # (B, 1)


def tracking_heads(
    masks: np.ndarray,
    iou: np.ndarray,
    object_score_logits: np.ndarray,
    pointers: np.ndarray,
    multimask_output: bool,
    flags: TrackingFlags,
) -> TrackingOutputs:
    """masks (B, 4, L, L), iou (B, 4), object_score_logits (B, 1), pointers (B, 4, D): the
    tracking decoder's outputs for all four mask tokens."""
    if multimask_output:
        multi, ious = masks[:, 1:], iou[:, 1:]
    elif flags.dynamic_multimask_via_stability:
        multi, ious = stable_single_mask(masks, iou)
    else:
        multi, ious = masks[:, 0:1], iou[:, 0:1]
    tokens = pointers[:, 1:] if multimask_output and flags.use_multimask_token_for_obj_ptr else pointers[:, 0:1]
    present = object_score_logits > 0  # (B, 1)
    if flags.pred_obj_scores:
        multi = np.where(present[:, :, None, None], multi, np.float32(NO_OBJ_SCORE)).astype(np.float32)
    rows = np.arange(len(multi))
    if multimask_output:
        best = np.argmax(ious, axis=-1)
        low = multi[rows, best][:, None]
        pointer = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]
    else:
        low, pointer = multi, tokens[:, 0]
    pointer = pointer.astype(np.float32)
    if flags.pred_obj_scores:
        if flags.soft_no_obj_ptr:
            appearing = (1.0 / (1.0 + np.exp(-object_score_logits))).astype(np.float32)
        else:
            appearing = present.astype(np.float32)
        if flags.fixed_no_obj_ptr:
            pointer = appearing * pointer
        pointer = pointer + (np.float32(1.0) - appearing) * flags.no_obj_ptr
    return TrackingOutputs(multi, ious, low, pointer.astype(np.float32), object_score_logits)
