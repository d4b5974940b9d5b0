"""The Redis embedding cache, proven with Triton's statistics (what ran), not with timing."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging

import grpc
import numpy as np
import prometheus_client
import pytest
import redis

from samserve.client import PromptSpec, SamClient
from samserve.contract import cache_key
from samserve.core.embedding_codec import decode_entry
from samserve.core.preprocess import PREPROCESS_VERSION
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from tests.support.cache import written

POINT = PromptSpec(points=[(40, 50)], labels=[1])


def test_second_embed_of_same_image_skips_encoder(client, triton_stats, fresh_seed):
    data = png_image(200, 300, fresh_seed)
    before = triton_stats.inferences("sam_encoder")
    first = client.embed(data)
    assert not first.cached
    assert triton_stats.inferences("sam_encoder") == before + 1
    second = client.embed(data)
    assert second.cached and second.image_id == first.image_id
    assert triton_stats.inferences("sam_encoder") == before + 1


def test_segment_after_embed_skips_encoder(client, triton_stats, fresh_seed):
    data = png_image(210, 170, fresh_seed)
    client.embed(data)
    before = triton_stats.inferences("sam_encoder")
    seg = client.segment(data, [POINT])
    assert seg.cached
    assert triton_stats.inferences("sam_encoder") == before


def test_cache_value_follows_the_key_contract(client, redis_server, served_model_id, fresh_seed):
    data = png_image(150, 190, fresh_seed)
    image_id = client.embed(data).image_id
    r = redis.Redis.from_url(redis_server.url)
    key = f"samserve:emb:{served_model_id}:{PREPROCESS_VERSION}:{image_id}"
    assert key == cache_key(served_model_id, PREPROCESS_VERSION, image_id)
    entry = decode_entry(written(r, key), served_model_id)
    assert entry.embedding.dtype == np.float16 and entry.embedding.shape == (1, 256, 16, 16)
    assert entry.original_size == (150, 190) and entry.input_size == (202, 256)
    assert 0 < r.ttl(key) <= 24 * 3600


def test_corrupted_value_is_a_miss_and_is_overwritten(client, triton_stats, redis_server, served_model_id, fresh_seed):
    data = png_image(160, 160, fresh_seed)
    image_id = client.embed(data).image_id
    r = redis.Redis.from_url(redis_server.url)
    key = cache_key(served_model_id, PREPROCESS_VERSION, image_id)
    good = written(r, key)
    r.set(key, good[:-10] + b"\x00" * 10)  # a flipped payload: checksum mismatch
    before = triton_stats.inferences("sam_encoder")
    again = client.embed(data)
    assert not again.cached
    assert triton_stats.inferences("sam_encoder") == before + 1
    assert client.embed(data).cached  # from memory until written, then from Redis
    assert decode_entry(written(r, key), served_model_id).original_size == (160, 160)


def test_concurrent_requests_for_a_new_image_run_the_encoder_once(gateway, triton_stats, fresh_seed):
    data = png_image(400, 300, fresh_seed)
    before = triton_stats.inferences("sam_encoder")

    def one(i: int):
        with SamClient(gateway.target) as c:
            if i % 2:
                return c.embed(data).image_id
            return c.segment(data, [POINT]).image_id

    with cf.ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(one, range(6)))
    assert len(ids) == 1
    assert triton_stats.inferences("sam_encoder") == before + 1


@pytest.fixture
def other_model_triton(tmp_path, cache_dir):
    """A second Triton serving the same architecture with other weights (a model upgrade)."""
    from build_engines.models import build_small_sam
    from build_engines.repository import write_cpu_repository
    from samserve.devtools.local_servers import start_triton

    repo = write_cpu_repository(build_small_sam(img_size=256, seed=1), tmp_path / "repo")
    server = start_triton(repo, tmp_path / "triton.log", cache_dir)
    yield server
    server.stop()


def test_a_different_model_id_misses(client, redis_server, other_model_triton, served_model_id, fresh_seed):
    data = png_image(140, 220, fresh_seed)
    assert not client.embed(data).cached
    other = GatewayThread(gateway_settings(other_model_triton.grpc_url, redis_server.url))
    try:
        with SamClient(other.target) as c:
            r = c.embed(data)
            assert r.model_id != served_model_id
            assert not r.cached  # same image, same Redis, other weights: never the old embedding
            assert c.embed(data).cached
    finally:
        other.stop()
    assert client.embed(data).cached  # the first model's entry is still there


@pytest.fixture
def own_redis_gateway(triton_server):
    from samserve.devtools.local_servers import start_redis

    server = start_redis()
    gw = GatewayThread(gateway_settings(triton_server.grpc_url, server.url))
    yield gw, server
    gw.stop()
    server.stop()


def test_requests_succeed_without_redis_and_caching_resumes(own_redis_gateway, triton_stats, fresh_seed):
    """Redis killed under load: every request still succeeds (uncached); caching resumes when it returns."""
    import threading
    import time

    from samserve.devtools.local_servers import start_redis

    gw, server = own_redis_gateway
    data = png_image(220, 180, fresh_seed)
    load_images = [png_image(120, 140, fresh_seed * 100 + i) for i in range(4)]
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def load() -> None:
        with SamClient(gw.target, timeout_s=30) as lc:
            i = 0
            while not stop.is_set():
                try:
                    lc.segment(load_images[i % 4], [POINT])
                    served[0] += 1
                except grpc.RpcError as exc:
                    failures.append(exc.code().name)
                i += 1

    with SamClient(gw.target) as c:
        assert not c.embed(data).cached
        assert c.embed(data).cached
        workers = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        server.kill()  # Redis gone mid-load
        time.sleep(1.0)
        before = triton_stats.inferences("sam_encoder")
        seg = c.segment(data, [POINT])
        assert not seg.cached and len(seg.prompts[0].masks) == 3
        assert gw.metric("samserve_cache_errors_total", {"op": "get"}) >= 1
        restarted = start_redis(port=server.port)  # Redis back on the same address
        try:
            time.sleep(0.5)  # past redis_retry_after_s
            stop.set()
            for w in workers:
                w.join(30)
            assert not failures, failures
            assert served[0] > 0
            assert triton_stats.inferences("sam_encoder") > before
            assert not c.embed(data).cached  # the restarted Redis is empty
            assert c.embed(data).cached  # and caching works again
        finally:
            stop.set()
            restarted.stop()


def test_two_replicas_share_the_cache_and_run_the_encoder_once(gateway, triton_server, redis_server):
    """Replica B waits on replica A's Redis lock instead of encoding the same new image again."""
    other = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url))
    try:
        data = png_image(500, 500, 4242)
        runs = "samserve_encoder_runs_total"  # each replica's own count: no other test's Triton traffic in it
        before = gateway.metric(runs) + other.metric(runs)

        def one(target: str) -> bool:
            with SamClient(target) as c:
                return c.embed(data).cached

        with cf.ThreadPoolExecutor(4) as pool:
            cached = list(pool.map(one, [gateway.target, other.target] * 2))
        assert gateway.metric(runs) + other.metric(runs) == before + 1
        assert cached.count(False) == 1
        with SamClient(other.target) as c:
            assert c.embed(data).cached
    finally:
        other.stop()


