"""Several models in one deployment (issue 27): a SAM, a MobileSAM and a SAM 2.1 in one Triton,
under prefixes that cannot collide, behind one gateway. Requests name their model; ListModels tells
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
def served_models(small_sam, redis_server, cache_dir, tmp_path_factory):
    from build_engines.models import build_mobile_sam
    from build_engines.repository import write_cpu_repositories
    from build_engines.sam2_models import build_sam2_model
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    mobile = build_mobile_sam(seed=3)
    sam2 = build_sam2_model("sam2.1_scaled", seed=6)
    work = tmp_path_factory.mktemp("models")
    repo = write_cpu_repositories([("sam", small_sam), ("mobile", mobile), ("sam2", sam2)], work / "repo")
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
                "sam2": served_model_id(sam2.model_id, "cpu"),
            },
        }
    finally:
        channel.close()
        gw.stop()
        triton.stop()


def test_list_models_tells_the_truth(served_models):
    r = served_models["stub"].ListModels(pb.ListModelsRequest(), timeout=30)
    assert r.default_model == "sam"
    by_name = {m.name: m for m in r.models}
    assert set(by_name) == {"sam", "mobile", "sam2"}
    assert (by_name["sam"].family, by_name["sam"].model_type, by_name["sam"].input_size.height) == ("sam", "small", 256)
    assert (by_name["mobile"].family, by_name["mobile"].model_type) == ("mobile_sam", "vit_t")
    assert by_name["mobile"].input_size.width == 1024
    assert (by_name["sam2"].family, by_name["sam2"].model_type, by_name["sam2"].input_size.width) == (
        "sam2",
        "sam2.1_scaled",
        256,
    )
    for m in by_name.values():
        assert list(m.prompts) == ["points", "box", "mask_input"] and "generate_masks" in m.outputs
    assert {n: m.model_id for n, m in by_name.items()} == served_models["ids"]
    assert by_name["sam"].is_default and not by_name["mobile"].is_default


def test_each_request_reaches_its_models_triton_models(served_models):
    stub, stats = served_models["stub"], served_models["stats"]
    image = png_image(200, 260, 7001)
    before = {m: stats.inferences(f"{m}__sam_encoder") for m in ("sam", "mobile", "sam2")}
    e = stub.Embed(pb.EmbedRequest(image=image, model="mobile"), timeout=120)
    assert e.model_id == served_models["ids"]["mobile"]
    assert stats.inferences("mobile__sam_encoder") == before["mobile"] + 1
    assert stats.inferences("sam__sam_encoder") == before["sam"]
    default = stub.Embed(pb.EmbedRequest(image=image), timeout=120)  # no model: the default's
    assert default.model_id == served_models["ids"]["sam"] and not default.cached
    assert stats.inferences("sam__sam_encoder") == before["sam"] + 1
    s2 = stub.Embed(pb.EmbedRequest(image=image, model="sam2"), timeout=120)
    assert s2.model_id == served_models["ids"]["sam2"] and not s2.cached  # same bytes, its own embedding
    assert stats.inferences("sam2__sam_encoder") == before["sam2"] + 1
    assert stats.inferences("mobile__sam_encoder") == before["mobile"] + 1
    decoded = stats.inferences("mobile__sam_decoder")
    seg = stub.Segment(
        pb.SegmentRequest(
            image_id=e.image_id, model="mobile", prompts=[pb.Prompt(points=[pb.Point(x=40, y=50, label=1)])]
        ),
        timeout=120,
    )
    assert seg.cached and len(seg.results[0].masks) == 3
    assert stats.inferences("mobile__sam_decoder") == decoded + 1
    amg = {m: stats.inferences(f"{m}__sam_amg_generate") for m in ("sam", "mobile", "sam2")}
    other_decoder = stats.inferences("sam__sam_decoder")
    stub.GenerateMasks(pb.GenerateMasksRequest(image=image, model="mobile", options=pb.AmgOptions(points_per_side=2)))
    assert stats.inferences("mobile__sam_amg_generate") == amg["mobile"] + 1
    assert stats.inferences("sam__sam_amg_generate") == amg["sam"]  # nothing reached the other sets
    assert stats.inferences("sam2__sam_amg_generate") == amg["sam2"]
    assert stats.inferences("sam__sam_decoder") == other_decoder
    s2_decoder = stats.inferences("sam2__sam_decoder")
    records = stub.GenerateMasks(
        pb.GenerateMasksRequest(image_id=s2.image_id, model="sam2", options=pb.AmgOptions(points_per_side=2)),
        timeout=120,
    )
    assert records.cached and stats.inferences("sam2__sam_amg_generate") == amg["sam2"] + 1
    assert stats.inferences("sam2__sam_decoder") > s2_decoder  # its generator called its own decoder
    assert stats.inferences("sam__sam_decoder") == other_decoder


@pytest.mark.parametrize(("made_by", "asked"), [("mobile", "sam"), ("sam", "sam2"), ("sam2", "mobile")])
def test_embeddings_never_cross_models(served_models, made_by, asked):
    stub = served_models["stub"]
    image = png_image(150, 180, 7002 + len(made_by))
    e = stub.Embed(pb.EmbedRequest(image=image, model=made_by), timeout=120)
    request = pb.SegmentRequest(
        image_id=e.image_id, model=asked, prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]
    )
    with pytest.raises(grpc.RpcError) as err:  # a model never gets another model's embedding
        stub.Segment(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    amg = pb.GenerateMasksRequest(image_id=e.image_id, model=asked, options=pb.AmgOptions(points_per_side=2))
    with pytest.raises(grpc.RpcError) as err:
        stub.GenerateMasks(amg, timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    again = stub.Embed(pb.EmbedRequest(image=image, model=asked), timeout=120)
    assert not again.cached and again.model_id == served_models["ids"][asked]


@pytest.mark.parametrize("rpc", ["Embed", "Segment", "GenerateMasks"])
def test_an_unknown_model_is_not_found_naming_the_models_served(served_models, rpc):
    image = png_image(64, 64, 7003)
    request = {
        "Embed": pb.EmbedRequest(image=image, model="vit_h"),
        "Segment": pb.SegmentRequest(
            image=image, model="vit_h", prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]
        ),
        "GenerateMasks": pb.GenerateMasksRequest(image=image, model="vit_h"),
    }[rpc]
    with pytest.raises(grpc.RpcError) as err:
        getattr(served_models["stub"], rpc)(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'vit_h' is not served; served: mobile, sam, sam2 (unset: the default, 'sam')" in err.value.details()


def test_the_sdk_names_models_and_a_configured_default_applies(served_models, triton_server, redis_server):
    """SamClient's model argument, and SAMSERVE_DEFAULT_MODEL over the repository's default."""
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings

    client, ids = served_models["client"], served_models["ids"]
    image = png_image(90, 110, 7004)
    assert client.embed(image, model="mobile").model_id == ids["mobile"]
    assert {m.name for m in client.list_models().models} == {"sam", "mobile", "sam2"}
    target = served_models["target_triton"]
    gw = GatewayThread(gateway_settings(target, redis_server.url, default_model="mobile"))
    try:
        with SamClient(gw.target, timeout_s=120) as other:
            assert other.embed(image).model_id == ids["mobile"] and other.embed(image).cached
            assert other.list_models().default_model == "mobile"
    finally:
        gw.stop()


def test_sam2_options_are_refused_for_other_families(served_models):
    stub = served_models["stub"]
    image = png_image(80, 90, 7010)
    for options in (
        pb.AmgOptions(use_m2m=True),
        pb.AmgOptions(multimask_output=False),
        pb.AmgOptions(mask_threshold=1),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.GenerateMasks(pb.GenerateMasksRequest(image=image, model="mobile", options=options), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "a SAM 2 generator option; this model's family (mobile_sam)" in err.value.details()
    ok = stub.GenerateMasks(
        pb.GenerateMasksRequest(image=image, model="sam2", options=pb.AmgOptions(points_per_side=2, use_m2m=True)),
        timeout=120,
    )
    assert ok.original_size.width == 90
