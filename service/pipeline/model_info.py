"""What a served SAM model says about itself: written by build_engines into the Triton
configs' `parameters`, read by the gateway and by the python-backend models."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

REQUIRED = ("model_id", "img_size", "pixel_mean", "pixel_std")


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    model_type: str
    img_size: int  # S: the encoder's square input size
    pixel_mean: np.ndarray  # (3,) float32
    pixel_std: np.ndarray  # (3,) float32
    mask_threshold: float
    random_weights: bool

    @property
    def embedding_size(self) -> int:
        return self.img_size // 16

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> ModelInfo:
        """From a config's parameters (string values); KeyError names what is missing."""
        missing = [k for k in REQUIRED if k not in params]
        if missing:
            raise KeyError(f"model parameters lack {missing}: rebuild the model repository")
        return cls(
            model_id=params["model_id"],
            model_type=params.get("model_type", "unknown"),
            img_size=int(params["img_size"]),
            pixel_mean=np.asarray(json.loads(params["pixel_mean"]), dtype=np.float32),
            pixel_std=np.asarray(json.loads(params["pixel_std"]), dtype=np.float32),
            mask_threshold=float(params.get("mask_threshold", "0.0")),
            random_weights=params.get("random_weights", "false") == "true",
        )
