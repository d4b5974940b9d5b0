"""Several models in one deployment (issue 27): a SAM and a MobileSAM in one Triton, under
prefixes that cannot collide, behind one gateway. Requests name their model; ListModels tells
the truth; an unknown model is NOT_FOUND naming those served; embeddings never cross models."""

from __future__ import annotations

import grpc
import pytest

from samserve.client import PromptSpec, SamClient
from samserve.contract import served_model_id
from samserve.devtools.sample_images import png_image
from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc
from tests.integration.conftest import TritonStats

POINT = PromptSpec(points=[(40, 50)], labels=[1])


@pytest.fixture(scope="module")
def two_models(small_sam, redis_server, cache_dir, tmp_path_factory):
    from build_engines.models import build_mobile_sam
    from build_engines.repository import write_cpu_repositories
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    mobile = build_mobile_sam(seed=3)
    work = tmp_path_factory.mktemp("models")
    repo = write_cpu_repositories([("sam", small_sam), ("mobile", mobile)], work / "repo")
    triton = start_triton(repo, work / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    channel = grpc.insecure_channel(gw.target)
    try:
        yield {
            "stub": pb_grpc.SegmentAnythingStub(channel),
            "client": SamClient(gw.target, timeout_s=120),
            "stats": TritonStats(triton.grpc_url),
            "target_triton": triton.grpc_url,
            "ids": {
                "sam": served_model_id(small_sam.model_id, "cpu"),
                "mobile": served_model_id(mobile.model_id, "cpu"),
            },
        }
    finally:
        channel.close()
        gw.stop()
        triton.stop()


def test_list_models_tells_the_truth(two_models):
    r = two_models["stub"].ListModels(pb.ListModelsRequest(), timeout=30)
    assert r.default_model == "sam"
    by_name = {m.name: m for m in r.models}
    assert set(by_name) == {"sam", "mobile"}
    assert (by_name["sam"].family, by_name["sam"].model_type, by_name["sam"].input_size.height) == ("sam", "small", 256)
    assert (by_name["mobile"].family, by_name["mobile"].model_type) == ("mobile_sam", "vit_t")
    assert by_name["mobile"].input_size.width == 1024
    assert {n: m.model_id for n, m in by_name.items()} == two_models["ids"]
    assert by_name["sam"].is_default and not by_name["mobile"].is_default


def test_each_request_reaches_its_models_triton_models(two_models):
    stub, stats = two_models["stub"], two_models["stats"]
    image = png_image(200, 260, 7001)
    before = {m: stats.inferences(f"{m}__sam_encoder") for m in ("sam", "mobile")}
    e = stub.Embed(pb.EmbedRequest(image=image, model="mobile"), timeout=120)
    assert e.model_id == two_models["ids"]["mobile"]
    assert stats.inferences("mobile__sam_encoder") == before["mobile"] + 1
    assert stats.inferences("sam__sam_encoder") == before["sam"]
    default = stub.Embed(pb.EmbedRequest(image=image), timeout=120)  # no model: the default's
    assert default.model_id == two_models["ids"]["sam"] and not default.cached
    assert stats.inferences("sam__sam_encoder") == before["sam"] + 1
    decoded = stats.inferences("mobile__sam_decoder")
    seg = stub.Segment(
        pb.SegmentRequest(
            image_id=e.image_id, model="mobile", prompts=[pb.Prompt(points=[pb.Point(x=40, y=50, label=1)])]
        ),
        timeout=120,
    )
    assert seg.cached and len(seg.results[0].masks) == 3
    assert stats.inferences("mobile__sam_decoder") == decoded + 1
    amg = {m: stats.inferences(f"{m}__sam_amg_generate") for m in ("sam", "mobile")}
    other_decoder = stats.inferences("sam__sam_decoder")
    stub.GenerateMasks(pb.GenerateMasksRequest(image=image, model="mobile", options=pb.AmgOptions(points_per_side=2)))
    assert stats.inferences("mobile__sam_amg_generate") == amg["mobile"] + 1
    assert stats.inferences("sam__sam_amg_generate") == amg["sam"]  # nothing reached the other set
    assert stats.inferences("sam__sam_decoder") == other_decoder


def test_embeddings_never_cross_models(two_models):
    stub = two_models["stub"]
    image = png_image(150, 180, 7002)
    e = stub.Embed(pb.EmbedRequest(image=image, model="mobile"), timeout=120)
    request = pb.SegmentRequest(
        image_id=e.image_id, model="sam", prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]
    )
    with pytest.raises(grpc.RpcError) as err:  # the SAM model never gets MobileSAM's embedding
        stub.Segment(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    again = stub.Embed(pb.EmbedRequest(image=image, model="sam"), timeout=120)
    assert not again.cached and again.model_id == two_models["ids"]["sam"]


@pytest.mark.parametrize("rpc", ["Embed", "Segment", "GenerateMasks"])
def test_an_unknown_model_is_not_found_naming_the_models_served(two_models, rpc):
    image = png_image(64, 64, 7003)
    request = {
        "Embed": pb.EmbedRequest(image=image, model="vit_h"),
        "Segment": pb.SegmentRequest(
            image=image, model="vit_h", prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]
        ),
        "GenerateMasks": pb.GenerateMasksRequest(image=image, model="vit_h"),
    }[rpc]
    with pytest.raises(grpc.RpcError) as err:
        getattr(two_models["stub"], rpc)(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'vit_h' is not served; served: mobile, sam (unset: the default, 'sam')" in err.value.details()


def test_the_sdk_names_models_and_a_configured_default_applies(two_models, triton_server, redis_server):
    """SamClient's model argument, and SAMSERVE_DEFAULT_MODEL over the repository's default."""
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings

    client, ids = two_models["client"], two_models["ids"]
    image = png_image(90, 110, 7004)
    assert client.embed(image, model="mobile").model_id == ids["mobile"]
    assert {m.name for m in client.list_models().models} == {"sam", "mobile"}
    target = two_models["target_triton"]
    gw = GatewayThread(gateway_settings(target, redis_server.url, default_model="mobile"))
    try:
        with SamClient(gw.target, timeout_s=120) as other:
            assert other.embed(image).model_id == ids["mobile"] and other.embed(image).cached
            assert other.list_models().default_model == "mobile"
    finally:
        gw.stop()
