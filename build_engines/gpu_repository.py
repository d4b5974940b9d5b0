"""The GPU model repository: TensorRT FP16 plans for the encoder and the decoder, and the same
python / ensemble models as the CPU repository, so the gateway talks to it unchanged.

  sam_encoder_trt   tensorrt_plan, dynamic batching over images (batch 1..encoder_max_batch)
  sam_encoder       the checked-in python model, as an adapter: batches the requests through
                    sam_encoder_trt over BLS and returns each embedding with the model's id
                    (the decoder refuses embeddings of another model)
  sam_decoder_trt   tensorrt_plan, dynamic batching over prompts (1..decoder_max_prompts) of
                    one point count
  sam_decoder       the checked-in python model, as an adapter: it keeps the gateway's
                    contract (one request = one image embedding + B ragged prompts), merges the
                    requests of a dynamic batch grouped by point count, exactly as on the CPU,
                    and runs each group through sam_decoder_trt over BLS instead of ONNX Runtime
  sam_amg_generate, sam_amg   unchanged (sam_amg's shapes pinned to the plans' fixed S)

Config generation is pure text (tested on any machine against Triton's ModelConfig protobuf);
building and checking the engines needs a GPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from build_engines.models import LoadedSam
from build_engines.output_dir import partial_dir, replace_dir
from build_engines.repository import (
    BUILD_INFO,
    CHECKED_IN,
    build_info,
    embedding_dims,
    model_info,
    model_parameters,
    parameters_block,
    prefixed_config,
)
from build_engines.tensorrt_engines import (
    DEFAULT_FP32_LAYER_TYPES,
    EMBED_DIM,
    EngineLimits,
    decoder_profile,
    encoder_profile,
)
from samserve.contract import (
    AMG,
    AMG_GENERATE,
    CORE_MODEL,
    DECODER,
    DECODER_CORE,
    ENCODER,
    ENCODER_CORE,
    MAX_PROMPTS_PER_RUN,
    model_prefix,
    served_model_id,
)

log = logging.getLogger(__name__)

# Queue delays: an encoder run on a GPU takes tens of ms (ViT-B) to hundreds (ViT-H), so
# waiting 5 ms for a second image costs little; a decoder run takes about a millisecond, so
# its batcher waits at most 0.5 ms.
ENCODER_QUEUE_DELAY_US = 5000
DECODER_QUEUE_DELAY_US = 500


def _dims(shape) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _preferred(profile_entry) -> list[int]:
    _, (opt, *_), (hi, *_) = profile_entry
    return sorted({opt, hi})


def encoder_config(params: dict[str, str], limits: EngineLimits, instances: int = 1, channels: int = EMBED_DIM) -> str:
    s = int(params["img_size"])
    e = s // 16
    profile = encoder_profile(s, limits)
    preferred = _preferred(profile["images"])
    return f"""# SAM image encoder, GPU target: TensorRT FP16 plan (written by build_engines); sam_encoder
# (the adapter) runs it over BLS and returns each embedding with the model's id.
name: "{ENCODER_CORE}"
platform: "tensorrt_plan"
max_batch_size: {limits.encoder_max_batch}
input [
  {{ name: "images", data_type: TYPE_FP32, dims: {_dims((3, s, s))} }}
]
output [
  {{ name: "image_embeddings", data_type: TYPE_FP16, dims: {_dims((channels, e, e))} }}
]
dynamic_batching {{
  preferred_batch_size: {_dims(preferred)}
  max_queue_delay_microseconds: {ENCODER_QUEUE_DELAY_US}
}}
instance_group [ {{ count: {instances}, kind: KIND_GPU }} ]
model_warmup [
{_warmups("images", [("images", "TYPE_FP32", (3, s, s), "zero_data: true")], [1, *preferred])}
]
""" + parameters_block(params)


def decoder_core_config(
    params: dict[str, str], limits: EngineLimits, instances: int = 1, channels: int = EMBED_DIM
) -> str:
    s = int(params["img_size"])
    e, low = s // 16, s // 4
    profile = decoder_profile(s, limits, channels)
    preferred = _preferred(profile["point_coords"])
    warm_inputs = [
        ("image_embeddings", "TYPE_FP16", (channels, e, e), "random_data: true"),
        ("point_coords", "TYPE_FP32", (2, 2), "random_data: true"),
        ("point_labels", "TYPE_FP32", (2,), "zero_data: true"),
        ("mask_input", "TYPE_FP32", (1, low, low), "zero_data: true"),
        ("has_mask_input", "TYPE_FP32", (1,), "zero_data: true"),
    ]
    return f"""# SAM prompt encoder + mask decoder, GPU target: TensorRT FP16 plan (written by
