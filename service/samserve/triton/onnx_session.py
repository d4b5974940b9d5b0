"""ONNX Runtime sessions for the CPU target's python-backend models."""

from __future__ import annotations

import onnxruntime as ort

from samserve.contract import INTRA_OP_THREADS
from samserve.triton.model_config import version_file


def onnx_session(args: dict, params: dict[str, str], name: str = "model.onnx") -> ort.InferenceSession:
    """The version folder's `name` on the CPU; `intra_op_threads` (0: ONNX Runtime's default)
    from the config's parameters."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(params.get(INTRA_OP_THREADS, "0"))
    return ort.InferenceSession(version_file(args, name), opts, providers=["CPUExecutionProvider"])
