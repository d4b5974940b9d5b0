"""The video predictor the video tests compare with: build_sam2_video_predictor's model (its own
overrides: binarised click masks, multimask for tracking, ...) on the scaled 2.1 config, with
the random weights build_sam2_model draws."""

from __future__ import annotations

import torch


def scaled_video_predictor(seed: int):
    from sam2.build_sam import build_sam2_video_predictor

    from build_engines.sam2_models import SAM2_CONFIGS, build_sam2_model

    loaded = build_sam2_model("sam2.1_scaled", seed=seed)
    video = build_sam2_video_predictor(
        SAM2_CONFIGS["sam2.1_scaled"], None, device="cpu", mode="eval", hydra_overrides_extra=list(loaded.overrides)
    )
    video.load_state_dict(loaded.sam.state_dict(), strict=True)
    # drawn so that objects are judged present on some frames and absent on others: the
    # initialised head scores every object a little below zero, which would hide the present path
    head = video.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 2.0)
        last.bias.zero_()
    return video.eval()
