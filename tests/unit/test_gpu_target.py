"""GPU target, the parts that need no GPU: the ONNX graphs go through TensorRT's parser with our
profiles, the generated config.pbtxt files are exactly what Triton's ModelConfig expects, and an
engine built for another GPU / TensorRT version / model is refused."""

from __future__ import annotations

import dataclasses
import importlib.util

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from build_engines.gpu_repository import DECODER_CORE, ENCODER_CORE, gpu_configs
from build_engines.onnx_checks import TensorRTIncompatible, check_tensorrt_compatible, problems
from build_engines.repository import MODELS
from build_engines.tensorrt_engines import (
    EngineLimits,
    EngineMetadata,
    EngineMismatch,
    decoder_profile,
    encoder_profile,
    load_plan,
    mismatch,
)
from samserve.gateway.settings import Settings

LIMITS = EngineLimits()


# --- the exported graphs against TensorRT 10's ONNX parser --------------------------------------


def test_exported_graphs_are_tensorrt_compatible(model_repository, small_sam):
    s = small_sam.img_size
    check_tensorrt_compatible(model_repository / "sam_encoder" / "1" / "model.onnx", encoder_profile(s, LIMITS))
    check_tensorrt_compatible(model_repository / "sam_decoder" / "1" / "model.onnx", decoder_profile(s, LIMITS))


@pytest.fixture(scope="module")
def sam2_onnx(sam2_small, tmp_path_factory):
    from build_engines.repository import export_models

    work = tmp_path_factory.mktemp("sam2_onnx")
    return export_models(sam2_small, work / "encoder", work / "decoder")


def test_sam2_graphs_are_tensorrt_compatible(sam2_onnx, sam2_small):
    """SAM 2's encoder (Hiera, its positional embedding a constant) and decoder (the packed
    embedding taken apart by slices and reshapes) through the same parser checks."""
    encoder, decoder = sam2_onnx
    s = sam2_small.img_size
    check_tensorrt_compatible(encoder, encoder_profile(s, LIMITS))
    check_tensorrt_compatible(decoder, decoder_profile(s, LIMITS, 1024))
    graph = onnx.load(str(decoder)).graph
    profile = decoder_profile(s, LIMITS, 1024)
    for value_info in graph.input:
        lo, _, hi = profile[value_info.name]
        for axis, d in enumerate(value_info.type.tensor_type.shape.dim):
            assert bool(d.dim_param) == (lo[axis] != hi[axis]), (value_info.name, axis)


def test_dynamic_axes_are_where_the_profiles_vary(model_repository, small_sam):
    """The profiles vary batch / prompts / points; the graph must leave exactly those symbolic."""
    graph = onnx.load(str(model_repository / "sam_decoder" / "1" / "model.onnx")).graph
    profile = decoder_profile(small_sam.img_size, LIMITS)
    for value_info in graph.input:
        dims = value_info.type.tensor_type.shape.dim
        lo, _, hi = profile[value_info.name]
        for axis, d in enumerate(dims):
            assert bool(d.dim_param) == (lo[axis] != hi[axis]), (value_info.name, axis)


