"""Export SAM's image encoder and prompt-encoder + mask-decoder to ONNX.

Tensor names follow Meta's `scripts/export_onnx_model.py`. The decoder differs from Meta's
export in two deliberate ways: it returns the low-resolution logits of all four mask tokens
(the gateway upsamples and picks the multimask slice exactly as `SamPredictor` does, so no
full-resolution tensor crosses the wire), and it takes one image embedding *per prompt*,
so that prompts of different images can share one batch.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from build_engines import timm_compat, torchvision_compat
from samserve import contract

torchvision_compat.install()
timm_compat.install()

import torch  # noqa: E402
from segment_anything.modeling import Sam  # noqa: E402
from segment_anything.utils.onnx import SamOnnxModel  # noqa: E402

log = logging.getLogger(__name__)
OPSET = 17

ENCODER_INPUTS = [contract.ENCODER_INPUT]
ENCODER_OUTPUTS = [contract.EMBEDDINGS]
DECODER_INPUTS = list(contract.DECODER_INPUTS)
DECODER_OUTPUTS = list(contract.DECODER_OUTPUTS)


class SamDecoderOnnx(SamOnnxModel):
    """Prompt encoder + mask decoder over a batch of prompts.

    Inputs (B prompts, N points each; coordinates already in the model's S x S input frame):
      image_embeddings (B, 256, S/16, S/16) float32, one per prompt
      point_coords     (B, N, 2) float32; a box is two points labelled 2 and 3 after the points
      point_labels     (B, N) float32; 1 fg, 0 bg, 2/3 box corners, -1 padding ("not a point")
      mask_input       (B, 1, S/4, S/4) float32 low-res logits
      has_mask_input   (B,) float32, 1 where mask_input is used
    Outputs: low_res_masks (B, 4, S/4, S/4) float32 logits, iou_predictions (B, 4) float32.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam, return_single_mask=False)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input.reshape(-1, 1, 1, 1))
        return self._predict_masks(image_embeddings, sparse, dense)

    def _predict_masks(
        self, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # MaskDecoder.predict_masks, except that image_embeddings already has one row per
        # prompt instead of being repeat_interleave'd from a single image.
        md = self.model.mask_decoder
        output_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        src = image_embeddings + dense  # one row a prompt, or one for all (SamDecoderNoMaskOnnx)
        pos_src = self.model.prompt_encoder.get_dense_pe()  # broadcast, never copied a prompt
        b, (c, h, w) = tokens.shape[0], src.shape[1:]
        hs, src = md.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : (1 + md.num_mask_tokens), :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = md.output_upscaling(src)
        hyper_in = torch.stack(
            [md.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(md.num_mask_tokens)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou_pred = md.iou_prediction_head(iou_token_out)
        return masks, iou_pred


class SamDecoderNoMaskOnnx(SamDecoderOnnx):
    """SamDecoderOnnx for prompts without a mask input on one image: image_embeddings (1, 256,
    e, e), point_coords (B, N, 2), point_labels (B, N). The dense embedding is no_mask_embed, the
    same for every prompt, so the transformer's first layer takes the image side with batch 1:
    its projections of the image tokens are computed once and broadcast over the prompts (the
    reference computes the same numbers once a prompt)."""

    def forward(  # type: ignore[override]
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._predict_masks(image_embeddings, sparse, dense)


DECODER_AXES = {
    "image_embeddings": {0: "images"},  # 1 (broadcast over the prompts) or one per prompt
    "point_coords": {0: "prompts", 1: "points"},
    "point_labels": {0: "prompts", 1: "points"},
    "mask_input": {0: "prompts"},
    "has_mask_input": {0: "prompts"},
    "low_res_masks": {0: "prompts"},
    "iou_predictions": {0: "prompts"},
}
# the no-mask network: one image embedding (batch 1), no mask inputs
NOMASK_AXES = {k: v for k, v in DECODER_AXES.items() if k not in ("image_embeddings", "mask_input", "has_mask_input")}


def decoder_example_inputs(
    img_size: int, channels: int = 256, num_prompts: int = 2, num_points: int = 3
) -> tuple[torch.Tensor, ...]:
    """Tracing inputs of a decoder network (channels: of the embedding; SAM 2's packed 1024)."""
    e = img_size // 16
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(num_prompts, channels, e, e, generator=g),
        torch.rand(num_prompts, num_points, 2, generator=g) * img_size,
        torch.randint(-1, 4, (num_prompts, num_points), generator=g).float(),
        torch.randn(num_prompts, 1, 4 * e, 4 * e, generator=g),
        torch.ones(num_prompts),
    )


def _export(module: torch.nn.Module, example: tuple, path: Path, inputs, axes: dict) -> None:
    torch.onnx.export(
        module.eval(),
        example,
        str(path),
        input_names=list(inputs),
        output_names=DECODER_OUTPUTS,
        dynamic_axes=axes,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


@torch.no_grad()
def export_decoders(full: torch.nn.Module, nomask: torch.nn.Module, example: tuple, path: Path) -> Path:
    """A family's decoder networks: `full` to `path` (model.onnx), `nomask` (prompts without a
    mask input, one image) beside it as DECODER_NOMASK_FILE."""
    _export(full, example, path, DECODER_INPUTS, DECODER_AXES)
    log.info("exported decoder to %s", path)
    nomask_path = path.with_name(contract.DECODER_NOMASK_FILE)
    _export(nomask, (example[0][:1], example[1], example[2]), nomask_path, contract.DECODER_NOMASK_INPUTS, NOMASK_AXES)
    log.info("exported the no-mask decoder to %s", nomask_path)
    return path


@contextlib.contextmanager
def traceable_batch():
    """MobileSAM's TinyViT PatchMerging takes the batch size as len(x), which tracing freezes
    at the example's: for the export only, the same forward with x.shape[0] (verify_encoder
    runs batch 2 against PyTorch)."""
    from mobile_sam.modeling.tiny_vit_sam import PatchMerging

    original = PatchMerging.forward

    def forward(self, x):
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)

    PatchMerging.forward = forward
    try:
        yield
    finally:
        PatchMerging.forward = original


@torch.no_grad()
def export_encoder(sam: Sam, path: Path) -> Path:
    s = sam.image_encoder.img_size
    with traceable_batch():
        _export_encoder(sam, path, s)
    log.info("exported encoder to %s", path)
    return path


def _export_encoder(sam: Sam, path: Path, s: int) -> None:
    torch.onnx.export(
        sam.image_encoder,
        (torch.randn(1, 3, s, s),),
        str(path),
        input_names=ENCODER_INPUTS,
        output_names=ENCODER_OUTPUTS,
        dynamic_axes={contract.ENCODER_INPUT: {0: "batch"}, contract.EMBEDDINGS: {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


def export_decoder(sam: Sam, path: Path) -> Path:
    example = decoder_example_inputs(sam.image_encoder.img_size)
    return export_decoders(SamDecoderOnnx(sam), SamDecoderNoMaskOnnx(sam), example, path)
