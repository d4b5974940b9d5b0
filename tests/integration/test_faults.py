"""Losing Triton under load: in-flight requests end with UNAVAILABLE within their deadline
(none hangs), health turns NOT_SERVING, and when Triton is back the same gateway serves again."""

from __future__ import annotations

import concurrent.futures as cf
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samserve.client import PromptSpec, SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image

DEADLINE_S = 8.0


def health(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        return (
            health_pb2_grpc.HealthStub(ch)
            .Check(health_pb2.HealthCheckRequest(service="samserve.v1.SegmentAnything"), timeout=5)
            .status
        )


def wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def own_triton(model_repository, cache_dir, tmp_path):
    from samserve.devtools.local_servers import start_triton

    server = start_triton(model_repository, tmp_path / "triton.log", cache_dir)
    yield server
    server.stop()


def test_triton_killed_under_load_then_restarted(own_triton, redis_server, cache_dir, tmp_path, model_repository):
    from samserve.devtools.local_servers import start_triton

    gw = GatewayThread(gateway_settings(own_triton.grpc_url, redis_server.url))
    try:
        wait_for(lambda: health(gw.target) == health_pb2.HealthCheckResponse.SERVING, 20, "SERVING")
        n = 64  # uncached images: encoder work in flight when Triton dies (the rest fail fast)
        images = [png_image(300, 400, 5000 + i) for i in range(n)]

        def one(i: int) -> tuple[str, float]:
            started = time.monotonic()
            with SamClient(gw.target, timeout_s=DEADLINE_S) as c:
                try:
                    c.segment(images[i], [PromptSpec(points=[(10, 10)], labels=[1])])
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
            return code, time.monotonic() - started

        with cf.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(n)]
            while not any(f.done() for f in futures):  # load is flowing
                time.sleep(0.01)
            own_triton.kill()  # SIGKILL, mid-load
            results = [f.result(timeout=DEADLINE_S + 5) for f in futures]
        codes = {code for code, _ in results}
        assert codes <= {"OK", "UNAVAILABLE"}, results
        assert "UNAVAILABLE" in codes, results
        assert max(t for _, t in results) < DEADLINE_S + 1, results  # nothing hung past its deadline
        wait_for(lambda: health(gw.target) == health_pb2.HealthCheckResponse.NOT_SERVING, 10, "NOT_SERVING")
        with SamClient(gw.target, timeout_s=DEADLINE_S) as c, pytest.raises(grpc.RpcError) as err:
            c.embed(png_image(50, 50, 6000))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        details = err.value.details()  # what was wrong and a request id, never Triton's own text
        assert "Triton is unavailable" in details and "request id" in details, details
        assert str(own_triton.grpc_port) not in details and "connect" not in details.lower(), details

        restarted = start_triton(
            model_repository,
            tmp_path / "triton2.log",
            cache_dir,
            grpc_port=own_triton.grpc_port,
            http_port=own_triton.http_port,
            metrics_port=own_triton.metrics_port,
        )
        try:
            wait_for(lambda: health(gw.target) == health_pb2.HealthCheckResponse.SERVING, 20, "SERVING again")
            with SamClient(gw.target, timeout_s=30) as c:
                assert len(c.segment(images[0], [PromptSpec(points=[(10, 10)], labels=[1])]).prompts) == 1
        finally:
            restarted.stop()
    finally:
        gw.stop()


def test_an_expired_deadline_starts_no_work(gateway, triton_stats):
    before = triton_stats.inferences("sam_encoder")
    with SamClient(gateway.target, timeout_s=0.0001) as c, pytest.raises(grpc.RpcError) as err:
        c.embed(png_image(300, 300, 6001))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.5)
    assert triton_stats.inferences("sam_encoder") == before