def test_redis_with_a_password(triton_server, triton_stats, caplog):
    from samserve.devtools.local_servers import start_redis

    caplog.set_level(logging.DEBUG)
    server = start_redis(extra_args=["--requirepass", "pa55word"])
    good = GatewayThread(gateway_settings(triton_server.grpc_url, f"redis://:pa55word@127.0.0.1:{server.port}/0"))
    bad = GatewayThread(gateway_settings(triton_server.grpc_url, f"redis://:n0t-th1s-0ne@127.0.0.1:{server.port}/0"))
    try:
        data = png_image(100, 120, 4343)
        with SamClient(good.target) as c:
            assert not c.embed(data).cached
            assert c.embed(data).cached
        with SamClient(bad.target) as c:  # wrong password: served, uncached, counted
            assert not c.embed(data).cached
        assert bad.metric("samserve_cache_errors_total", {"op": "get"}) >= 1
        assert f"redis://***@127.0.0.1:{server.port}/0" in caplog.text  # the gateway says which Redis
        assert "pa55word" not in caplog.text and "n0t-th1s-0ne" not in caplog.text  # never its password
        metrics = prometheus_client.generate_latest(bad.metrics.registry).decode()
        assert "pa55word" not in metrics and "n0t-th1s-0ne" not in metrics
    finally:
        good.stop()
        bad.stop()
        server.stop()