def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _x(shape=("n", 4)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def _y():
    return helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


PROFILE = {"x": ((1, 4), (2, 4), (8, 4))}


def test_the_check_rejects_what_tensorrt_rejects():
    ok = _graph([helper.make_node("Relu", ["x"], ["y"])], [_x()], [_y()])
    assert problems(ok, PROFILE) == []

    unsupported = _graph([helper.make_node("Unique", ["x"], ["y"])], [_x()], [_y()])
    assert any("Unique" in p and "not supported" in p for p in problems(unsupported, PROFILE))

    custom = _graph([helper.make_node("MyOp", ["x"], ["y"], domain="com.example")], [_x()], [_y()])
    assert any("custom domain" in p for p in problems(custom, PROFILE))

    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    dynamic_axes = _graph([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], [_x(), axes], [_y()])
    found = problems(dynamic_axes, {**PROFILE, "axes": ((1,), (1,), (1,))})
    assert any("must be a constant" in p for p in found)
    const_axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    folded = _graph([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], [_x()], [_y()], [const_axes])
    assert problems(folded, PROFILE) == []

    assert any(
        "opset 21" in p
        for p in problems(_graph([helper.make_node("Relu", ["x"], ["y"])], [_x()], [_y()], opset=21), PROFILE)
    )

    fixed = _graph([helper.make_node("Relu", ["x"], ["y"])], [_x((1, 4))], [_y()])
    assert any("fixed at 1" in p for p in problems(fixed, PROFILE))
    assert any("no optimization profile" in p for p in problems(ok, {}))
    assert any("does not have" in p for p in problems(ok, {**PROFILE, "z": ((1,), (1,), (1,))}))


def test_an_incompatible_file_fails_loudly(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_graph([helper.make_node("Unique", ["x"], ["y"])], [_x()], [_y()]), str(path))
    with pytest.raises(TensorRTIncompatible, match=r"m\.onnx: Unique"):
        check_tensorrt_compatible(path, PROFILE)


# --- profiles -----------------------------------------------------------------------------------


def test_profiles_cover_what_the_gateway_sends():
    settings = Settings()
    # points + two box corners + SAM 2's padding point (it pads even with a box)
    assert LIMITS.decoder_max_points >= settings.max_points_per_prompt + 3
    profile = decoder_profile(1024, LIMITS)
    assert profile["point_coords"][0] == (1, 1, 2)
    assert profile["point_coords"][2] == (LIMITS.decoder_max_prompts, LIMITS.decoder_max_points, 2)
    assert profile["image_embeddings"][2] == (LIMITS.decoder_max_prompts, 256, 64, 64)
    assert profile["mask_input"][1][1:] == (1, 256, 256)
    enc = encoder_profile(1024, LIMITS)["images"]
    assert enc == ((1, 3, 1024, 1024), (4, 3, 1024, 1024), (8, 3, 1024, 1024))
    with pytest.raises(ValueError, match="encoder_max_batch"):
        EngineLimits(encoder_max_batch=0)


# --- generated configs, parsed with Triton's own ModelConfig protobuf --------------------------


@pytest.fixture(scope="module")
def sam2_small():
    from build_engines.sam2_models import build_sam2_model

    return build_sam2_model("sam2.1_scaled", seed=2)


@pytest.fixture(scope="module", params=["sam", "sam2"])
def gpu_model(request, small_sam, sam2_small):
    return small_sam if request.param == "sam" else sam2_small


@pytest.fixture(scope="module")
def configs(gpu_model) -> dict[str, mc.ModelConfig]:
    return {name: text_format.Parse(text, mc.ModelConfig()) for name, text in gpu_configs(gpu_model, LIMITS).items()}


def _channels(model) -> int:
    return 1024 if model.family == "sam2" else 256


def test_several_models_have_their_own_prefixed_sets(small_sam, sam2_small):
    """Each model's set under "<name>__": its adapters call its own plans, its ensemble its own
    steps; the first model is the default."""
    texts = {**gpu_configs(small_sam, LIMITS, "sam", default=True), **gpu_configs(sam2_small, LIMITS, "s2", False)}
    parsed = {name: text_format.Parse(text, mc.ModelConfig()) for name, text in texts.items()}
    models = set(MODELS) | {ENCODER_CORE, DECODER_CORE}
    assert set(parsed) == {f"{p}__{m}" for p in ("sam", "s2") for m in models}
    for name, config in parsed.items():
        prefix = name.split("__")[0]
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert config.name == name and params["model_prefix"] == f"{prefix}__"
        assert params["default_model"] == ("true" if prefix == "sam" else "false")
        if "core_model" in params:
            assert params["core_model"].startswith(f"{prefix}__") and params["core_model"] in parsed
        for step in config.ensemble_scheduling.step:
            assert step.model_name.startswith(f"{prefix}__"), step.model_name
    emb = {t.name: list(t.dims) for t in parsed["s2__sam_decoder_trt"].input}["image_embeddings"]
    assert emb[0] == 1024


def test_gpu_repository_has_every_model_the_gateway_and_pipelines_call(configs):
    assert set(configs) == set(MODELS) | {ENCODER_CORE, DECODER_CORE}
    for name, config in configs.items():
        assert config.name == name


def _expected_dims(profile_entry) -> list[int]:
    lo, _, hi = profile_entry
    return [a if a == b else -1 for a, b in zip(lo[1:], hi[1:], strict=True)]


def test_plan_configs_match_the_engine_profiles(configs, gpu_model):
    s = gpu_model.img_size
    for name, profile, max_batch in (
        (ENCODER_CORE, encoder_profile(s, LIMITS), LIMITS.encoder_max_batch),
        (DECODER_CORE, decoder_profile(s, LIMITS, _channels(gpu_model)), LIMITS.decoder_max_prompts),
    ):
        config = configs[name]
        assert config.platform == "tensorrt_plan"
        assert config.max_batch_size == max_batch
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        for tensor in config.input:
            dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
            assert dims == _expected_dims(profile[tensor.name]), (name, tensor.name)
        assert {t.name for t in config.input} == set(profile)
        preferred = list(config.dynamic_batching.preferred_batch_size)
        assert preferred and all(1 <= b <= max_batch for b in preferred)
        assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
        assert [w.batch_size for w in config.model_warmup] == sorted({1, *preferred})  # 1: the first request
        for warmup in config.model_warmup:  # warmup inputs are shaped and typed as the inputs
            by_name = {t.name: t for t in config.input}
            assert set(warmup.inputs) == set(by_name)
            for key, value in warmup.inputs.items():
                assert value.data_type == by_name[key].data_type
                assert all(d > 0 for d in value.dims)
                assert len(value.dims) == len(by_name[key].dims)


def test_wire_precision(configs):
    """The embedding crosses the wire in FP16 both ways; images, prompts and outputs in FP32."""
    types = {}
    for name in (ENCODER_CORE, DECODER_CORE):
        for t in (*configs[name].input, *configs[name].output):
            types[name, t.name] = t.data_type
    assert types.pop((ENCODER_CORE, "image_embeddings")) == mc.TYPE_FP16
    assert types.pop((DECODER_CORE, "image_embeddings")) == mc.TYPE_FP16
    assert set(types.values()) == {mc.TYPE_FP32}


def test_the_encoder_adapter_runs_the_plan_and_names_its_model(configs):
    adapter = configs["sam_encoder"]
    params = {k: v.string_value for k, v in adapter.parameters.items()}
    assert adapter.backend == "python" and params["core_model"] == ENCODER_CORE
    assert adapter.max_batch_size == configs[ENCODER_CORE].max_batch_size
    assert [t.name for t in adapter.input] == [t.name for t in configs[ENCODER_CORE].input]
    assert [t.name for t in adapter.output] == ["image_embeddings", "model_id", "runtime"]


def test_the_adapter_runs_the_plan_with_the_cpu_contract(configs):
    adapter = configs["sam_decoder"]
    params = {k: v.string_value for k, v in adapter.parameters.items()}
    assert adapter.backend == "python"
    assert params["core_model"] == DECODER_CORE
    assert int(params["max_prompts_per_run"]) == configs[DECODER_CORE].max_batch_size
    assert [t.name for t in adapter.input] == [
        *(t.name for t in configs[DECODER_CORE].input),
        "model_id",
        "embedding_key",
    ]
    model_ids = {config.parameters["model_id"].string_value for config in configs.values()}
    assert len(model_ids) == 1  # every model knows the model it serves
    assert model_ids.pop().endswith("-gpu-fp16")  # never the CPU repository's id


def test_ensemble_shapes_match_the_fixed_size_encoder(configs, gpu_model):
    s, e = gpu_model.img_size, gpu_model.img_size // 16
    inputs = {t.name: list(t.dims) for t in configs["sam_amg"].input}
    outputs = {t.name: list(t.dims) for t in configs["sam_amg"].output}
    assert inputs["images"] == [3, s, s]
    assert outputs["image_embeddings"] == [_channels(gpu_model), e, e]
    generate = {t.name: list(t.dims) for t in configs["sam_amg_generate"].input}
    assert generate["image_embeddings"][0] == _channels(gpu_model)


def test_cpu_repository_configs_parse_too(model_repository):
    for name in MODELS:
        config = text_format.Parse((model_repository / name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert config.name == name


# --- engine metadata: a mismatched engine is refused, and says why -----------------------------


def _meta(**changes) -> EngineMetadata:
    base = EngineMetadata(
        tensorrt_version="10.7.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        precision="fp16",
        fp32_layer_types=("NORMALIZATION", "SOFTMAX", "REDUCE"),
        profile=encoder_profile(1024, LIMITS),
        onnx_sha256="ab" * 32,
        model_id="vit_b-0123456789abcdef",
    )
    return dataclasses.replace(base, **changes)


def test_metadata_round_trips_through_json():
    meta = _meta(build_seconds=12.5, pinned_fp32_layers=7)
    assert EngineMetadata.from_json(meta.to_json()) == meta
    assert mismatch(EngineMetadata.from_json(meta.to_json()), _meta()) is None  # informational fields differ


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tensorrt_version": "10.3.0"}, "tensorrt_version is '10.3.0' in the engine, '10.7.0' here"),
        ({"gpu_name": "NVIDIA A10G", "compute_capability": "8.6"}, "gpu_name is 'NVIDIA A10G'"),
        ({"onnx_sha256": "cd" * 32}, "onnx_sha256"),
        ({"profile": encoder_profile(1024, EngineLimits(encoder_max_batch=4))}, "profile"),
        ({"fp32_layer_types": ("NORMALIZATION",)}, "fp32_layer_types"),
        # vit_h: same graph (its weights are external data), other checkpoint -> other model_id
        ({"model_id": "vit_h-fedcba9876543210-gpu-fp16"}, "model_id is 'vit_h-fedcba9876543210-gpu-fp16'"),
    ],
)
def test_a_mismatched_engine_is_refused_with_the_reason(tmp_path, change, reason):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"serialized engine")
    plan.with_suffix(".json").write_text(_meta(**change).to_json())
    with pytest.raises(EngineMismatch, match="built for another setup: .*" + reason.replace("(", r"\(")):
        load_plan(plan, _meta())


