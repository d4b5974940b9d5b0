"""A Redis read that fails or times out is UNAVAILABLE (retryable, naming the cache), never
NOT_FOUND, and the next request reads Redis again at once; concurrent reads of one key in one
gateway are one Redis read."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest
import redis

from samserve.client import PromptSpec, SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from samserve.gateway.deadline import Deadline

POINT = [PromptSpec(points=[(30, 40)], labels=[1])]


@pytest.fixture
def own_redis():
    from samserve.devtools.local_servers import start_redis

    server = start_redis()
    yield server
    os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def _gets(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_a_frozen_redis_is_unavailable_not_not_found_and_served_again_at_once(triton_server, own_redis):
    with SamClient(_gateway(triton_server, own_redis).target, timeout_s=60) as c:
        image_id = c.embed(png_image(120, 160, 4101)).image_id
    fresh = _gateway(triton_server, own_redis)  # believes nothing resident: it reads the embedding from Redis
    with SamClient(fresh.target, timeout_s=60) as c:
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as err:
                c.segment(image_id=image_id, prompts=POINT)
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert "cache" in err.value.details().lower() or "redis" in err.value.details().lower()
        assert len(c.segment(image_id=image_id, prompts=POINT).prompts) == 1  # at once: no skip window


def test_concurrent_reads_of_one_key_are_one_redis_read(triton_server, own_redis):
    gw = _gateway(triton_server, own_redis)
    with SamClient(gw.target, timeout_s=60) as c:
        image_id = c.embed(png_image(300, 200, 4102)).image_id
    before = _gets(own_redis.url)

    async def many():
        return await asyncio.gather(*(gw.gateway.engine.embedding_by_id(image_id, Deadline(30)) for _ in range(64)))

    entries = gw.call(many())
    assert len({id(e) for e in entries}) == 1 and entries[0].embedding is not None
    assert _gets(own_redis.url) - before == 1


_started: list[GatewayThread] = []


def _gateway(triton_server, own_redis) -> GatewayThread:
    gw = GatewayThread(gateway_settings(triton_server.grpc_url, own_redis.url, redis_timeout_s=0.5))
    _started.append(gw)
    return gw


@pytest.fixture(autouse=True)
def _stop_gateways():
    yield
    while _started:
        _started.pop().stop()
