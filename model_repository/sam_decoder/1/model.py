"""sam_decoder: prompts of all batched requests merged by point count, then run by OpenVINO or
ONNX Runtime (CPU target: cpu_runtime.CpuSession) or, when the `core_model` parameter names one
(GPU target), by that model (the TensorRT plan sam_decoder_trt) over BLS, its batch dimension
being the prompts. A request whose embedding another model made (its model_id input) is refused."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from samserve.contract import (
    CORE_MODEL,
    DECODER_INPUTS,
    DECODER_NOMASK_FILE,
    DECODER_OUTPUTS,
    DEFAULT_RESIDENT_BYTES,
    EMBEDDING_KEY,
    MAX_PROMPTS_PER_RUN,
    MODEL_ID,
    NOT_RESIDENT,
    RESIDENT_BYTES,
    RUNTIME,
    ModelInfo,
    key_of_model,
    model_id_of,
    model_id_tensor,
)
from samserve.triton.batching import DecoderRequest, run_decoder_batched
from samserve.triton.bls import bls
from samserve.triton.cpu_runtime import cpu_session
from samserve.triton.model_config import parse, reported_runtime, version_file
from samserve.triton.residency import ResidentEmbeddings
from samserve.triton.responses import ModelMismatch, batched_responses, refuse_other_models, tensors_response


class NotResident(ValueError):
    """The request names an embedding by key alone, and it is not kept here: NOT_FOUND, which the
    gateway answers by sending the embedding."""


def _embedding(request, resident, model_id, dtype):
    """The request's embedding: the one it sends (kept under its key when it names one), or the
    one kept under its key."""
    key_t = pb_utils.get_input_tensor_by_name(request, EMBEDDING_KEY)
    key = None if key_t is None else model_id_of(key_t.as_numpy())
    if key is not None and not key_of_model(key, model_id):
        raise ModelMismatch(f"embedding_key {key!r} names an embedding of another model; this model is {model_id!r}")
    emb_t = pb_utils.get_input_tensor_by_name(request, DECODER_INPUTS[0])
    if emb_t is not None:
        return key, emb_t.as_numpy()
    if key is None:
        raise ValueError("send image_embeddings, or the embedding_key of one sent before")
    emb = resident.get(key)
    if emb is None:
        raise NotResident(f"{NOT_RESIDENT}: {key}")
    return None, emb  # already kept


def _parse(request, emb_size, model_id, channels=256, resident=None, dtype=np.float32):
    made_by = pb_utils.get_input_tensor_by_name(request, MODEL_ID)
    refuse_other_models(None if made_by is None else made_by.as_numpy(), model_id)
    keep, emb = _embedding(request, resident, model_id, dtype)
    t = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in DECODER_INPUTS[1:]}
    if emb.shape[0] != 1 or any(v.shape[0] != 1 for v in t.values()):
        raise ValueError("every input must have batch size 1 (one image per request)")
    coords, labels, mask, has = (t[name] for name in DECODER_INPUTS[1:])
    b, n = coords.shape[1], coords.shape[2]
    low = 4 * emb_size  # ModelInfo.low_res_size
    if emb.shape[1:] != (channels, emb_size, emb_size):
        raise ValueError(f"image_embeddings must be (1, {channels}, {emb_size}, {emb_size}), got {emb.shape}")
    if b < 1 or n < 1:
        raise ValueError(f"need at least one prompt of at least one point, got point_coords {coords.shape}")
    if labels.shape != (1, b, n) or mask.shape != (1, b, 1, low, low) or has.shape != (1, b):
        raise ValueError(
            f"inconsistent shapes: point_coords {coords.shape}, point_labels {labels.shape}, "
            f"mask_input {mask.shape} (expected (1, {b}, 1, {low}, {low})), has_mask_input {has.shape}"
        )
    if keep is not None and resident is not None:
        # what is sent is used, and replaces what was held under the key: a held copy never
        # overrides the caller's embedding (a copy: the request's tensors go with it)
        emb = np.array(emb, dtype=dtype)
        resident.put(keep, emb)
    return DecoderRequest(emb, coords[0], labels[0], mask[0], has[0])


def _response(out, runtime=None):
    masks, ious = out
    low_res_masks, iou_predictions = DECODER_OUTPUTS
    outputs = {
        low_res_masks: np.ascontiguousarray(masks[None], dtype=np.float32),
        iou_predictions: np.ascontiguousarray(ious[None], dtype=np.float32),
    }
    if runtime is not None:
        outputs[RUNTIME] = model_id_tensor(runtime)
    return tensors_response(outputs)


class TritonPythonModel:
    def initialize(self, args):
        config, params = parse(args)
        info = ModelInfo.from_parameters(params)
        self.emb_size, self.model_id, self.channels = info.embedding_size, info.model_id, info.embedding_channels
        self.max_prompts = int(params.get(MAX_PROMPTS_PER_RUN, "64"))
        self.core_model = params.get(CORE_MODEL, "")
        self.session = None if self.core_model else cpu_session(args, params)
        has_nomask = not self.core_model and os.path.isfile(version_file(args, DECODER_NOMASK_FILE))
        self.nomask = cpu_session(args, params, DECODER_NOMASK_FILE) if has_nomask else None
        self.runtime = reported_runtime(config, params, self.session)
        self.dtype = np.float16 if self.core_model else np.float32  # what the network takes
        self.resident = ResidentEmbeddings(int(params.get(RESIDENT_BYTES, str(DEFAULT_RESIDENT_BYTES))))

    def _run_nomask(self, feed):
        masks, ious = self.nomask.run(list(DECODER_OUTPUTS), feed)
        return masks, ious

    def _run(self, feed):
        if self.core_model:  # its config declares has_mask_input as dims [1], reshaped to the engine's (B,)
            has_mask_input = DECODER_INPUTS[-1]
            feed = {**feed, has_mask_input: feed[has_mask_input].reshape(-1, 1)}
            return tuple(bls(self.core_model, feed, list(DECODER_OUTPUTS)))
        masks, ious = self.session.run(list(DECODER_OUTPUTS), feed)
        return masks, ious

    def execute(self, requests):
        return batched_responses(
            requests,
            lambda request: _parse(request, self.emb_size, self.model_id, self.channels, self.resident, self.dtype),
            lambda parsed: run_decoder_batched(
                parsed,
                self._run,
                self.max_prompts,
                self.dtype,
                broadcast_image=not self.core_model,  # ONNX Runtime broadcasts one embedding
                run_nomask=self._run_nomask if self.nomask is not None else None,
            ),
            lambda out: _response(out, self.runtime),
            "decoder",
        )
