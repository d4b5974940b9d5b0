"""A python-backend model that runs one ONNX graph of the SAM 2 video tracker
(contract.TRACKER_MODELS) on each request, through OpenVINO or ONNX Runtime
(cpu_runtime.CpuSession). A request is one frame's objects (max_batch_size 0: every tensor's
axis 0 is the object), so requests are not merged: two frames' memories differ in length. A
request made for another model (its model_id input) is refused as UNAVAILABLE, as the decoder
refuses one; each request's error stays its own."""

from __future__ import annotations

import numpy as np

from samserve.contract import MODEL_ID, PREFIX_SEPARATOR, TRACKER_IO, ModelInfo
from samserve.triton.cpu_runtime import cpu_session
from samserve.triton.model_config import parse
from samserve.triton.responses import ModelMismatch, error_response, refuse_other_models, tensors_response


class GraphModel:
    def initialize(self, args):
        config, params = parse(args)
        self.model_id = ModelInfo.from_parameters(params).model_id
        self.role = config["name"].rsplit(PREFIX_SEPARATOR, 1)[-1]
        if self.role not in TRACKER_IO:
            raise ValueError(f"{config['name']} is not one of the tracker's models ({', '.join(TRACKER_IO)})")
        self.inputs, self.outputs = TRACKER_IO[self.role]
        self.session = cpu_session(args, params)

    def _run(self, request):
        import triton_python_backend_utils as pb_utils

        made_by = pb_utils.get_input_tensor_by_name(request, MODEL_ID)
        refuse_other_models(None if made_by is None else made_by.as_numpy(), self.model_id)
        feed = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"{self.role}: input {name} is missing")
            feed[name] = tensor.as_numpy()
        objects = {len(v) for k, v in feed.items() if k != "mask_from_points"}
        if len(objects) != 1:
            raise ValueError(f"{self.role}: every input must have the same object count (axis 0), got {objects}")
        outputs = self.session.run(self.outputs, feed)
        return tensors_response({n: np.ascontiguousarray(o) for n, o in zip(self.outputs, outputs, strict=True)})

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._run(request))
            except ModelMismatch as exc:
                responses.append(error_response(str(exc), "UNAVAILABLE"))
            except Exception as exc:
                responses.append(error_response(f"{self.role} failed: {exc}"))
        return responses
