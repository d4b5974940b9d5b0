"""sam_encoder (CPU): ONNX Runtime over the requests of one execution, batched."""

import numpy as np
import triton_python_backend_utils as pb_utils

from samserve.contract import EMBEDDINGS, ENCODER_INPUT, ModelInfo
from samserve.triton.batching import run_concatenated
from samserve.triton.model_config import parse
from samserve.triton.onnx_session import onnx_session
from samserve.triton.responses import batched_responses, tensors_response


class TritonPythonModel:
    def initialize(self, args):
        config, params = parse(args)
        s = ModelInfo.from_parameters(params).img_size
        self.expected = (3, s, s)
        self.max_batch = int(config["max_batch_size"])
        self.session = onnx_session(args, params)

    def _parse(self, request):
        x = pb_utils.get_input_tensor_by_name(request, ENCODER_INPUT).as_numpy()
        if x.shape[1:] != self.expected:
            raise ValueError(f"images must be (n, {self.expected}), got {x.shape}")
        return x

    def _run(self, batch):
        return self.session.run([EMBEDDINGS], {ENCODER_INPUT: batch})[0].astype(np.float16)

    def execute(self, requests):
        return batched_responses(
            requests,
            self._parse,
            lambda images: run_concatenated(images, self._run, self.max_batch),
            lambda emb: tensors_response({EMBEDDINGS: emb}),
            "encoder",
        )
