"""A gateway against a Triton whose repository is of the previous layout (as during a rolling
update: gateways ready in seconds, Triton pods in minutes) is NOT_SERVING and says which layouts
differ; it sends nothing the old models would refuse, and every RPC is UNAVAILABLE (retryable)
with the same reason, over gRPC and HTTP."""

from __future__ import annotations

import re
import shutil

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from samserve.client import PromptSpec, SamClient
from samserve.contract import LAYOUT_PARAMETER, REPOSITORY_LAYOUT
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from tests.integration.test_faults import health, wait_for


@pytest.fixture
def previous_layout_triton(model_repository, cache_dir, tmp_path):
    """The suite's repository as the previous layout wrote it: no config states its layout."""
    from samserve.devtools.local_servers import start_triton

    repo = tmp_path / "repo"
    shutil.copytree(model_repository, repo)
    stated = re.compile(r'parameters \{ key: "' + LAYOUT_PARAMETER + r'" value \{ string_value: "\d+" \} \}\n')
    for config in repo.glob("*/config.pbtxt"):
        text = config.read_text()
        assert stated.search(text), config  # the pattern matches what build_engines writes
        config.write_text(stated.sub("", text))
    server = start_triton(repo, tmp_path / "triton.log", cache_dir)
    yield server
    server.stop()


def test_a_gateway_against_the_previous_layout_is_not_serving_and_says_why(previous_layout_triton, redis_server):
    gw = GatewayThread(gateway_settings(previous_layout_triton.grpc_url, redis_server.url))
    try:
        wait_for(lambda: health(gw.target) == health_pb2.HealthCheckResponse.NOT_SERVING, 20, "NOT_SERVING")
        reason = httpx.get(gw.http_url + "/v1/health", timeout=10)
        assert reason.status_code == 503
        message = reason.json()["reason"]
        assert f"layout {REPOSITORY_LAYOUT}" in message and "layout 3 or older" in message
        with SamClient(gw.target, timeout_s=30) as c:
            for call in (
                lambda: c.embed(png_image(64, 64, 5401)),
                lambda: c.segment(image=png_image(64, 64, 5401), prompts=[PromptSpec(points=[(5, 5)], labels=[1])]),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
                assert "layout" in err.value.details()
        embedded = httpx.post(gw.http_url + "/v1/embed", files={"image": ("a.png", png_image(64, 64, 5401))})
        assert embedded.status_code == 503 and "layout" in embedded.json()["error"]["message"]
        assert embedded.headers.get("retry-after")
    finally:
        gw.stop()
    # nothing was sent to the old models: their encoder never ran
    import tritonclient.grpc as tc

    stats = tc.InferenceServerClient(previous_layout_triton.grpc_url).get_inference_statistics("sam_encoder")
    assert int(stats.model_stats[0].inference_count) == 0