def test_redis_over_tls(triton_server, certs):
    from samserve.devtools.local_servers import free_port, start_redis

    tls_port = free_port()
    server = start_redis(
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(certs / "server.pem"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.pem"),
            "--tls-auth-clients",
            "no",
        ]
    )
    gw = GatewayThread(
        gateway_settings(triton_server.grpc_url, f"rediss://127.0.0.1:{tls_port}/0", redis_tls_ca_file=certs / "ca.pem")
    )
    try:
        data = png_image(100, 120, 4344)
        with SamClient(gw.target) as c:
            assert not c.embed(data).cached
            assert c.embed(data).cached
        assert gw.metric("samserve_cache_errors_total", {"op": "get"}) == 0
    finally:
        gw.stop()
        server.stop()


def test_one_requests_bad_prompt_fails_no_other_request_for_the_same_new_image(gateway, stub, triton_stats):
    """Issue 25 #1, through the real stack: a Segment with a point at x=5000 on a 2000x1500 image,
    sent together with a valid Segment and an Embed of the same new bytes: only the bad one
    fails, with its own message; the others get their answers; the encoder runs once."""
    import time

    from samserve.devtools.sample_images import encode, synthetic_image
    from samserve.v1 import samserve_pb2 as pb

    data = encode(synthetic_image(1500, 2000, 4545), "JPEG", quality=95)  # a decode long enough to join
    bad = pb.SegmentRequest(image=data, prompts=[pb.Prompt(points=[pb.Point(x=5000, y=10, label=1)])])
    good = pb.SegmentRequest(image=data, prompts=[pb.Prompt(points=[pb.Point(x=900, y=700, label=1)])])
    before = triton_stats.inferences("sam_encoder")

    def call(method, request):
        try:
            return method(request, timeout=60)
        except grpc.RpcError as exc:
            return exc

    with cf.ThreadPoolExecutor(3) as pool:
        first = pool.submit(call, stub.Segment, bad)
        time.sleep(0.02)
        others = [pool.submit(call, stub.Segment, good), pool.submit(call, stub.Embed, pb.EmbedRequest(image=data))]
        bad_r, good_r, embed_r = first.result(), *(f.result() for f in others)
    assert isinstance(bad_r, grpc.RpcError) and bad_r.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompts[0].points[0].x = 5000 is outside the image" in bad_r.details()
    assert not isinstance(good_r, grpc.RpcError), good_r.details()
    assert not isinstance(embed_r, grpc.RpcError), embed_r.details()
    assert len(good_r.results[0].masks) == 3 and embed_r.original_size.width == 2000
    assert triton_stats.inferences("sam_encoder") == before + 1


def test_an_embed_is_answered_before_its_entry_is_written_and_no_replica_misses_it(
    gateway, triton_server, redis_server, served_model_id, fresh_seed
):
    """The cache write is off the response's path (issue 35): here it is held back a second.
    Meanwhile the replica that made the embedding answers from memory, another replica waits on
    the lock for the write instead of answering NOT_FOUND, and the encoder runs once."""
    writer = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url))
    store = writer.gateway.engine.embeddings.cache
    real_set = store.set

    async def slow_set(key, value, ttl_s):
        await asyncio.sleep(1.0)
        return await real_set(key, value, ttl_s)

    store.set = slow_set
    r = redis.Redis.from_url(redis_server.url)
    runs = "samserve_encoder_runs_total"
    try:
        before = gateway.metric(runs) + writer.metric(runs)
        with SamClient(writer.target) as mine, SamClient(gateway.target) as other:
            embedded = mine.embed(png_image(170, 150, fresh_seed))
            key = cache_key(served_model_id, PREPROCESS_VERSION, embedded.image_id)
            assert not embedded.cached and r.get(key) is None  # answered, not yet written
            assert mine.segment(image_id=embedded.image_id, prompts=[PromptSpec(points=[(40, 50)], labels=[1])]).cached
            seg = other.segment(image_id=embedded.image_id, prompts=[PromptSpec(points=[(40, 50)], labels=[1])])
            assert seg.cached and r.get(key) is not None  # the other replica waited for the write
        assert gateway.metric(runs) + writer.metric(runs) == before + 1
        assert decode_entry(written(r, key), served_model_id).original_size == (170, 150)
    finally:
        writer.stop()
