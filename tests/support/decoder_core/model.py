"""Stand-in for the TensorRT plan sam_decoder_trt on machines without a GPU: the same config
(batch dimension = prompts, FP16 embedding input, has_mask_input reshaped), run by ONNX Runtime.
Lets the CPU suite drive the GPU repository's sam_decoder adapter through real BLS calls."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from samserve.contract import DECODER_INPUTS as INPUTS
from samserve.contract import DECODER_OUTPUTS


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS}
            if feed["image_embeddings"].dtype != np.float16:
                raise pb_utils.TritonModelException("image_embeddings must arrive as FP16")
            feed["image_embeddings"] = feed["image_embeddings"].astype(np.float32)
            masks, ious = self.session.run(list(DECODER_OUTPUTS), feed)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("low_res_masks", masks), pb_utils.Tensor("iou_predictions", ious)]
                )
            )
        return responses