# build_engines). The batch dimension is prompts; sam_decoder (the adapter) calls it over BLS
# with prompts of one point count per request.
name: "{DECODER_CORE}"
platform: "tensorrt_plan"
max_batch_size: {limits.decoder_max_prompts}
input [
  {{ name: "image_embeddings", data_type: TYPE_FP16, dims: {_dims((channels, e, e))} }},
  {{ name: "point_coords", data_type: TYPE_FP32, dims: [ -1, 2 ] }},
  {{ name: "point_labels", data_type: TYPE_FP32, dims: [ -1 ] }},
  {{ name: "mask_input", data_type: TYPE_FP32, dims: {_dims((1, low, low))} }},
  {{ name: "has_mask_input", data_type: TYPE_FP32, dims: [ 1 ], reshape: {{ shape: [ ] }} }}
]
output [
  {{ name: "low_res_masks", data_type: TYPE_FP32, dims: {_dims((4, low, low))} }},
  {{ name: "iou_predictions", data_type: TYPE_FP32, dims: [ 4 ] }}
]
dynamic_batching {{
  preferred_batch_size: {_dims(preferred)}
  max_queue_delay_microseconds: {DECODER_QUEUE_DELAY_US}
}}
instance_group [ {{ count: {instances}, kind: KIND_GPU }} ]
model_warmup [
{_warmups("prompts", warm_inputs, [1, *preferred])}
]
""" + parameters_block(params)


def _warmups(label: str, inputs, batch_sizes) -> str:
    """One warmup per batch size (1, so the first request is not the slow one, and the
    preferred sizes the batcher will form)."""
    blocks = []
    for n in sorted(set(batch_sizes)):
        entries = "\n".join(
            f'    inputs {{ key: "{name}", value: {{ data_type: {dtype}, dims: {_dims(shape)}, {fill} }} }}'
            for name, dtype, shape, fill in inputs
        )
        blocks.append(f'  {{\n    name: "{n} {label}"\n    batch_size: {n}\n{entries}\n  }}')
    return ",\n".join(blocks)


def encoder_adapter_config(
    params: dict[str, str], limits: EngineLimits, channels: int = EMBED_DIM, core: str = ENCODER_CORE
) -> str:
    """The checked-in sam_encoder config, pointed at the plan instead of ONNX Runtime."""
    header = f"# GPU target: this python model batches requests through {ENCODER_CORE} over BLS.\n"
    text = header + embedding_dims((CHECKED_IN / ENCODER / "config.pbtxt").read_text(), channels)
    if "max_batch_size: 4\n" not in text:
        raise RuntimeError("sam_encoder/config.pbtxt changed: 'max_batch_size: 4' not found")
    text = text.replace("max_batch_size: 4\n", f"max_batch_size: {limits.encoder_max_batch}\n")
    return text + parameters_block({**params, CORE_MODEL: core})


def adapter_config(
    params: dict[str, str], limits: EngineLimits, channels: int = EMBED_DIM, core: str = DECODER_CORE
) -> str:
    """The checked-in sam_decoder config, pointed at the plan instead of ONNX Runtime."""
    header = f"# GPU target: this python model merges requests and runs them through {DECODER_CORE} over BLS.\n"
    text = header + embedding_dims((CHECKED_IN / DECODER / "config.pbtxt").read_text(), channels)
    extra = {CORE_MODEL: core, MAX_PROMPTS_PER_RUN: str(limits.decoder_max_prompts)}
    return text + parameters_block({**params, **extra})


def ensemble_config(params: dict[str, str], channels: int = EMBED_DIM) -> str:
    s, e = int(params["img_size"]), int(params["img_size"]) // 16
    text = (CHECKED_IN / AMG / "config.pbtxt").read_text()
    pinned = {
        "dims: [ 3, -1, -1 ]": f"dims: {_dims((3, s, s))}",
        "dims: [ 256, -1, -1 ]": f"dims: {_dims((channels, e, e))}",
    }
    for old, new in pinned.items():
        if old not in text:
            raise RuntimeError(f"sam_amg/config.pbtxt changed: {old!r} not found")
        text = text.replace(old, new)
    return text + parameters_block(params)


def gpu_configs(
    loaded: LoadedSam, limits: EngineLimits, name: str | None = None, default: bool = True
) -> dict[str, str]:
    """model name -> config.pbtxt text, for every model of one model's set in the GPU repository
    (`name`: its name in a repository of several, its Triton models under "<name>__")."""
    params = model_parameters(loaded, "gpu", name=name, default=default)
    prefix = model_prefix(name)
    c = model_info(loaded, "gpu", name, default).embedding_channels  # SAM 2: its packed embedding
    amg = embedding_dims((CHECKED_IN / AMG_GENERATE / "config.pbtxt").read_text(), c) + parameters_block(params)
    cores = {ENCODER_CORE: prefix + ENCODER_CORE, DECODER_CORE: prefix + DECODER_CORE}
    configs = {
        ENCODER_CORE: encoder_config(params, limits, channels=c),
        ENCODER: encoder_adapter_config(params, limits, c, cores[ENCODER_CORE]),
        DECODER_CORE: decoder_core_config(params, limits, channels=c),
        DECODER: adapter_config(params, limits, c, cores[DECODER_CORE]),
        AMG_GENERATE: amg,
        AMG: ensemble_config(params, c),
    }
    return {prefix + model: prefixed_config(text, prefix) for model, text in configs.items()}


def write_gpu_repository(
    loaded: LoadedSam,
    out: Path,
    limits: EngineLimits | None = None,
    tolerance: float = 1e-3,
    fp32_layer_types: tuple[str, ...] = DEFAULT_FP32_LAYER_TYPES,
) -> Path:
    """The GPU repository of one model (bare names): see write_gpu_repositories."""
    return write_gpu_repositories([(None, loaded)], out, limits, tolerance, fp32_layer_types)


def write_gpu_repositories(
    models: list[tuple[str | None, LoadedSam]],
    out: Path,
    limits: EngineLimits | None = None,
    tolerance: float = 1e-3,
    fp32_layer_types: tuple[str, ...] = DEFAULT_FP32_LAYER_TYPES,
    inputs: str | None = None,
) -> Path:
    """For each model (under "<name>__" when several; the first the default): exports and
    verifies ONNX (as for the CPU target), builds the plans (reusing those of a previous build of
    `out` when their metadata matches this GPU, TensorRT and model), checks them against
    PyTorch, and writes the repository. Needs a GPU and the tensorrt package."""
    from build_engines.engine_accuracy import check_engines
    from build_engines.repository import check_model_names, export_models
    from build_engines.tensorrt_engines import build_engine
    from build_engines.verify import verify

    limits = limits or EngineLimits()
    check_model_names([n for n, _ in models])
    tmp = partial_dir(out)
    try:
        timing_cache = out.with_name(out.name + ".timing-cache")
        infos = {}
        for i, (name, loaded) in enumerate(models):
            prefix = model_prefix(name)
            for model, text in gpu_configs(loaded, limits, name, default=i == 0).items():
                (tmp / model / "1").mkdir(parents=True)
                (tmp / model / "config.pbtxt").write_text(text)
            for model in (ENCODER, DECODER, AMG_GENERATE):
                shutil.copy(CHECKED_IN / model / "1" / "model.py", tmp / (prefix + model) / "1" / "model.py")
            plans = {core: tmp / (prefix + core) / "1" / "model.plan" for core in (ENCODER_CORE, DECODER_CORE)}
            for plan in plans.values():  # candidates for reuse; build_engine decides
                for suffix in (".plan", ".json"):
                    old = out / plan.relative_to(tmp).with_suffix(suffix)
                    if old.is_file():
                        shutil.copy(old, plan.with_suffix(suffix))
            s = loaded.img_size
            channels = model_info(loaded, "gpu").embedding_channels
            served = served_model_id(loaded.model_id, "gpu")
            with tempfile.TemporaryDirectory() as work:
                encoder_onnx, decoder_onnx = export_models(loaded, Path(work) / "encoder", Path(work) / "decoder")
                onnx_report = verify(loaded.sam, encoder_onnx, decoder_onnx, tolerance, loaded.family)
                metas = {
                    ENCODER_CORE: build_engine(
                        encoder_onnx,
                        plans[ENCODER_CORE],
                        encoder_profile(s, limits),
                        served,
                        fp32_layer_types,
                        timing_cache,
                    ),
                    DECODER_CORE: build_engine(
                        decoder_onnx,
                        plans[DECODER_CORE],
                        decoder_profile(s, limits, channels),
                        served,
                        fp32_layer_types,
                        timing_cache,
                    ),
                }
            accuracy = check_engines(loaded, plans[ENCODER_CORE], plans[DECODER_CORE])
            loaded.sam.cpu()
            infos[name] = {
                **model_parameters(loaded, "gpu", name=name, default=i == 0),
                "onnx_verification": asdict(onnx_report),
                "engines": {core: json.loads(m.to_json()) for core, m in metas.items()},
                "engine_accuracy": asdict(accuracy),
            }
        info = build_info("gpu", infos, inputs, limits=asdict(limits))
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out)
    except BaseException:  # a failed build leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote GPU model repository for %s to %s", ", ".join(m.model_id for _, m in models), out)
    return out