def test_a_matching_engine_is_reused_and_a_missing_one_is_not(tmp_path):
    plan = tmp_path / "model.plan"
    with pytest.raises(EngineMismatch, match="missing"):
        load_plan(plan, _meta())
    plan.write_bytes(b"serialized engine")
    plan.with_suffix(".json").write_text(_meta().to_json())
    assert load_plan(plan, _meta()) == b"serialized engine"


# --- on a GPU only ------------------------------------------------------------------------------


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (it needs CUDA; CPU machines do not have it)"
    import torch

    if not torch.cuda.is_available():
        return "no NVIDIA GPU on this machine"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_engines_build_and_match_pytorch_on_the_gpu(small_sam, tmp_path):
    from build_engines.gpu_repository import write_gpu_repository

    out = write_gpu_repository(small_sam, tmp_path / "repo", EngineLimits(2, 16, 8))
    assert (out / ENCODER_CORE / "1" / "model.plan").stat().st_size > 0
    assert (out / DECODER_CORE / "1" / "model.plan").stat().st_size > 0
    again = write_gpu_repository(small_sam, tmp_path / "repo", EngineLimits(2, 16, 8))  # reuses the plans
    assert (again / ENCODER_CORE / "1" / "model.plan").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_several_families_build_and_match_pytorch_on_the_gpu(small_sam, sam2_small, tmp_path):
    from build_engines.gpu_repository import write_gpu_repositories

    out = write_gpu_repositories([("sam", small_sam), ("s2", sam2_small)], tmp_path / "repo", EngineLimits(2, 16, 8))
    for prefix in ("sam__", "s2__"):
        assert (out / f"{prefix}{ENCODER_CORE}" / "1" / "model.plan").stat().st_size > 0
        assert (out / f"{prefix}{DECODER_CORE}" / "1" / "model.plan").stat().st_size > 0
