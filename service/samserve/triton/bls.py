"""Calls from one Triton python-backend model to another (BLS). Importable only inside
Triton's python backend (`triton_python_backend_utils`)."""

from __future__ import annotations

import numpy as np


def bls(model_name: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    """Runs `model_name` and returns `outputs` as numpy arrays. The outputs are asked for in CPU
    memory, so a model running on the GPU (a TensorRT plan) answers here the same way."""
    import triton_python_backend_utils as pb_utils

    request = pb_utils.InferenceRequest(
        model_name=model_name,
        inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()],
        requested_output_names=outputs,
        preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
    )
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"{model_name}: {response.error().message()}")
    return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]
