"""Encoder inputs through /dev/shm when Triton is on this host (issue 35): the same embedding as
through gRPC bytes, regions reused and gone with the gateway, and every failure falls back to
bytes without failing a request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from samserve.client import PromptSpec, SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from samserve.gateway.backends.triton_shm import SharedRegions, is_local


def _regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("samserve_*")}


def test_shared_memory_gives_the_same_embedding_and_is_cleaned_up(triton_server, fresh_seed):
    before = _regions()
    shm = GatewayThread(gateway_settings(triton_server.grpc_url, None, triton_shared_memory="on"))
    plain = GatewayThread(gateway_settings(triton_server.grpc_url, None, triton_shared_memory="off"))
    try:
        images = [png_image(200 + 10 * i, 240, fresh_seed * 10 + i) for i in range(3)]
        with SamClient(shm.target) as a, SamClient(plain.target) as b:
            for data in images:
                ea, eb = a.embed(data, return_embedding=True), b.embed(data, return_embedding=True)
                assert ea.embedding.data == eb.embedding.data and len(ea.embedding.data) > 0
        used = shm.gateway.engine.triton._shm
        assert used.used == 3 and used.disabled is None
        assert plain.gateway.engine.triton._shm is None
        assert len(_regions() - before) == 1  # one region, reused for each same-size input
    finally:
        shm.stop()
        plain.stop()
    assert _regions() - before == set()  # unlinked with the gateway


def test_loopback_urls_are_local():
    assert is_local("127.0.0.1:8001") and is_local("localhost:8001") and is_local("dns:///127.0.0.1:8001")
    assert not is_local("triton.samserve.svc:8001") and not is_local("dns:///samserve-triton:8001")


class _Refusing:
    """A Triton client that refuses to register regions (e.g. Triton on another host)."""

    async def register_system_shared_memory(self, name, key, size):
        raise InferenceServerException("Unable to open shared memory region", status="StatusCode.INTERNAL")

    async def unregister_system_shared_memory(self, name):
        return None


def test_a_triton_that_cannot_register_sends_bytes_and_leaves_nothing(caplog):
    before = _regions()
    pool = SharedRegions(_Refusing())
    assert asyncio.run(pool.acquire(1 << 20)) is None
    assert pool.disabled and "did not register" in pool.disabled
    assert asyncio.run(pool.acquire(1 << 20)) is None  # not tried again
    assert _regions() - before == set()
    assert any("gRPC bytes" in r.getMessage() for r in caplog.records)


class _Registering:
    def __init__(self) -> None:
        self.registered: set[str] = set()

    async def register_system_shared_memory(self, name, key, size):
        self.registered.add(name)

    async def unregister_system_shared_memory(self, name):
        self.registered.discard(name)


def test_the_pool_is_bounded_and_a_failed_call_retires_its_region():
    async def go():
        client = _Registering()
        pool = SharedRegions(client, per_size=2)
        a, b = await pool.acquire(4096), await pool.acquire(4096)
        assert a is not None and b is not None and await pool.acquire(4096) is None  # over the bound: bytes
        a.write(np.arange(1024, dtype=np.float32))
        pool.release(a)
        assert await pool.acquire(4096) is a  # reused
        await pool.retire(b)  # its call failed: Triton may still read it
        assert b.name not in client.registered and not Path("/dev/shm", b.name).exists()
        c = await pool.acquire(4096)
        assert c is not None and c is not b
        pool.release(a)
        pool.release(c)
        await pool.close()
        assert client.registered == set()

    before = _regions()
    asyncio.run(go())
    assert _regions() - before == set()


def test_the_suite_gateway_uses_shared_memory(gateway, client, fresh_seed):
    """The suite's gateway talks to a loopback Triton: its encoder inputs go through /dev/shm."""
    shm = gateway.gateway.engine.triton._shm
    assert shm is not None
    before = shm.used
    client.embed(png_image(150, 170, fresh_seed))
    assert shm.used == before + 1


