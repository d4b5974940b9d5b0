"""Export a SAM 2 / 2.1 image model's encoder and prompt-encoder + mask-decoder to ONNX, under
the tensor names and the contract of SAM's export (export_onnx.py), so that the same Triton
models, cache and gateway serve it:

- the encoder returns the packed embedding (B, 1024, e, e) (contract.SAM2_EMBEDDING_CHANNELS):
  image_embed + no_mem_embed as SAM2ImagePredictor.set_image makes it, then the decoder's
  high-resolution features feat_s1 and feat_s0 (conv_s1 / conv_s0 of the FPN's first levels);
- the decoder takes one packed embedding per prompt and returns the low-res logits of all four
  mask tokens and their four (sigmoid) IoU predictions; the gateway picks the multimask slice
  or the single mask (with the reference's stability fallback) and upsamples.

Hiera's positional embedding (a bicubic resize of a parameter, tiled with the window one)
does not depend on the image at a fixed S: it is computed by PyTorch and enters the graph as a
constant, so ONNX Runtime's cubic filter never stands in for torch's.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from build_engines import torchvision_compat
from samserve import contract

torchvision_compat.install()

import torch  # noqa: E402

log = logging.getLogger(__name__)
OPSET = 17
EMBED, S1, S0 = 256, 64, 32  # channels of image_embed, feat_s1, feat_s0


def pack(image_embed: torch.Tensor, feat_s1: torch.Tensor, feat_s0: torch.Tensor) -> torch.Tensor:
    """(B, 256, e, e), (B, 64, 2e, 2e), (B, 32, 4e, 4e) -> (B, 1024, e, e)."""
    b, _, e, _ = image_embed.shape
    return torch.cat([image_embed.flatten(1), feat_s1.flatten(1), feat_s0.flatten(1)], 1).reshape(b, -1, e, e)


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pack's inverse: (image_embed, feat_s1, feat_s0)."""
    e = packed.shape[-1]
    image_embed = packed[:, :EMBED]
    feat_s1 = packed[:, EMBED : 2 * EMBED].reshape(-1, S1, 2 * e, 2 * e)
    feat_s0 = packed[:, 2 * EMBED :].reshape(-1, S0, 4 * e, 4 * e)
    return image_embed, feat_s1, feat_s0


def check_exportable(model) -> None:
    """The packed layout needs SAM 2's decoder width (256: feat_s1 / feat_s0 of 64 / 32 channels)."""
    md = model.sam_mask_decoder
    if md.transformer_dim != EMBED or not md.use_high_res_features:
        raise ValueError(
            f"SAM 2 export needs a 256-channel decoder with high-resolution features, got "
            f"transformer_dim={md.transformer_dim}, use_high_res_features={md.use_high_res_features}"
        )


class Sam2EncoderOnnx(torch.nn.Module):
    """(B, 3, S, S) normalised image -> (B, 1024, e, e) packed embedding."""

    def __init__(self, model) -> None:
        super().__init__()
        check_exportable(model)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        fpn = m.forward_image(images)["backbone_fpn"][-m.num_feature_levels :]  # S/4 (conv_s0), S/8 (conv_s1), S/16
        image_embed = fpn[-1]
        if m.directly_add_no_mem_embed:
            image_embed = image_embed + m.no_mem_embed.reshape(1, -1, 1, 1)
        return pack(image_embed, fpn[1], fpn[0])


class Sam2DecoderOnnx(torch.nn.Module):
    """Prompt encoder + mask decoder over a batch of prompts (the inputs of SamDecoderOnnx, the
    embedding packed). The caller lays the prompt out as SAM2ImagePredictor._predict does: box
    corners (labels 2, 3) first, then the points, then the padding point (0, 0) labelled -1;
    coordinates normalised by the original size times S."""

    def __init__(self, model) -> None:
        super().__init__()
        check_exportable(model)
        self.model = model

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.model.sam_prompt_encoder
        image_embed, feat_s1, feat_s0 = unpack(image_embeddings)
        sparse = pe._embed_points(point_coords, point_labels, pad=False)  # the caller padded
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._predict_masks(image_embed, sparse, dense, feat_s0, feat_s1)

    def _predict_masks(self, image_embed, sparse, dense, feat_s0, feat_s1):
        masks, iou, _ = self._predict_masks_and_tokens(image_embed, sparse, dense, feat_s0, feat_s1)
        return masks, iou

    def _predict_masks_and_tokens(self, image_embed, sparse, dense, feat_s0, feat_s1):
        # MaskDecoder.predict_masks with repeat_image=False (one embedding row per prompt) and
        # the positional encoding expanded instead of repeat_interleave'd; all four masks, and
        # the transformer's output tokens (the video tracker's object score and pointers).
        md = self.model.sam_mask_decoder
        weights = [md.iou_token.weight, md.mask_tokens.weight]
        s = 1 if md.pred_obj_scores else 0
        if s:
            weights.insert(0, md.obj_score_token.weight)
        output_tokens = torch.cat(weights, dim=0).unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        src = image_embed + dense  # one row a prompt, or one for all (Sam2DecoderNoMaskOnnx)
        pos_src = self.model.sam_prompt_encoder.get_dense_pe()  # broadcast, never copied a prompt
        b, (c, h, w) = tokens.shape[0], src.shape[1:]
        hs, src = md.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : (s + 1 + md.num_mask_tokens), :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = md.output_upscaling
        upscaled = act1(ln1(dc1(src) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
        hyper_in = torch.stack(
            [md.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(md.num_mask_tokens)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, md.iou_prediction_head(iou_token_out), hs


class Sam2DecoderNoMaskOnnx(Sam2DecoderOnnx):
    """Sam2DecoderOnnx for prompts without a mask input on one image (packed embedding (1, 1024,
    e, e)): as SamDecoderNoMaskOnnx, the image side of the first transformer layer once."""

    def forward(  # type: ignore[override]
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.model.sam_prompt_encoder
        image_embed, feat_s1, feat_s0 = unpack(image_embeddings)
        sparse = pe._embed_points(point_coords, point_labels, pad=False)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._predict_masks(image_embed, sparse, dense, feat_s0, feat_s1)


@contextlib.contextmanager
def constant_pos_embed(model):
    """Hiera's _get_pos_embed at the model's input size, computed once by PyTorch and returned
    as a constant while the encoder is traced."""
    trunk = model.image_encoder.trunk
    s = int(model.image_size)
    with torch.no_grad():
        fixed = trunk._get_pos_embed((s // 4, s // 4)).detach().clone()
    original = trunk._get_pos_embed
    trunk._get_pos_embed = lambda hw: fixed
    try:
        yield
    finally:
        trunk._get_pos_embed = original


@torch.no_grad()
def export_sam2_encoder(model, path: Path) -> Path:
    s = int(model.image_size)
    with constant_pos_embed(model):
        torch.onnx.export(
            Sam2EncoderOnnx(model).eval(),
            (torch.randn(1, 3, s, s),),
            str(path),
            input_names=[contract.ENCODER_INPUT],
            output_names=[contract.EMBEDDINGS],
            dynamic_axes={contract.ENCODER_INPUT: {0: "batch"}, contract.EMBEDDINGS: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    log.info("exported SAM 2 encoder to %s", path)
    return path


def export_sam2_decoder(model, path: Path) -> Path:
    from build_engines.export_onnx import decoder_example_inputs, export_decoders

    example = decoder_example_inputs(int(model.image_size), contract.SAM2_EMBEDDING_CHANNELS)
    return export_decoders(Sam2DecoderOnnx(model), Sam2DecoderNoMaskOnnx(model), example, path)
