"""State that must not be lost to cache pressure (single-flight locks, kept logits) lives in a
Redis that evicts nothing, apart from the embedding cache, which may evict anything: filling the
cache evicts embeddings, never a kept mask or a lock. A gateway whose state could be evicted
says so at start."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis

from samserve.client import PromptSpec, SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.local_servers import start_redis
from samserve.devtools.sample_images import png_image

FIRST = [PromptSpec(points=[(60, 50)], labels=[1])]
CACHE_MAXMEMORY = 4 << 20


@pytest.fixture
def two_redis():
    cache = start_redis(maxmemory=str(CACHE_MAXMEMORY))  # allkeys-lru
    state = start_redis(extra_args=["--maxmemory-policy", "noeviction"])
    yield cache, state
    cache.stop()
    state.stop()


def _fill(url: str, nbytes: int) -> None:
    """Cache pressure: twice the cache's memory in entries of 256 KiB, as embeddings would be."""
    r = redis.Redis.from_url(url)
    chunk = b"x" * (256 << 10)
    for i in range(nbytes // len(chunk)):
        r.set(f"samserve:emb:pressure:{i}", chunk, ex=600)


def _stats(url: str) -> dict:
    r = redis.Redis.from_url(url)
    return {"evicted": int(r.info("stats")["evicted_keys"]), "commands": r.info("commandstats")}


def _refine(client: SamClient, image_id: str, logits_id: str):
    prompt = PromptSpec(points=[(60, 50), (100, 30)], labels=[1, 0], mask_input_id=logits_id)
    return client.segment(image_id=image_id, prompts=[prompt], multimask_output=False)


def test_cache_pressure_evicts_embeddings_never_kept_logits_or_locks(triton_server, two_redis, caplog):
    cache, state = two_redis
    settings = gateway_settings(triton_server.grpc_url, cache.url, state_redis_url=state.url)
    with caplog.at_level(logging.WARNING, logger="samserve.gateway.app"):
        gw = GatewayThread(settings)
    try:
        assert "can evict them" not in caplog.text  # a layout that keeps its state
        with SamClient(gw.target, timeout_s=60) as c:
            image_id = c.embed(png_image(120, 160, 5301)).image_id
            first = c.segment(image_id=image_id, prompts=FIRST, keep_low_res_logits=True)
            kept = first.prompts[0].low_res_logits_ids
            assert len(kept) == 3
            before = _refine(c, image_id, kept[0])
            # the encoder run's lock was taken and released in the state Redis, not the cache's
            assert "cmdstat_eval" in _stats(state.url)["commands"]
            assert "cmdstat_eval" not in _stats(cache.url)["commands"]
            _fill(cache.url, 2 * CACHE_MAXMEMORY)
            assert _stats(cache.url)["evicted"] > 0  # the pressure was real
            assert _stats(state.url)["evicted"] == 0
            after = _refine(c, image_id, kept[0])  # the kept mask is still there
            np.testing.assert_array_equal(after.prompts[0].masks, before.prompts[0].masks)
            assert after.prompts[0].masks.any()
    finally:
        gw.stop()


def test_one_redis_that_evicts_holds_the_state_at_risk_and_the_gateway_says_so(triton_server, caplog):
    """The same pressure on one allkeys-lru instance evicts kept logits: the reason for the two
    roles, and what the start-up warning is about."""
    shared = start_redis(maxmemory=str(CACHE_MAXMEMORY))
    try:
        with caplog.at_level(logging.WARNING, logger="samserve.gateway.app"):
            gw = GatewayThread(gateway_settings(triton_server.grpc_url, shared.url))
        try:
            assert "maxmemory-policy allkeys-lru" in caplog.text and "SAMSERVE_STATE_REDIS_URL" in caplog.text
            with SamClient(gw.target, timeout_s=60) as c:
                image_id = c.embed(png_image(120, 160, 5302)).image_id
                kept = c.segment(image_id=image_id, prompts=FIRST, keep_low_res_logits=True).prompts[0]
                _fill(shared.url, 4 * CACHE_MAXMEMORY)
                r = redis.Redis.from_url(shared.url)
                held = [r.exists(k) for k in r.scan_iter("samserve:logits:*")]
                assert sum(held) < len(kept.low_res_logits_ids)
        finally:
            gw.stop()
    finally:
        shared.stop()
