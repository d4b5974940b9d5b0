"""sam_encoder: the requests of one execution batched through OpenVINO or ONNX Runtime (CPU
target: cpu_runtime.CpuSession) or, when the `core_model` parameter names one (GPU target),
through that model (the TensorRT plan sam_encoder_trt) over BLS. Every embedding is returned with
this model's id, and, when the config declares it, with what runs the network (RUNTIME)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from samserve.contract import (
    CORE_MODEL,
    EMBEDDINGS,
    ENCODER_INPUT,
    MODEL_ID,
    RUNTIME,
    ModelInfo,
    model_id_tensor,
)
from samserve.triton.batching import run_concatenated
from samserve.triton.bls import bls
from samserve.triton.cpu_runtime import cpu_session
from samserve.triton.model_config import parse, reported_runtime
from samserve.triton.responses import batched_responses, tensors_response


class TritonPythonModel:
    def initialize(self, args):
        config, params = parse(args)
        info = ModelInfo.from_parameters(params)
        self.expected = (3, info.img_size, info.img_size)
        self.model_id = info.model_id
        self.max_batch = int(config["max_batch_size"])
        self.core_model = params.get(CORE_MODEL, "")
        self.session = None if self.core_model else cpu_session(args, params)
        self.runtime = reported_runtime(config, params, self.session)

    def _parse(self, request):
        x = pb_utils.get_input_tensor_by_name(request, ENCODER_INPUT).as_numpy()
        if x.shape[1:] != self.expected:
            raise ValueError(f"images must be (n, {self.expected}), got {x.shape}")
        return x

    def _run(self, batch):
        if self.core_model:
            return bls(self.core_model, {ENCODER_INPUT: batch}, [EMBEDDINGS])[0].astype(np.float16)
        return self.session.run([EMBEDDINGS], {ENCODER_INPUT: batch})[0].astype(np.float16)

    def _response(self, emb):
        outputs = {EMBEDDINGS: emb, MODEL_ID: model_id_tensor(self.model_id, len(emb))}
        if self.runtime is not None:
            outputs[RUNTIME] = model_id_tensor(self.runtime, len(emb))
        return tensors_response(outputs)

    def execute(self, requests):
        return batched_responses(
            requests,
            self._parse,
            lambda images: run_concatenated(images, self._run, self.max_batch),
            self._response,
            "encoder",
        )
