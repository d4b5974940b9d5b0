"""Accuracy of built TensorRT engines against the PyTorch model in FP32, on fixed inputs.

Encoder: max and relative error of the embedding. Decoder: on the reference's own embedding
of the same image, IoU of the thresholded low-res masks (what the user sees) and the largest
IoU-prediction difference. The build fails past the tolerances. Needs a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class EngineAccuracyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Tolerances:
    embedding_rel_error: float = 2e-2  # max |trt - torch| / max |torch|
    mask_iou_min: float = 0.97  # thresholded low-res masks, worst prompt
    iou_prediction_abs: float = 2e-2


@dataclass(frozen=True)
class EngineAccuracy:
    embedding_max_abs: float
    embedding_rel: float
    mask_iou_mean: float
    mask_iou_min: float
    iou_prediction_max_abs: float


class TrtRunner:
    """Runs a serialized engine on torch CUDA tensors (no extra CUDA bindings needed)."""

    def __init__(self, plan: bytes) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self._trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def _dtype(self, name: str):
        t, trt = self._torch, self._trt
        return {trt.float32: t.float32, trt.float16: t.float16, trt.int32: t.int32}[self.engine.get_tensor_dtype(name)]

    def __call__(self, **feeds):
        torch = self._torch
        keep = {}
        for name in self.inputs:
            x = feeds[name].to("cuda", self._dtype(name)).contiguous()
            keep[name] = x
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self._dtype(name), device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outs


def reference_modules(sam, family: str = "sam"):
    """(image size, the encoder and the decoder as the exported graphs compute them, in PyTorch)."""
    if family == "sam2":
        from build_engines.export_sam2 import Sam2DecoderOnnx, Sam2EncoderOnnx

        return int(sam.image_size), Sam2EncoderOnnx(sam).eval(), Sam2DecoderOnnx(sam).eval()
    from build_engines.export_onnx import SamDecoderOnnx

    return int(sam.image_encoder.img_size), sam.image_encoder, SamDecoderOnnx(sam).eval()


def check_engines(
    sam, encoder_plan: Path, decoder_plan: Path, tol: Tolerances | None = None, family: str = "sam"
) -> EngineAccuracy:
    import torch

    tol = tol or Tolerances()
    sam = sam.cuda().eval()
    s, encoder, decoder = reference_modules(sam, family)
    e = s // 16
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        x = torch.randn(2, 3, s, s, generator=g).cuda()
        ref_emb = encoder(x)
        got_emb = TrtRunner(encoder_plan.read_bytes())(images=x)["image_embeddings"].float()
        emb_abs = float((got_emb - ref_emb).abs().max())
        emb_rel = emb_abs / max(float(ref_emb.abs().max()), 1e-12)

        b = 16
        emb = ref_emb[:1].expand(b, -1, -1, -1)
        coords = torch.rand(b, 3, 2, generator=g).cuda() * s
        labels = torch.tensor([[1.0, 0.0, -1.0]]).expand(b, 3).cuda()
        feeds = {
            "image_embeddings": emb,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": torch.zeros(b, 1, 4 * e, 4 * e).cuda(),
            "has_mask_input": torch.zeros(b).cuda(),
        }
        ref_masks, ref_iou = decoder(*feeds.values())
        got = TrtRunner(decoder_plan.read_bytes())(**feeds)
        a, p = ref_masks > 0, got["low_res_masks"].float() > 0
        inter = (a & p).flatten(2).sum(-1).float()
        union = (a | p).flatten(2).sum(-1).float()
        mask_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        iou_abs = float((got["iou_predictions"].float() - ref_iou).abs().max())
    report = EngineAccuracy(emb_abs, emb_rel, float(mask_iou.mean()), float(mask_iou.min()), iou_abs)
    sam.cpu()
    log.info("engine accuracy vs PyTorch FP32: %s", report)
    failures = []
    if not emb_rel <= tol.embedding_rel_error:
        failures.append(f"encoder embedding relative error {emb_rel:.3g} > {tol.embedding_rel_error:g}")
    if not report.mask_iou_min >= tol.mask_iou_min:
        failures.append(f"decoder mask IoU min {report.mask_iou_min:.4f} < {tol.mask_iou_min:g}")
    if not iou_abs <= tol.iou_prediction_abs:
        failures.append(f"decoder IoU prediction error {iou_abs:.3g} > {tol.iou_prediction_abs:g}")
    if failures:
        raise EngineAccuracyError("; ".join(failures) + " (pin more layers with --fp32-layers)")
    return report
