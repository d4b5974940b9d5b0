"""A python-backend model's view of its own Triton config (`args` of initialize)."""

from __future__ import annotations

import json
import os

from samserve.contract import CORE_MODEL, FP16, PRECISION, RUNTIME, ModelInfo, config_parameters


def parse(args: dict) -> tuple[dict, dict[str, str]]:
    """(the model config as a dict, its parameters as strings)."""
    config = json.loads(args["model_config"])
    return config, config_parameters(config)


def reported_runtime(config: dict, params: dict[str, str], session) -> str | None:
    """What the model's responses say runs its network (RUNTIME): the CPU session's runtime, or
    the TensorRT plan it calls; None when its config declares no RUNTIME output."""
    if RUNTIME not in {o["name"] for o in config.get("output", [])}:
        return None
    core = params.get(CORE_MODEL, "")
    return f"tensorrt {params.get(PRECISION, FP16)} via {core}" if core else session.runtime


def model_info(args: dict) -> ModelInfo:
    return ModelInfo.from_parameters(parse(args)[1])


def version_file(args: dict, name: str) -> str:
    """A file in the model's version folder, e.g. model.onnx."""
    return os.path.join(args["model_repository"], args["model_version"], name)
