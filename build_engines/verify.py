"""Check exported ONNX models against the PyTorch reference; fail loudly past a tolerance."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from build_engines import torchvision_compat

torchvision_compat.install()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from segment_anything.modeling import Sam  # noqa: E402

log = logging.getLogger(__name__)


class VerificationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Report:
    encoder_max_abs_diff: float
    decoder_masks_max_abs_diff: float
    decoder_iou_max_abs_diff: float


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _decoder_outputs(decoder_path: Path, sess, feed: dict, embedding: np.ndarray, nomask: bool) -> list:
    """[(masks, iou)] of the full network on `feed`, and for prompts without a mask input also
    of the no-mask network beside it, on the single `embedding`."""
    from samserve.contract import DECODER_NOMASK_FILE

    outputs = [sess.run(None, feed)]
    if nomask:
        plain = {
            "image_embeddings": embedding,
            "point_coords": feed["point_coords"],
            "point_labels": feed["point_labels"],
        }
        outputs.append(_session(Path(decoder_path).with_name(DECODER_NOMASK_FILE)).run(None, plain))
    return outputs


def _worst(ref_masks, ref_iou, outputs: list, worst_masks: float, worst_iou: float) -> tuple[float, float]:
    """The largest |network - reference| so far, of masks and of IoU predictions."""
    for masks, iou in outputs:
        worst_masks = max(worst_masks, float(np.abs(ref_masks.numpy() - masks).max()))
        worst_iou = max(worst_iou, float(np.abs(ref_iou.numpy() - iou).max()))
    return worst_masks, worst_iou


def _check(name: str, diff: float, tol: float) -> None:
    log.info("%s: max |onnx - torch| = %.3g (tolerance %.1g)", name, diff, tol)
    if not np.isfinite(diff) or diff > tol:
        raise VerificationError(f"{name}: max |onnx - torch| = {diff:.3g} exceeds tolerance {tol:g}")


@torch.no_grad()
def verify_encoder(sam: Sam, onnx_path: Path, tol: float = 1e-3) -> float:
    s = sam.image_encoder.img_size
    x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))  # batch 2: dynamic axis works
    ref = sam.image_encoder(x).numpy()
    got = _session(onnx_path).run(None, {"images": x.numpy()})[0]
    diff = float(np.abs(ref - got).max()) if got.shape == ref.shape else float("inf")
    _check("encoder image_embeddings", diff, tol)
    return diff


@torch.no_grad()
def verify_decoder(sam: Sam, onnx_path: Path, tol: float = 1e-3) -> tuple[float, float]:
    """Compares with the reference PromptEncoder + MaskDecoder.predict_masks on one embedding
    shared by several prompts: points + box + mask input, and points only (padding point)."""
    s = sam.image_encoder.img_size
    e = s // 16
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(1, 256, e, e, generator=g)
    sess = _session(onnx_path)
    worst_masks = worst_iou = 0.0
    b = 3
    coords = torch.rand(b, 2, 2, generator=g) * s
    labels = torch.randint(0, 2, (b, 2), generator=g).float()
    corners = torch.sort(torch.rand(b, 2, 2, generator=g) * s, dim=1).values
    mask_in = torch.randn(b, 1, 4 * e, 4 * e, generator=g)
    cases = [
        # (reference prompt-encoder args, onnx coords, onnx labels, mask, has_mask)
        (
            (coords, labels),
            corners.reshape(b, 4),
            mask_in,
            torch.cat([coords, corners], 1),
            torch.cat([labels, torch.tensor([[2.0, 3.0]]).expand(b, 2)], 1),
            mask_in,
            torch.ones(b),
        ),
        (
            (coords, labels),
            None,
            None,
            torch.cat([coords, torch.zeros(b, 1, 2)], 1),
            torch.cat([labels, -torch.ones(b, 1)], 1),
            torch.zeros(b, 1, 4 * e, 4 * e),
            torch.zeros(b),
        ),
    ]
    for k, (points, boxes, masks, oc, ol, om, oh) in enumerate(cases):
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
        ref_masks, ref_iou = sam.mask_decoder.predict_masks(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        rows = emb if k else emb.expand(b, -1, -1, -1)  # one a prompt, then one broadcast
        feed = {"image_embeddings": rows.numpy(), "point_coords": oc.numpy(), "point_labels": ol.numpy()}
        feed.update({"mask_input": om.numpy(), "has_mask_input": oh.numpy()})
        outputs = _decoder_outputs(onnx_path, sess, feed, emb.numpy(), masks is None)
        worst_masks, worst_iou = _worst(ref_masks, ref_iou, outputs, worst_masks, worst_iou)
    _check("decoder low_res_masks", worst_masks, tol)
    _check("decoder iou_predictions", worst_iou, tol)
    return worst_masks, worst_iou


def sam2_features(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM2ImagePredictor.set_image_batch's features of a normalised batch: (image_embed,
    feat_s1, feat_s0), NCHW."""
    from build_engines.sam2_models import feature_sizes

    _, vision_feats, _, _ = model._prepare_backbone_features(model.forward_image(x))
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    b = x.shape[0]
    s0, s1, embed = (
        f.permute(1, 2, 0).reshape(b, -1, *size) for f, size in zip(vision_feats, feature_sizes(model), strict=True)
    )
    return embed, s1, s0


