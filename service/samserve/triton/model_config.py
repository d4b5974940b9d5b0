"""A python-backend model's view of its own Triton config (`args` of initialize)."""

from __future__ import annotations

import json
import os

from samserve.contract import ModelInfo, config_parameters


def parse(args: dict) -> tuple[dict, dict[str, str]]:
    """(the model config as a dict, its parameters as strings)."""
    config = json.loads(args["model_config"])
    return config, config_parameters(config)


def model_info(args: dict) -> ModelInfo:
    return ModelInfo.from_parameters(parse(args)[1])


def version_file(args: dict, name: str) -> str:
    """A file in the model's version folder, e.g. model.onnx."""
    return os.path.join(args["model_repository"], args["model_version"], name)