def test_regions_triton_lost_fall_back_to_bytes_and_are_made_again(triton_server, fresh_seed):
    """Triton restarted (simulated: every region unregistered): the next Embed still succeeds,
    as bytes, and the one after goes through a new region."""
    import tritonclient.grpc as tc

    gw = GatewayThread(gateway_settings(triton_server.grpc_url, None, triton_shared_memory="on"))
    try:
        with SamClient(gw.target) as c:
            first = c.embed(png_image(180, 200, fresh_seed), return_embedding=True)
            tc.InferenceServerClient(triton_server.grpc_url).unregister_system_shared_memory()  # all of them
            lost = c.embed(png_image(180, 200, fresh_seed + 1), return_embedding=True)
            again = c.embed(png_image(180, 200, fresh_seed + 2), return_embedding=True)
        assert len(first.embedding.data) == len(lost.embedding.data) == len(again.embedding.data) > 0
        shm = gw.gateway.engine.triton._shm
        assert shm.disabled is None and shm.used == 3
    finally:
        gw.stop()


def test_outputs_come_back_through_shared_memory_unchanged(triton_server, fresh_seed):
    """Embeddings and decoder logits written by Triton into regions equal what gRPC bytes carry,
    the small outputs beside them (model id, scores, runtime) are still read right, and the
    output regions are reused."""
    shm = GatewayThread(gateway_settings(triton_server.grpc_url, None, triton_shared_memory="on"))
    plain = GatewayThread(gateway_settings(triton_server.grpc_url, None, triton_shared_memory="off"))
    pool = shm.gateway.engine.triton._shm
    pool.min_bytes = 16 << 10  # the test model's tensors are small: every one of them through a region
    try:
        image = png_image(220, 260, fresh_seed)
        prompts = [PromptSpec(points=[(20.0 + 27 * i, 30.0 + 19 * i)], labels=[1]) for i in range(8)]
        with SamClient(shm.target) as a, SamClient(plain.target) as b:
            for _ in range(3):  # the first call learns the embedding's size; the others use regions
                before = pool.used
                ea, eb = a.embed(image, return_embedding=True), b.embed(image, return_embedding=True)
                assert ea.embedding.data == eb.embedding.data and len(ea.embedding.data) > 0
            assert pool.used == before + 2  # input and output
            before = pool.used
            sa = a.segment(image, prompts=prompts, return_low_res_logits=True)  # no cache: encoded again
            sb = b.segment(image, prompts=prompts, return_low_res_logits=True)
        assert pool.used == before + 5  # encoder input and output; the decoder's embedding, mask input, logits
        logits = np.stack([p.low_res_logits for p in sa.prompts])
        assert logits.std() > 0.01  # logits and masks that vary: the comparison says something
        assert any(0 < m.mean() < 1 for p in sa.prompts for m in p.masks)
        for pa, pb_ in zip(sa.prompts, sb.prompts, strict=True):
            np.testing.assert_array_equal(pa.low_res_logits, pb_.low_res_logits)
            np.testing.assert_array_equal(pa.iou_predictions, pb_.iou_predictions)
            for ma, mb in zip(pa.masks, pb_.masks, strict=True):
                np.testing.assert_array_equal(ma, mb)
        runtime = shm.gateway.engine.triton.runtime(shm.call(shm.gateway.engine.model()))
        assert runtime.startswith("encoder openvino") and "; decoder " in runtime and "not yet run" not in runtime
        assert pool.disabled is None
    finally:
        shm.stop()
        plain.stop()


def test_the_pool_keeps_to_its_byte_budget_and_a_full_dev_shm_sends_bytes(monkeypatch, caplog):
    import errno
    import os

    from samserve.gateway.backends.triton_shm import size_class

    async def go():
        client = _Registering()
        pool = SharedRegions(client, max_bytes=3 << 20)
        a, b = await pool.acquire(1 << 20), await pool.acquire(1 << 20)
        pool.release(a)
        pool.release(b)
        c = await pool.acquire(2 << 20)  # room made by dropping one free region of another size
        assert c is not None and client.registered == {a.name, c.name}
        assert await pool.acquire(2 << 20) is None  # nothing free to drop: bytes
        assert await pool.acquire(4 << 20) is None  # over the budget by itself
        monkeypatch.setattr(os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        assert await pool.acquire(300 << 10) is None and pool.disabled is None  # full now, tried again later
        pool.release(c)
        await pool.close()
        assert client.registered == set()

    before = _regions()
    asyncio.run(go())
    assert _regions() - before == set()
    assert any("no room in /dev/shm" in r.getMessage() for r in caplog.records)
    assert size_class(12 << 20) == 12 << 20 and size_class(8_400_000) == 10 << 20 and size_class(1) == 1
