"""Encoder inputs through system shared memory when the gateway and Triton share a host.

An encoder input is 12 MiB of float32 at S = 1024; sent as gRPC bytes it is serialised, copied
through the socket and parsed again (about 25 ms a new image on these CPUs). Here the gateway
writes it into a POSIX shared-memory region (/dev/shm) that Triton has registered, and the
request names the region instead. A pool of regions a size: a request that finds none free, a
Triton that cannot register one (another host, no shared /dev/shm) or any failure falls back to
the bytes path, so this never fails a request. A region whose call failed or was cut short is
retired, never reused: Triton may still read it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from multiprocessing import shared_memory

import numpy as np
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def is_local(url: str) -> bool:
    """A Triton URL on this host (loopback)."""
    host = url.removeprefix("dns:///").rsplit(":", 1)[0]
    return host in LOOPBACK


class Region:
    def __init__(self, size: int) -> None:
        self.name = f"samserve_{uuid.uuid4().hex[:16]}"  # Triton's name and the /dev/shm key
        self.size = size
        # registered with Python's resource tracker: unlinked even if this process dies hard
        self.shm = shared_memory.SharedMemory(name=self.name, create=True, size=size)

    @property
    def key(self) -> str:
        return "/" + self.name

    def write(self, x: np.ndarray) -> int:
        n = x.nbytes
        np.ndarray(x.shape, x.dtype, buffer=self.shm.buf)[...] = x
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.shm.close()
        with contextlib.suppress(Exception):
            self.shm.unlink()


class SharedInputs:
    """Regions registered with one Triton, pooled by size (at most `per_size` of each)."""

    def __init__(self, client, per_size: int = 4) -> None:
        self._client = client
        self.per_size = per_size
        self._free: dict[int, list[Region]] = {}
        self._count: dict[int, int] = {}
        self.disabled: str | None = None  # why the bytes path is used for everything
        self.used = 0  # inputs sent through a region

    async def acquire(self, nbytes: int) -> Region | None:
        """A registered region of `nbytes`, or None (use the bytes path)."""
        if self.disabled is not None:
            return None
        free = self._free.setdefault(nbytes, [])
        if free:
            self.used += 1
            return free.pop()
        if self._count.get(nbytes, 0) >= self.per_size:
            return None
        self._count[nbytes] = self._count.get(nbytes, 0) + 1  # before the await: the bound holds
        try:
            region = Region(nbytes)
        except OSError as exc:
            self._count[nbytes] -= 1
            self._disable(f"cannot create a shared-memory region: {exc}")
            return None
        try:
            await self._client.register_system_shared_memory(region.name, region.key, nbytes)
        except BaseException as exc:
            self._count[nbytes] -= 1
            region.close()
            if not isinstance(exc, InferenceServerException):
                raise
            if str(exc.status() or "").endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                return None  # Triton not reachable now: bytes this time, a region again later
            self._disable(f"Triton did not register a shared-memory region ({exc.message()})")
            return None
        self.used += 1
        return region

    def release(self, region: Region) -> None:
        """A region whose call ended with its response: reused."""
        self._free.setdefault(region.size, []).append(region)

    async def retire(self, region: Region) -> None:
        """A region whose call failed or was cut short (Triton may still read it): dropped."""
        self._count[region.size] -= 1
        with contextlib.suppress(Exception):
            await self._client.unregister_system_shared_memory(region.name)
        region.close()

    def _disable(self, why: str) -> None:
        self.disabled = why
        log.warning("encoder inputs go to Triton as gRPC bytes: %s", why)

    async def close(self) -> None:
        regions = [r for free in self._free.values() for r in free]
        self._free.clear()
        for region in regions:
            with contextlib.suppress(Exception):
                await self._client.unregister_system_shared_memory(region.name)
            region.close()
