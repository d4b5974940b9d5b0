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
    for points, boxes, masks, oc, ol, om, oh in cases:
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
        ref_masks, ref_iou = sam.mask_decoder.predict_masks(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        got_masks, got_iou = sess.run(
            None,
            {
                "image_embeddings": emb.expand(b, -1, -1, -1).numpy(),
                "point_coords": oc.numpy(),
                "point_labels": ol.numpy(),
                "mask_input": om.numpy(),
                "has_mask_input": oh.numpy(),
            },
        )
        worst_masks = max(worst_masks, float(np.abs(ref_masks.numpy() - got_masks).max()))
        worst_iou = max(worst_iou, float(np.abs(ref_iou.numpy() - got_iou).max()))
    _check("decoder low_res_masks", worst_masks, tol)
    _check("decoder iou_predictions", worst_iou, tol)
    return worst_masks, worst_iou


def verify(sam: Sam, encoder_path: Path, decoder_path: Path, tol: float = 1e-3) -> Report:
    enc = verify_encoder(sam, encoder_path, tol)
    masks, iou = verify_decoder(sam, decoder_path, tol)
    return Report(enc, masks, iou)
