"""SAM 2's new-memory encoding in an exportable form (the video tracker's per-frame memory).

SAM2VideoPredictor._encode_new_memory with its choices made tensors, from the low-resolution
mask logits the tracker keeps (upsampled to S x S here, bilinearly, as _forward_sam_heads and
propagate_in_video_preflight do before encoding: a quarter of the bytes on the wire squared).
Whether the mask came
from clicks (binarised for the memory when the model's binarize_mask_from_pts_for_mem_enc
says so, else a sigmoid) is an input, so one graph serves both; the sigmoid's scale and bias,
the non-overlap constraint and the no-object spatial embedding come from the built model's
flags, read here, never assumed. Verified against the reference (tests/unit/
test_sam2_memory_encoder.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ExportableMemoryEncoder(nn.Module):
    """(pix_feat (B, C, H, W) the frame's top-level features (raw: no no_mem_embed),
    pred_masks (B, 1, L, L) low-resolution logits, object_score_logits (B, 1), mask_from_points
    (1,) 0 or 1) -> (maskmem_features (B, Cm, H, W), maskmem_pos_enc (B, Cm, H, W))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.binarize = bool(model.binarize_mask_from_pts_for_mem_enc)
        self.non_overlap = bool(model.non_overlap_masks_for_mem_enc)
        self.scale = float(model.sigmoid_scale_for_mem_enc)
        self.bias = float(model.sigmoid_bias_for_mem_enc)

    def forward(
        self, pix_feat: Tensor, pred_masks: Tensor, object_score_logits: Tensor, mask_from_points: Tensor
    ) -> tuple[Tensor, Tensor]:
        m = self.model
        size = int(m.image_size)
        masks = nn.functional.interpolate(pred_masks, size=(size, size), mode="bilinear", align_corners=False)
        if self.non_overlap:
            masks = m._apply_non_overlapping_constraints(masks)
        mask_for_mem = torch.sigmoid(masks)
        if self.binarize:
            mask_for_mem = torch.where(mask_from_points.reshape(()) > 0, (masks > 0).float(), mask_for_mem)
        if self.scale != 1.0:
            mask_for_mem = mask_for_mem * self.scale
        if self.bias != 0.0:
            mask_for_mem = mask_for_mem + self.bias
        out = m.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        features, pos = out["vision_features"], out["vision_pos_enc"][0]
        if m.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
        return features, pos
