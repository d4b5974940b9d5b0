"""The reduced-precision gate: a model built in less than fp32 (TensorRT fp16 plans on the GPU
target, OpenVINO bf16 on the CPU target) is compared with the PyTorch model in fp32, end to end,
on fixed inputs: the held-out scenes the shipped model is judged on (training.held_out) and
random-noise images, each preprocessed as its family's reference does.

Per image: the embedding's error (reported), then the masks of a set of prompts (single points,
boxes, and a second round with the first round's mask as mask input) decoded from each side's
own embedding: IoU of the thresholded low-res masks (what the user sees), over every mask either
side has pixels in, and the largest IoU-prediction difference. Past the tolerances the model is
not served at that precision, and the build says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class EngineAccuracyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Tolerances:
    mask_iou_mean: float = 0.98  # thresholded low-res masks, mean over all compared masks
    mask_iou_min: float = 0.9  # the worst single mask
    iou_prediction_abs: float = 2e-2  # the largest |IoU prediction difference|


@dataclass(frozen=True)
class EngineAccuracy:
    embedding_max_abs: float
    embedding_rel: float  # max |reduced - fp32| / max |fp32|
    mask_iou_mean: float
    mask_iou_min: float
    iou_prediction_max_abs: float
    masks_compared: int  # masks with pixels on at least one side (empty on both: not counted)
    images: int

    def failures(self, tol: Tolerances) -> list[str]:
        out = []
        if not self.masks_compared:
            out.append("no mask had any pixel on either side: nothing was compared")
        if not self.mask_iou_mean >= tol.mask_iou_mean:
            out.append(f"mean mask IoU {self.mask_iou_mean:.4f} < {tol.mask_iou_mean:g}")
        if not self.mask_iou_min >= tol.mask_iou_min:
            out.append(f"worst mask IoU {self.mask_iou_min:.4f} < {tol.mask_iou_min:g}")
        if not self.iou_prediction_max_abs <= tol.iou_prediction_abs:
            out.append(f"IoU prediction difference {self.iou_prediction_max_abs:.3g} > {tol.iou_prediction_abs:g}")
        return out


def gate_images(family: str, img_size: int, pixel_mean, pixel_std, scenes: int = 3, noise: int = 2) -> np.ndarray:
    """(n, 3, S, S) float32 encoder inputs: `scenes` held-out scenes and `noise` uniform-noise
    images of other aspect ratios, preprocessed as the family's reference does."""
    from samserve.core.preprocess import preprocess_for
    from training.held_out import scenes as held_out_scenes

    images = [scene.image for scene in held_out_scenes(scenes)]
    rng = np.random.default_rng(7)
    for h, w in [(480, 640), (600, 400), (512, 512)][:noise]:
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return np.concatenate([preprocess_for(family, im, img_size, pixel_mean, pixel_std)[0] for im in images])


