"""sam_encoder (CPU): ONNX Runtime over the requests of one execution, batched."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from samserve.pipeline.batching import run_concatenated


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.img_size = int(params["img_size"])
        self.max_batch = int(config["max_batch_size"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = [None] * len(requests)
        images, valid = [], []
        expected = (3, self.img_size, self.img_size)
        for i, request in enumerate(requests):
            x = pb_utils.get_input_tensor_by_name(request, "images").as_numpy()
            if x.shape[1:] != expected:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"images must be (n, {expected}), got {x.shape}")
                )
                continue
            images.append(x)
            valid.append(i)

        def run(batch):
            return self.session.run(["image_embeddings"], {"images": batch})[0].astype(np.float16)

        try:
            outputs = run_concatenated(images, run, self.max_batch)
        except Exception as exc:  # one failed run fails only the requests in it
            outputs = [exc] * len(valid)
        for i, out in zip(valid, outputs, strict=True):
            if isinstance(out, Exception):
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"encoder failed: {out}"))
            else:
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor("image_embeddings", out)])
        return responses
