"""Write a complete Triton model repository for a SAM model.

`cpu` target: the checked-in python-backend models of model_repository/ plus the exported
ONNX files, with the model's facts (id, input size S, normalization) written into each
config's `parameters`, where the gateway and the models read them.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from build_engines.export_onnx import export_decoder, export_encoder
from build_engines.models import LoadedSam
from build_engines.verify import verify
from samserve.contract import (
    AMG,
    AMG_GENERATE,
    DECODER,
    ENCODER,
    FAMILIES,
    INTRA_OP_THREADS,
    REPOSITORY_LAYOUT,
    ModelInfo,
    served_model_id,
)

log = logging.getLogger(__name__)

CHECKED_IN = Path(__file__).resolve().parents[1] / "model_repository"
MODELS = (ENCODER, DECODER, AMG_GENERATE, AMG)
ONNX_MODELS = (ENCODER, DECODER)
BUILD_INFO = "build_info.json"


def model_info(loaded: LoadedSam, target: str = "cpu") -> ModelInfo:
    sam = loaded.sam
    return ModelInfo(
        model_id=served_model_id(loaded.model_id, target),
        model_type=loaded.model_type,
        img_size=loaded.img_size,
        pixel_mean=sam.pixel_mean.flatten().numpy().astype(np.float32),
        pixel_std=sam.pixel_std.flatten().numpy().astype(np.float32),
        mask_threshold=float(sam.mask_threshold),
        family=FAMILIES[loaded.model_type],
    )


def model_parameters(loaded: LoadedSam, target: str = "cpu", intra_op_threads: int = 0) -> dict[str, str]:
    """The config parameters of every model in the repository: the ModelInfo contract (its
    model_id names the target and precision) and the python-backend models' knobs."""
    return {**model_info(loaded, target).to_parameters(), INTRA_OP_THREADS: str(intra_op_threads)}


def parameters_block(params: dict[str, str]) -> str:
    lines = [
        f"parameters {{ key: {json.dumps(k)} value {{ string_value: {json.dumps(v)} }} }}" for k, v in params.items()
    ]
    return "\n# written by build_engines\n" + "\n".join(lines) + "\n"


def built_layout(out: Path) -> int | None:
    """The repository layout `out` was built with (None: no finished build there)."""
    try:
        return int(json.loads((out / BUILD_INFO).read_text()).get("repository_layout", 1))
    except (OSError, ValueError):
        return None


def is_current(out: Path) -> bool:
    """A finished repository of this version's layout (any target) is at `out`."""
    return built_layout(out) == REPOSITORY_LAYOUT


def is_complete(out: Path) -> bool:
    """A finished CPU repository of this layout is at `out`."""
    return is_current(out) and all((out / m / "1" / "model.onnx").is_file() for m in ONNX_MODELS)


def write_cpu_repository(loaded: LoadedSam, out: Path, tolerance: float = 1e-3, intra_op_threads: int = 0) -> Path:
    """Exports, verifies against PyTorch (raises VerificationError past `tolerance`) and
    writes the repository to `out`, replacing what was there."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    params = model_parameters(loaded, "cpu", intra_op_threads)
    for name in MODELS:
        shutil.copytree(CHECKED_IN / name, tmp / name, ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
        config = tmp / name / "config.pbtxt"
        config.write_text(config.read_text() + parameters_block(params))
    encoder = export_encoder(loaded.sam, tmp / ENCODER / "1" / "model.onnx")
    decoder = export_decoder(loaded.sam, tmp / DECODER / "1" / "model.onnx")
    report = verify(loaded.sam, encoder, decoder, tolerance)
    info = {
        "repository_layout": REPOSITORY_LAYOUT,
        "target": "cpu",
        **params,
        "random_weights": loaded.random_weights,
        "verification": asdict(report),
        "tolerance": tolerance,
    }
    (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a half-written repository is never left under the final name
    log.info("wrote CPU model repository for %s to %s", loaded.model_id, out)
    return out
