"""The GPU repository's model path, run on the CPU: the generated configs of sam_encoder and
sam_decoder (the python adapters, core_model set), sam_encoder_trt and sam_decoder_trt (batch
dimension = images / prompts, FP16 embedding, reshaped has_mask_input, warmup) served by a real
Triton, with an ONNX Runtime stand-in in place of each TensorRT plan. Whatever the gateway asks
must come back exactly as on the CPU path."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from build_engines.gpu_repository import (
    DECODER_CORE,
    ENCODER_CORE,
    adapter_config,
    decoder_core_config,
    encoder_adapter_config,
    encoder_config,
)
from build_engines.repository import model_parameters
from build_engines.tensorrt_engines import EngineLimits
from samserve.client import PromptSpec
from samserve.devtools.sample_images import encode, synthetic_image
from tests.integration.conftest import TritonStats

STANDIN = Path(__file__).resolve().parents[1] / "support" / "plan_standin" / "model.py"
LIMITS = EngineLimits(encoder_max_batch=2, decoder_max_prompts=8, decoder_max_points=66)


@pytest.fixture(scope="module")
def adapter_stack(model_repository, small_sam, redis_server, cache_dir, tmp_path_factory):
    from samserve.client import SamClient
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    repo = tmp_path_factory.mktemp("adapter") / "repo"
    shutil.copytree(model_repository, repo)
    params = model_parameters(small_sam)
    for adapter, core, adapter_text, core_text in (
        ("sam_encoder", ENCODER_CORE, encoder_adapter_config, encoder_config),
        ("sam_decoder", DECODER_CORE, adapter_config, decoder_core_config),
    ):
        (repo / adapter / "config.pbtxt").write_text(adapter_text(params, LIMITS))
        (repo / core / "1").mkdir(parents=True)
        (repo / adapter / "1" / "model.onnx").rename(repo / core / "1" / "model.onnx")  # the adapter must not need it
        shutil.copy(STANDIN, repo / core / "1" / "model.py")
        config = core_text(params, LIMITS)
        assert 'platform: "tensorrt_plan"' in config and "KIND_GPU" in config
        config = config.replace('platform: "tensorrt_plan"', 'backend: "python"').replace("KIND_GPU", "KIND_CPU")
        (repo / core / "config.pbtxt").write_text(config)

    triton = start_triton(repo, tmp_path_factory.mktemp("adapter-logs") / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    try:
        with SamClient(gw.target, timeout_s=120) as client:
            yield client, TritonStats(triton.grpc_url)
    finally:
        gw.stop()
        triton.stop()


PROMPTS = [
    PromptSpec(points=[(40.0, 50.0)], labels=[1]),
    PromptSpec(points=[(40.0, 50.0), (120.0, 90.0), (10.0, 10.0)], labels=[1, 0, 1]),
    PromptSpec(box=(20.0, 30.0, 150.0, 140.0)),
    PromptSpec(points=[(60.0, 70.0)], labels=[1], box=(20.0, 30.0, 150.0, 140.0)),
] * 3  # 12 prompts: more than one engine run of decoder_max_prompts=8


def _same(a, b) -> None:
    assert len(a.prompts) == len(b.prompts)
    for pa, pb in zip(a.prompts, b.prompts, strict=True):
        np.testing.assert_array_equal(pa.masks, pb.masks)
        np.testing.assert_allclose(pa.iou_predictions, pb.iou_predictions, atol=1e-6)


def test_segment_through_the_adapter_equals_the_cpu_path(adapter_stack, client):
    adapter, stats = adapter_stack
    before = stats.inferences(DECODER_CORE)
    encoded = stats.inferences(ENCODER_CORE)
    data = encode(synthetic_image(200, 260, seed=71))
    for multimask in (True, False):
        _same(
            adapter.segment(data, PROMPTS, multimask_output=multimask),
            client.segment(data, PROMPTS, multimask_output=multimask),
        )
    first = adapter.segment(data, PROMPTS[:1], return_low_res_logits=True).prompts[0]
    refine = [PromptSpec(points=[(40.0, 50.0)], labels=[1], mask_input=first.low_res_logits[0])]
    _same(adapter.segment(data, refine), client.segment(data, refine))
    assert stats.inferences(DECODER_CORE) - before == 2 * len(PROMPTS) + 2  # every prompt ran on the core model
    assert stats.inferences(ENCODER_CORE) - encoded == 1  # the image, on the encoder's core model


def test_concurrent_clients_are_merged_and_answered_right(adapter_stack, client):
    adapter, stats = adapter_stack
    images = [encode(synthetic_image(180, 240, seed=80 + i)) for i in range(6)]
    expected = [client.segment(img, PROMPTS[i % 4 : i % 4 + 2]) for i, img in enumerate(images)]
    runs_before = stats.counts(DECODER_CORE)[1]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda i: adapter.segment(images[i], PROMPTS[i % 4 : i % 4 + 2]), range(6)))
    for a, b in zip(got, expected, strict=True):
        _same(a, b)
    assert stats.counts(DECODER_CORE)[1] > runs_before


def test_amg_through_the_adapter_equals_the_cpu_path(adapter_stack, client):
    adapter, _ = adapter_stack
    data = encode(synthetic_image(160, 200, seed=90))
    options = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}  # random weights
    a = adapter.generate_masks(data, **options)
    b = client.generate_masks(data, **options)
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.segmentation, rb.segmentation)
        assert ra.bbox == rb.bbox
