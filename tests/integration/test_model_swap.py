"""Issue 25 #4: a model swapped under running gateways (vit_b -> vit_l behind a round-robin
Service: same input size, Triton never goes not-ready) never mixes embeddings. The encoder says
which model made every embedding and the decoder refuses another model's, so whatever a gateway
still believes it serves, nothing is stored under or fed from the wrong model."""

from __future__ import annotations

import shutil

import grpc
import pytest
import redis
import tritonclient.grpc as tc

from samserve.client import PromptSpec, SamClient
from samserve.contract import cache_key
from samserve.contract import served_model_id as served_id
from samserve.core.preprocess import PREPROCESS_VERSION
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from tests.support.cache import written

POINT = PromptSpec(points=[(40, 50)], labels=[1])
MODELS = ("sam_encoder", "sam_decoder", "sam_amg_generate", "sam_amg")


@pytest.fixture
def swappable_triton(model_repository, cache_dir, tmp_path):
    from samserve.devtools.local_servers import start_triton

    repo = tmp_path / "repo"
    shutil.copytree(model_repository, repo)
    server = start_triton(repo, tmp_path / "triton.log", cache_dir, explicit_model_control=True)
    yield repo, server
    server.stop()


def swap_in_place(repo, other, triton_url: str) -> None:
    """Another model's files and configs under the same names, then a reload of each: Triton
    keeps serving the old version until the new one is ready (no not-ready gap)."""
    client = tc.InferenceServerClient(triton_url)
    for name in MODELS:
        shutil.rmtree(repo / name)
        shutil.copytree(other / name, repo / name)
    for name in MODELS:
        client.load_model(name)
        assert client.is_model_ready(name)


def test_a_model_swapped_under_running_gateways_never_mixes_embeddings(
    swappable_triton, redis_server, served_model_id, tmp_path
):
    from build_engines.models import build_small_sam
    from build_engines.repository import write_cpu_repository

    repo, triton = swappable_triton
    other_sam = build_small_sam(img_size=256, seed=1)  # same architecture and input size, other weights
    other = write_cpu_repository(other_sam, tmp_path / "other")
    old_id, new_id = served_model_id, served_model_id_of(other_sam)
    assert old_id != new_id
    store = redis.Redis.from_url(redis_server.url)
    gw1 = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    gw2 = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    try:
        with SamClient(gw1.target, timeout_s=60) as c1, SamClient(gw2.target, timeout_s=60) as c2:
            x, y = png_image(200, 260, 9101), png_image(210, 250, 9102)
            ex = c1.embed(x)
            assert ex.model_id == old_id
            assert c2.segment(image_id=ex.image_id, prompts=[POINT]).cached  # gw2 serves the old model too

            swap_in_place(repo, other, triton.grpc_url)

            # gw1 still believes in the old model: a new image's embedding is the new model's,
            # stored under the new model's key and never under the old one's
            ey = c1.embed(y)
            assert ey.model_id == new_id
            assert written(store, cache_key(new_id, PREPROCESS_VERSION, ey.image_id))
            assert not store.exists(cache_key(old_id, PREPROCESS_VERSION, ey.image_id))

            # gw2 still believes in the old model: its cached embedding of x (the old model's) is
            # refused by the new decoder, never decoded by it
            with pytest.raises(grpc.RpcError) as err:
                c2.segment(image_id=ex.image_id, prompts=[POINT])
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
            assert f"was embedded by model {old_id}, which this deployment no longer serves" in err.value.details()

            # with the bytes, x is embedded again, by the new model
            seg = c2.segment(x, [POINT])
            assert not seg.cached and len(seg.prompts[0].masks) == 3
            assert c2.embed(x).model_id == new_id and c1.embed(x).cached
            assert store.exists(cache_key(old_id, PREPROCESS_VERSION, ex.image_id))  # the old entry untouched
    finally:
        gw1.stop()
        gw2.stop()


def served_model_id_of(loaded) -> str:
    return served_id(loaded.model_id, "cpu")