def gate_prompts(img_size: int, seed: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(point_coords (B, N, 2), point_labels (B, N)) in the S x S frame: 12 single foreground
    points (with the padding point of a prompt without a box), and 4 boxes."""
    rng = np.random.default_rng(seed)
    s = float(img_size)
    points = np.concatenate([rng.uniform(0.1 * s, 0.9 * s, (12, 1, 2)), np.zeros((12, 1, 2))], 1)
    point_labels = np.tile(np.array([[1.0, -1.0]]), (12, 1))
    corners = np.sort(rng.uniform(0.05 * s, 0.95 * s, (4, 2, 2)), axis=1)
    box_labels = np.tile(np.array([[2.0, 3.0]]), (4, 1))
    return [
        (points.astype(np.float32), point_labels.astype(np.float32)),
        (corners.astype(np.float32), box_labels.astype(np.float32)),
    ]


Encoder = Callable[[np.ndarray], np.ndarray]  # (n, 3, S, S) float32 -> (n, C, e, e) float32
# (embedding (1, C, e, e), coords (B, N, 2), labels (B, N), mask_input (B, 1, L, L), has_mask (B,))
# -> (low_res_masks (B, 4, L, L), iou_predictions (B, 4)), float32
Decoder = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def compare(
    images: np.ndarray,
    prompts: list[tuple[np.ndarray, np.ndarray]],
    reference: tuple[Encoder, Decoder],
    candidate: tuple[Encoder, Decoder],
    threshold: float = 0.0,
) -> EngineAccuracy:
    """The candidate (encoder, decoder) against the reference's, each on its own embeddings."""
    emb_abs = emb_ref_max = iou_abs = 0.0
    ious: list[np.ndarray] = []
    for x in images:
        ref_emb, got_emb = reference[0](x[None]), candidate[0](x[None])
        emb_abs = max(emb_abs, float(np.abs(got_emb - ref_emb).max()))
        emb_ref_max = max(emb_ref_max, float(np.abs(ref_emb).max()))
        for coords, labels in prompts:
            b, low = len(coords), 4 * x.shape[-1] // 16
            no_mask, zeros = np.zeros((b, 1, low, low), np.float32), np.zeros(b, np.float32)
            ref_m, ref_i = reference[1](ref_emb, coords, labels, no_mask, zeros)
            got_m, got_i = candidate[1](got_emb, coords, labels, no_mask, zeros)
            # a second round, as a click refined: each side's best first mask as its mask input
            best = np.argmax(ref_i[:, 1:], axis=1) + 1
            ref_in, got_in = (m[np.arange(b), best][:, None] for m in (ref_m, got_m))
            ones = np.ones(b, np.float32)
            ref_m2, ref_i2 = reference[1](ref_emb, coords, labels, ref_in, ones)
            got_m2, got_i2 = candidate[1](got_emb, coords, labels, got_in, ones)
            for a, p, ia, ip in ((ref_m, got_m, ref_i, got_i), (ref_m2, got_m2, ref_i2, got_i2)):
                a, p = a > threshold, p > threshold
                inter = (a & p).reshape(*a.shape[:2], -1).sum(-1)
                union = (a | p).reshape(*a.shape[:2], -1).sum(-1)
                ious.append((inter / np.maximum(union, 1))[union > 0])
                iou_abs = max(iou_abs, float(np.abs(ia - ip).max()))
    flat = np.concatenate(ious) if ious else np.zeros(0)
    return EngineAccuracy(
        embedding_max_abs=emb_abs,
        embedding_rel=emb_abs / max(emb_ref_max, 1e-12),
        mask_iou_mean=float(flat.mean()) if flat.size else 0.0,
        mask_iou_min=float(flat.min()) if flat.size else 0.0,
        iou_prediction_max_abs=iou_abs,
        masks_compared=int(flat.size),
        images=len(images),
    )


def gate(report: EngineAccuracy, what: str, tol: Tolerances | None = None, hint: str = "") -> EngineAccuracy:
    """Raises EngineAccuracyError naming every tolerance `report` misses."""
    log.info("%s vs PyTorch fp32: %s", what, report)
    failures = report.failures(tol or Tolerances())
    if failures:
        raise EngineAccuracyError(f"{what} fails the accuracy gate: " + "; ".join(failures) + hint)
    return report


def torch_reference(sam, family: str = "sam", device: str = "cpu") -> tuple[Encoder, Decoder]:
    """The PyTorch model in fp32 (on `device`), as the exported graphs compute it."""
    import torch

    _, encoder, decoder = reference_modules(sam.to(device), family)

    @torch.no_grad()
    def encode(x: np.ndarray) -> np.ndarray:
        return encoder(torch.from_numpy(x).to(device)).cpu().numpy()

    @torch.no_grad()
    def decode(emb, coords, labels, mask, has) -> tuple[np.ndarray, np.ndarray]:
        args = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (emb, coords, labels, mask, has))
        masks, iou = decoder(*args)
        return masks.cpu().numpy(), iou.cpu().numpy()

    return encode, decode


