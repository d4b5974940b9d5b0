"""Stand-in for a TensorRT plan (sam_encoder_trt or sam_decoder_trt) on machines without a GPU:
the plan's own generated config (its batch dimension, FP16 embedding, reshaped has_mask_input),
run by ONNX Runtime on the exported model. Lets the CPU suite drive the GPU repository's python
adapters through real BLS calls."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        config = json.loads(args["model_config"])
        self.inputs = {t["name"]: DTYPES[t["data_type"]] for t in config["input"]}
        self.outputs = {t["name"]: DTYPES[t["data_type"]] for t in config["output"]}

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {}
            for name, dtype in self.inputs.items():
                value = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                if value.dtype != dtype:
                    raise pb_utils.TritonModelException(f"{name} must arrive as {np.dtype(dtype).name}")
                feed[name] = value.astype(np.float32)  # the ONNX graph is FP32 throughout
            results = self.session.run(list(self.outputs), feed)
            tensors = [pb_utils.Tensor(n, r.astype(d)) for (n, d), r in zip(self.outputs.items(), results, strict=True)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
