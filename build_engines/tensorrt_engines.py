"""TensorRT FP16 engines from the exported ONNX graphs, with the `tensorrt` Python API.

- Precision: FP16 everywhere except the layers that overflow in FP16 in ViT encoders and the
  mask decoder's transformer: normalization (LayerNorm), softmax and reductions are pinned to
  FP32 (`OBEY_PRECISION_CONSTRAINTS`). `--fp32-layers` pins more layer types; the accuracy
  check after the build (accuracy.py) is what decides whether the engine ships.
- Wire precision: the encoder takes the normalised image as FP32 (the numbers the fidelity
  tests prove equal to SamPredictor's) and returns the embedding as FP16 (what the cache and
  the gateway already carry); the decoder takes the embedding as FP16 and prompts and mask
  input as FP32, and returns low-res logits and IoU predictions as FP32 (thresholding at 0
  and the IoU ranking are where FP16 rounding would show).
- Optimization profiles: encoder batch 1..N; decoder prompts 1..P (the Triton batch
  dimension, filled by the sam_decoder adapter up to max_prompts_per_run) and points per
  prompt 1..K (the gateway's max_points_per_prompt + two box corners).
- Engines only run on the GPU model and TensorRT version they were built with: the metadata
  written beside each plan says which, and a plan whose metadata does not match this machine
  (or the ONNX, or the profile) is rebuilt, never reused, with the reason logged.

Only build/run functions import `tensorrt`; profiles, metadata and the reuse check run on any
machine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from build_engines.onnx_checks import Profile, check_tensorrt_compatible
from samserve.contract import sha256_file

log = logging.getLogger(__name__)

PRECISION = "fp16"
DEFAULT_FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
EMBED_DIM = 256


@dataclass(frozen=True)
class EngineLimits:
    encoder_max_batch: int = 8
    decoder_max_prompts: int = 64  # per engine run: the adapter's max_prompts_per_run
    # gateway max_points_per_prompt (64) + the two box corners + SAM 2's padding point (it pads
    # even with a box)
    decoder_max_points: int = 67

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


def _opt(hi: int) -> int:
    """The shape TensorRT tunes for: the largest power of two not above half the range."""
    opt = 1
    while opt * 2 <= max(1, hi // 2):
        opt *= 2
    return opt


def encoder_profile(img_size: int, limits: EngineLimits) -> dict[str, tuple[tuple[int, ...], ...]]:
    n = limits.encoder_max_batch
    shape = (3, img_size, img_size)
    return {"images": ((1, *shape), (_opt(n), *shape), (n, *shape))}


def decoder_profile(
    img_size: int, limits: EngineLimits, channels: int = EMBED_DIM
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """channels: the embedding's (SAM 2's packed embedding: 1024)."""
    e, low = img_size // 16, img_size // 4
    p, k = limits.decoder_max_prompts, limits.decoder_max_points
    po = _opt(p)
    ko = min(k, 2)  # one click + the padding point: the common case and AMG's
    return {
        "image_embeddings": ((1, channels, e, e), (po, channels, e, e), (p, channels, e, e)),
        "point_coords": ((1, 1, 2), (po, ko, 2), (p, k, 2)),
        "point_labels": ((1, 1), (po, ko), (p, k)),
        "mask_input": ((1, 1, low, low), (po, 1, low, low), (p, 1, low, low)),
        "has_mask_input": ((1,), (po,), (p,)),
    }


@dataclass(frozen=True)
class EngineMetadata:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    precision: str
    fp32_layer_types: tuple[str, ...]
    profile: Mapping[str, tuple[tuple[int, ...], ...]]
    onnx_sha256: str
    model_id: str
    build_seconds: float = 0.0
    pinned_fp32_layers: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)

    # What must match for a plan to be reused (the rest is informational).
    IDENTITY = (
        "tensorrt_version",
        "gpu_name",
        "compute_capability",
        "precision",
        "fp32_layer_types",
        "profile",
        "onnx_sha256",  # the graph (for vit_h the weights are external data it does not cover)
        "model_id",  # so the checkpoint's hash, target and precision
    )

    def to_json(self) -> str:
        d = asdict(self)
        d["profile"] = {k: [list(s) for s in v] for k, v in self.profile.items()}
        d["fp32_layer_types"] = list(self.fp32_layer_types)
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EngineMetadata:
        d = json.loads(text)
        d["profile"] = {k: tuple(tuple(s) for s in v) for k, v in d["profile"].items()}
        d["fp32_layer_types"] = tuple(d["fp32_layer_types"])
        return cls(**d)


def mismatch(existing: EngineMetadata, wanted: EngineMetadata) -> str | None:
    """Why a plan built as `existing` must not be used where `wanted` is needed (None: reusable)."""
    reasons = []
    for name in EngineMetadata.IDENTITY:
        a, b = getattr(existing, name), getattr(wanted, name)
        if a != b:
            reasons.append(f"{name} is {a!r} in the engine, {b!r} here")
    return "; ".join(reasons) or None


class EngineMismatch(RuntimeError):
    """A serialized engine does not belong to this GPU / TensorRT version / model / profile."""


def device_facts() -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability) of this machine; needs a GPU."""
    import tensorrt as trt
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT engines need an NVIDIA GPU; torch.cuda.is_available() is False")
    major, minor = torch.cuda.get_device_capability()
    return trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}"


