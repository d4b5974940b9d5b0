"""SAM 2's prompt encoder + mask decoder as the video tracker runs them (SAM2Base._forward_sam_heads),
in an exportable form: the image decoder's graph (export_sam2.Sam2DecoderOnnx) on a frame's
memory-conditioned features, returning what tracking needs besides the masks: the object score
and an object pointer for each of the four mask tokens (obj_ptr_proj of the token; row-wise, so
choosing the token afterwards is the same as the reference choosing it first). The choices the
reference makes after the decoder (multimask or single, the stability fallback, the no-object
mask and pointer) are made on these outputs by samserve.core.tracking_heads."""

from __future__ import annotations

import torch
from torch import Tensor

from build_engines.export_sam2 import Sam2DecoderOnnx


class Sam2TrackingDecoderOnnx(Sam2DecoderOnnx):
    """(backbone_features (B, 256, e, e), feat_s0 (B, 32, 4e, 4e), feat_s1 (B, 64, 2e, 2e),
    point_coords (B, N, 2) at the model's input scale, padded by the caller as the prompt encoder
    pads points without a box, point_labels (B, N), mask_input (B, 1, 4e, 4e), has_mask_input (B,))
    -> (low_res_masks (B, 4, 4e, 4e), iou_predictions (B, 4), object_score_logits (B, 1),
    object_pointers (B, 4, 256))."""

    def forward(  # type: ignore[override]
        self,
        backbone_features: Tensor,
        feat_s0: Tensor,
        feat_s1: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        pe, md = model.sam_prompt_encoder, model.sam_mask_decoder
        sparse = pe._embed_points(point_coords, point_labels, pad=False)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks, iou, hs = self._predict_masks_and_tokens(backbone_features, sparse, dense, feat_s0, feat_s1)
        s = 1 if md.pred_obj_scores else 0
        # without an object score head the reference scores every object present (10)
        scores = md.pred_obj_score_head(hs[:, 0, :]) if md.pred_obj_scores else 10.0 * torch.ones_like(iou[:, :1])
        tokens = hs[:, s + 1 : s + 1 + md.num_mask_tokens, :]
        return masks, iou, scores, model.obj_ptr_proj(tokens)