@torch.no_grad()
def verify_sam2_encoder(model, onnx_path: Path, tol: float = 1e-3) -> float:
    from build_engines.export_sam2 import pack

    s = int(model.image_size)
    x = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))  # batch 2: dynamic axis works
    ref = pack(*sam2_features(model, x)).numpy()
    got = _session(onnx_path).run(None, {"images": x.numpy()})[0]
    diff = float(np.abs(ref - got).max()) if got.shape == ref.shape else float("inf")
    _check("SAM 2 encoder packed embedding", diff, tol)
    return diff


@torch.no_grad()
def verify_sam2_decoder(model, onnx_path: Path, tol: float = 1e-3) -> tuple[float, float]:
    """Compares with the reference's sam_prompt_encoder (which pads) + predict_masks on one
    image shared by several prompts: box + points + mask input, and points only."""
    from build_engines.export_sam2 import pack

    s = int(model.image_size)
    e = s // 16
    g = torch.Generator().manual_seed(2)
    embed, s1, s0 = (torch.randn(1, c, k * e, k * e, generator=g) for c, k in ((256, 1), (64, 2), (32, 4)))
    packed = pack(embed, s1, s0)
    sess = _session(onnx_path)
    b = 3
    coords = torch.rand(b, 2, 2, generator=g) * s
    labels = torch.randint(0, 2, (b, 2), generator=g).float()
    corners = torch.sort(torch.rand(b, 2, 2, generator=g) * s, dim=1).values
    mask_in = torch.randn(b, 1, 4 * e, 4 * e, generator=g)
    box_points = torch.cat([corners, coords], 1)
    box_labels = torch.cat([torch.tensor([[2.0, 3.0]]).expand(b, 2), labels], 1)
    pad, pad_label = torch.zeros(b, 1, 2), -torch.ones(b, 1)
    no_mask = torch.zeros(b, 1, 4 * e, 4 * e)
    cases = [  # (reference points, its mask, onnx coords, onnx labels, onnx mask, has_mask)
        (
            (box_points, box_labels),
            mask_in,
            torch.cat([box_points, pad], 1),
            torch.cat([box_labels, pad_label], 1),
            mask_in,
            torch.ones(b),
        ),
        (
            (coords, labels),
            None,
            torch.cat([coords, pad], 1),
            torch.cat([labels, pad_label], 1),
            no_mask,
            torch.zeros(b),
        ),
    ]
    worst_masks = worst_iou = 0.0
    pe = model.sam_prompt_encoder
    for k, (points, masks, oc, ol, om, oh) in enumerate(cases):
        sparse, dense = pe(points=points, boxes=None, masks=masks)
        ref_masks, ref_iou, _, _ = model.sam_mask_decoder.predict_masks(
            image_embeddings=embed,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=True,
            high_res_features=[s0.expand(b, -1, -1, -1), s1.expand(b, -1, -1, -1)],
        )
        rows = packed if k else packed.expand(b, -1, -1, -1)  # one a prompt, then one broadcast
        feed = {"image_embeddings": rows.numpy(), "point_coords": oc.numpy()}
        feed.update({"point_labels": ol.numpy(), "mask_input": om.numpy(), "has_mask_input": oh.numpy()})
        outputs = _decoder_outputs(onnx_path, sess, feed, packed.numpy(), masks is None)
        worst_masks, worst_iou = _worst(ref_masks, ref_iou, outputs, worst_masks, worst_iou)
    _check("SAM 2 decoder low_res_masks", worst_masks, tol)
    _check("SAM 2 decoder iou_predictions", worst_iou, tol)
    return worst_masks, worst_iou


def verify(sam: Sam, encoder_path: Path, decoder_path: Path, tol: float = 1e-3, family: str = "sam") -> Report:
    if family == "sam2":
        enc = verify_sam2_encoder(sam, encoder_path, tol)
        masks, iou = verify_sam2_decoder(sam, decoder_path, tol)
    else:
        enc = verify_encoder(sam, encoder_path, tol)
        masks, iou = verify_decoder(sam, decoder_path, tol)
    return Report(enc, masks, iou)