def wanted_metadata(onnx_path: Path, profile: Profile, model_id: str, fp32_layer_types: tuple[str, ...]):
    version, gpu, cc = device_facts()
    return EngineMetadata(
        tensorrt_version=version,
        gpu_name=gpu,
        compute_capability=cc,
        precision=PRECISION,
        fp32_layer_types=tuple(fp32_layer_types),
        profile={k: tuple(tuple(s) for s in v) for k, v in profile.items()},
        onnx_sha256=sha256_file(onnx_path),
        model_id=model_id,
    )


def load_plan(plan: Path, wanted: EngineMetadata) -> bytes:
    """The plan's bytes if its metadata matches `wanted`; EngineMismatch saying why otherwise."""
    meta_path = plan.with_suffix(".json")
    if not plan.is_file() or not meta_path.is_file():
        raise EngineMismatch(f"{plan} or its metadata {meta_path.name} is missing")
    reason = mismatch(EngineMetadata.from_json(meta_path.read_text()), wanted)
    if reason:
        raise EngineMismatch(f"{plan} was built for another setup: {reason}")
    return plan.read_bytes()


# Network input/output element types that differ from the ONNX graph's float32.
FP16_TENSORS = {"image_embeddings"}


def build_engine(
    onnx_path: Path,
    plan: Path,
    profile: Profile,
    model_id: str,
    fp32_layer_types: tuple[str, ...] = DEFAULT_FP32_LAYER_TYPES,
    timing_cache: Path | None = None,
    workspace_gib: float = 4.0,
) -> EngineMetadata:
    """Builds (or reuses, when its metadata matches) `plan` from `onnx_path`."""
    check_tensorrt_compatible(onnx_path, profile)
    wanted = wanted_metadata(onnx_path, profile, model_id, fp32_layer_types)
    try:
        load_plan(plan, wanted)
        log.info("reusing %s (built for %s, TensorRT %s)", plan, wanted.gpu_name, wanted.tensorrt_version)
        return EngineMetadata.from_json(plan.with_suffix(".json").read_text())
    except EngineMismatch as exc:
        if plan.exists():
            log.warning("not reusing the engine: %s; rebuilding", exc)

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (the only mode in TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    for t in inputs + outputs:
        if t.name in FP16_TENSORS:
            t.dtype = trt.float16
    pinned_types = {getattr(trt.LayerType, name) for name in fp32_layer_types}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in pinned_types:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype == trt.float32:
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    seconds = time.monotonic() - started
    if timing_cache:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(serialized))
    meta = EngineMetadata(**{**asdict(wanted), "build_seconds": round(seconds, 1), "pinned_fp32_layers": pinned})
    plan.with_suffix(".json").write_text(meta.to_json())
    log.info("built %s in %.0f s (%d layers pinned to FP32)", plan, seconds, pinned)
    return meta
