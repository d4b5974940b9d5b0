"""One checkpoint served in fp32 and in bf16 side by side (issue 35): each has its own model id
(and so its own cache entries), ListModels says each one's precision and what runs it, and the
bf16 masks match the fp32 ones to the accuracy gate's figures. Prints the IoU table."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from samserve.client import PromptSpec, SamClient
from samserve.contract import served_model_id
from samserve.devtools.sample_images import png_image
from samserve.triton.cpu_runtime import bf16_hardware
from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc

pytestmark = pytest.mark.skipif(bf16_hardware() == "", reason="this CPU has neither AMX nor AVX512-BF16")


@pytest.fixture(scope="module")
def precisions(small_sam, redis_server, cache_dir, tmp_path_factory):
    from build_engines.repository import write_cpu_repositories
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    work = tmp_path_factory.mktemp("precisions")
    repo = write_cpu_repositories(
        [("full", small_sam), ("half", small_sam)], work / "repo", precisions={"full": "fp32", "half": "bf16"}
    )
    triton = start_triton(repo, work / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    channel = grpc.insecure_channel(gw.target)
    try:
        yield pb_grpc.SegmentAnythingStub(channel), SamClient(gw.target, timeout_s=120)
    finally:
        channel.close()
        gw.stop()
        triton.stop()


def test_each_precision_has_its_id_and_says_what_runs_it(precisions, small_sam, fresh_seed):
    stub, client = precisions
    before = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert (before["full"].precision, before["half"].precision) == ("fp32", "bf16")
    assert "not yet run" in before["half"].runtime  # nothing has answered yet: as configured

    data = png_image(200, 260, fresh_seed)
    ids = {name: client.embed(data, model=name).model_id for name in ("full", "half")}
    assert ids == {p: served_model_id(small_sam.model_id, "cpu", q) for p, q in (("full", "fp32"), ("half", "bf16"))}
    assert client.embed(data, model="half").cached  # its own cache entry, kept
    for name in ("full", "half"):
        client.segment(data, [PromptSpec(points=[(60, 80)], labels=[1])], model=name)
    after = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    half = after["half"].runtime
    assert half.startswith("encoder openvino ") and "; decoder openvino " in half, half
    assert half.count(" bf16 on ") == 2 and "not yet run" not in half, half
    full = after["full"].runtime  # fp32: OpenVINO encoder, ONNX Runtime decoder (the faster of each)
    assert "encoder openvino" in full and "decoder onnxruntime" in full and "bf16" not in full, full


def test_bf16_masks_match_fp32_to_the_gate(precisions, fresh_seed, capsys):
    _, client = precisions
    rng = np.random.default_rng(fresh_seed)
    rows, ious = [], []
    for k in range(3):
        data = png_image(240, 320, fresh_seed * 10 + k)
        prompts = [PromptSpec(points=[tuple(rng.uniform(20, 220, 2))], labels=[1]) for _ in range(6)]
        prompts.append(PromptSpec(box=(30.0, 40.0, 200.0, 180.0)))
        full = client.segment(data, prompts, model="full")
        half = client.segment(data, prompts, model="half")
        for a, b in zip(full.prompts, half.prompts, strict=True):
            for m, n in zip(a.masks, b.masks, strict=True):
                union = (m | n).sum()
                if union:
                    ious.append((m & n).sum() / union)
            rows.append(float(np.abs(a.iou_predictions - b.iou_predictions).max()))
    ious = np.array(ious)
    assert len(ious) > 40  # the masks have pixels: the comparison is not vacuous
    with capsys.disabled():
        print(
            f"\nbf16 vs fp32, served (small random-weight SAM, {len(ious)} masks): mask IoU mean {ious.mean():.4f}, "
            f"worst {ious.min():.4f}; largest IoU-prediction difference {max(rows):.4f}"
        )
    assert ious.mean() >= 0.98 and ious.min() >= 0.9 and max(rows) <= 0.02
