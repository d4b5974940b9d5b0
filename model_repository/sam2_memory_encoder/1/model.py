"""sam2_memory_encoder: one ONNX graph of the SAM 2 video tracker, run per request (samserve.triton.graph_model)."""

from samserve.triton.graph_model import GraphModel


class TritonPythonModel(GraphModel):
    pass