def cpu_candidate(encoder_onnx: Path, decoder_onnx: Path, precision: str) -> tuple[Encoder, Decoder]:
    """The CPU repository's networks as served (triton.cpu_runtime, the embedding stored as
    float16, prompts without a mask input through the no-mask network)."""
    from samserve.contract import DECODER_INPUTS, DECODER_NOMASK_FILE, DECODER_NOMASK_INPUTS, DECODER_OUTPUTS, OPENVINO
    from samserve.triton.cpu_runtime import CpuSession

    enc = CpuSession(str(encoder_onnx), precision, OPENVINO)
    dec = CpuSession(str(decoder_onnx), precision, OPENVINO)
    nomask_path = Path(decoder_onnx).with_name(DECODER_NOMASK_FILE)
    nomask = CpuSession(str(nomask_path), precision, OPENVINO) if nomask_path.is_file() else None

    def encode(x: np.ndarray) -> np.ndarray:
        return enc.run(["image_embeddings"], {"images": x})[0].astype(np.float16).astype(np.float32)

    def decode(emb, coords, labels, mask, has) -> tuple[np.ndarray, np.ndarray]:
        feed = dict(zip(DECODER_INPUTS, (emb, coords, labels, mask, has), strict=True))
        if nomask is not None and not has.any():
            return tuple(nomask.run(list(DECODER_OUTPUTS), {k: feed[k] for k in DECODER_NOMASK_INPUTS}))
        return tuple(dec.run(list(DECODER_OUTPUTS), feed))

    return encode, decode


def check_cpu_models(
    loaded, encoder_onnx: Path, decoder_onnx: Path, precision: str, tol: Tolerances | None = None
) -> EngineAccuracy:
    """The gate for a CPU repository's model at `precision` (bf16): EngineAccuracyError past it."""
    from build_engines.repository import normalisation
    from samserve.triton.cpu_runtime import Bf16Unavailable

    try:
        candidate = cpu_candidate(encoder_onnx, decoder_onnx, precision)
    except Bf16Unavailable as exc:
        raise EngineAccuracyError(f"{loaded.model_type} cannot run in {precision} here: {exc}") from None
    mean, std, threshold = normalisation(loaded)
    images = gate_images(loaded.family, loaded.img_size, mean, std)
    reference = torch_reference(loaded.sam.eval(), loaded.family)
    report = compare(images, gate_prompts(loaded.img_size), reference, candidate, threshold)
    return gate(report, f"{loaded.model_type} in {precision} (OpenVINO)", tol)


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


def trt_candidate(encoder_plan: Path, decoder_plan: Path) -> tuple[Encoder, Decoder]:
    """The GPU repository's plans as served (one embedding row a prompt, float16 on the wire)."""
    import torch

    encoder, decoder = TrtRunner(encoder_plan.read_bytes()), TrtRunner(decoder_plan.read_bytes())

    def encode(x: np.ndarray) -> np.ndarray:
        emb = encoder(images=torch.from_numpy(x))["image_embeddings"]
        return emb.half().float().cpu().numpy()

    def decode(emb, coords, labels, mask, has) -> tuple[np.ndarray, np.ndarray]:
        b = len(coords)
        feeds = {"image_embeddings": torch.from_numpy(emb).expand(b, -1, -1, -1)}
        feeds |= {k: torch.from_numpy(v) for k, v in zip(DECODER_NAMES[1:], (coords, labels, mask, has), strict=True)}
        out = decoder(**feeds)
        return out["low_res_masks"].float().cpu().numpy(), out["iou_predictions"].float().cpu().numpy()

    return encode, decode


DECODER_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")


def check_engines(loaded, encoder_plan: Path, decoder_plan: Path, tol: Tolerances | None = None) -> EngineAccuracy:
    """The gate for a GPU repository's TensorRT fp16 plans (needs a GPU): EngineAccuracyError past it."""
    from build_engines.repository import normalisation

    mean, std, threshold = normalisation(loaded)
    images = gate_images(loaded.family, loaded.img_size, mean, std)
    report = compare(
        images,
        gate_prompts(loaded.img_size),
        torch_reference(loaded.sam.eval(), loaded.family, device="cuda"),
        trt_candidate(encoder_plan, decoder_plan),
        threshold,
    )
    return gate(report, f"{loaded.model_type} TensorRT fp16 plans", tol, " (pin more layers with --fp32-layers)")
