"""sam_decoder: prompts of all batched requests merged by point count, then run by ONNX Runtime
(CPU target) or, when the `core_model` parameter names one (GPU target), by that model (the
TensorRT plan sam_decoder_trt) over BLS, its batch dimension being the prompts."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from samserve.backends.bls import bls
from samserve.pipeline.batching import DecoderRequest, run_decoder_batched

INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
OUTPUTS = ["low_res_masks", "iou_predictions"]


def _parse(request, emb_size):
    t = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS}
    if any(v.shape[0] != 1 for v in t.values()):
        raise ValueError("every input must have batch size 1 (one image per request)")
    emb, coords, labels, mask, has = (t[name] for name in INPUTS)
    b, n = coords.shape[1], coords.shape[2]
    low = 4 * emb_size
    if emb.shape[1:] != (256, emb_size, emb_size):
        raise ValueError(f"image_embeddings must be (1, 256, {emb_size}, {emb_size}), got {emb.shape}")
    if b < 1 or n < 1:
        raise ValueError(f"need at least one prompt of at least one point, got point_coords {coords.shape}")
    if labels.shape != (1, b, n) or mask.shape != (1, b, 1, low, low) or has.shape != (1, b):
        raise ValueError(
            f"inconsistent shapes: point_coords {coords.shape}, point_labels {labels.shape}, "
            f"mask_input {mask.shape} (expected (1, {b}, 1, {low}, {low})), has_mask_input {has.shape}"
        )
    return DecoderRequest(emb, coords[0], labels[0], mask[0], has[0])


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.emb_size = int(params["img_size"]) // 16
        self.max_prompts = int(params.get("max_prompts_per_run", "64"))
        self.core_model = params.get("core_model", "")
        if self.core_model:
            self.session = None
            return
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def _run(self, feed):
        if self.core_model:  # its config declares has_mask_input as dims [1], reshaped to the engine's (B,)
            feed = {**feed, "has_mask_input": feed["has_mask_input"].reshape(-1, 1)}
            return tuple(bls(self.core_model, feed, OUTPUTS))
        masks, ious = self.session.run(OUTPUTS, feed)
        return masks, ious

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed, valid = [], []
        for i, request in enumerate(requests):
            try:
                parsed.append(_parse(request, self.emb_size))
                valid.append(i)
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        try:
            outputs = run_decoder_batched(
                parsed, self._run, self.max_prompts, np.float16 if self.core_model else np.float32
            )
        except Exception as exc:
            outputs = [exc] * len(valid)
        for i, out in zip(valid, outputs, strict=True):
            if isinstance(out, Exception):
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"decoder failed: {out}"))
                continue
            masks, ious = out
            responses[i] = pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor("low_res_masks", np.ascontiguousarray(masks[None], dtype=np.float32)),
                    pb_utils.Tensor("iou_predictions", np.ascontiguousarray(ious[None], dtype=np.float32)),
                ]
            )
        return responses
