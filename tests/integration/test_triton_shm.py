"""Encoder inputs through /dev/shm when Triton is on this host (issue 35): the same embedding as
through gRPC bytes, regions reused and gone with the gateway, and every failure falls back to
bytes without failing a request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from samserve.client import SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from samserve.gateway.backends.triton_shm import SharedInputs, is_local


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
    pool = SharedInputs(_Refusing())
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
        pool = SharedInputs(client, per_size=2)
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
