"""Large tensors to and from Triton through system shared memory when both share a host.

An encoder input is 12 MiB of float32 at S = 1024 and a SAM 2 embedding 8 MiB of float16;
decoder logits are 1 MiB a prompt. Sent as gRPC bytes, each is serialised, copied through the
socket and parsed again (about 25 ms for the encoder input, 45 ms for a SAM 2 embedding on these
CPUs). Here the gateway writes an input into a POSIX shared-memory region (/dev/shm) that Triton
has registered and the request names the region; an output is asked for into a region, which
Triton writes and the gateway copies out. Regions are pooled by size class (sizes rounded up to
a quarter of their power of two), at most `per_size` a class and `max_bytes` in all (free regions
of other classes are dropped to make room). A request that finds none free, a Triton that cannot
register one (another host, no shared /dev/shm), a full /dev/shm (the space is reserved when a
region is made, so a write can never fault) or any failure falls back to the bytes path, so
this never fails a request. A region whose call failed or was cut short is retired, never
reused: Triton may still read or write it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import uuid
from multiprocessing import shared_memory

import numpy as np
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
MIN_BYTES = 256 << 10  # smaller tensors go as bytes: a region's bookkeeping would cost more
DEFAULT_MAX_BYTES = 256 << 20


def is_local(url: str) -> bool:
    """A Triton URL on this host (loopback)."""
    host = url.removeprefix("dns:///").rsplit(":", 1)[0]
    return host in LOOPBACK


def size_class(nbytes: int) -> int:
    """`nbytes` rounded up to a multiple of a quarter of its power of two (12 MiB stays 12 MiB,
    8.4 MB becomes 10 MiB): few classes, at most a quarter wasted."""
    step = max(1, 1 << max(0, (max(1, nbytes) - 1).bit_length() - 3))
    return -(-nbytes // step) * step


class Region:
    def __init__(self, size: int) -> None:
        self.name = f"samserve_{uuid.uuid4().hex[:16]}"  # Triton's name and the /dev/shm key
        self.size = size
        # registered with Python's resource tracker: unlinked even if this process dies hard
        self.shm = shared_memory.SharedMemory(name=self.name, create=True, size=size)
        try:  # reserve the pages now: a write to a region of a full tmpfs would be a SIGBUS
            os.posix_fallocate(self.shm._fd, 0, size)
        except OSError:
            self.close()
            raise

    @property
    def key(self) -> str:
        return "/" + self.name

    def write(self, x: np.ndarray) -> int:
        n = x.nbytes
        np.ndarray(x.shape, x.dtype, buffer=self.shm.buf)[...] = x
        return n

    def read(self, shape: list[int], dtype: np.dtype) -> np.ndarray:
        """A copy of the tensor Triton wrote at the region's start."""
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if n > self.size:
            raise ValueError(f"Triton reports an output of {n} bytes in a region of {self.size}")
        return np.ndarray(shape, dtype, buffer=self.shm.buf).copy()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.shm.close()
        with contextlib.suppress(Exception):
            self.shm.unlink()


class SharedRegions:
    """Regions registered with one Triton, pooled by size class."""

    def __init__(
        self, client, per_size: int = 4, max_bytes: int = DEFAULT_MAX_BYTES, min_bytes: int = MIN_BYTES
    ) -> None:
        self._client = client
        self.per_size = per_size
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes  # tensors smaller go as bytes
        self._free: dict[int, list[Region]] = {}
        self._count: dict[int, int] = {}
        self._bytes = 0  # of every region made and not yet dropped, in use or free
        self.disabled: str | None = None  # why the bytes path is used for everything
        self.used = 0  # tensors sent or received through a region

    async def acquire(self, nbytes: int) -> Region | None:
        """A registered region of at least `nbytes`, or None (use the bytes path)."""
        if self.disabled is not None or nbytes > self.max_bytes:
            return None
        size = size_class(nbytes)
        free = self._free.setdefault(size, [])
        if free:
            self.used += 1
            return free.pop()
        if self._count.get(size, 0) >= self.per_size or not await self._make_room(size):
            return None
        if self._count.get(size, 0) >= self.per_size:  # another first use took the last place meanwhile
            return None
        self._count[size] = self._count.get(size, 0) + 1  # before the await: the bounds hold
        self._bytes += size
        try:
            region = Region(size)
        except OSError as exc:
            self._forget(size)
            if exc.errno != errno.ENOSPC:
                self._disable(f"cannot create a shared-memory region: {exc}")
            else:  # /dev/shm is full now: bytes this time
                log.warning("no room in /dev/shm for a %d-byte region: sent as gRPC bytes", size)
            return None
        try:
            await self._client.register_system_shared_memory(region.name, region.key, size)
        except BaseException as exc:
            self._forget(size)
            region.close()
            if not isinstance(exc, InferenceServerException):
                raise
            if str(exc.status() or "").endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                return None  # Triton not reachable now: bytes this time, a region again later
            self._disable(f"Triton did not register a shared-memory region ({exc.message()})")
            return None
        self.used += 1
        return region

    async def _make_room(self, size: int) -> bool:
        """Drops free regions of other classes until `size` more fits under max_bytes."""
        while self._bytes + size > self.max_bytes:
            victims = [s for s, free in self._free.items() if free and s != size]
            if not victims:
                return False
            await self._drop(self._free[max(victims)].pop())
        return True

    def _forget(self, size: int) -> None:
        self._count[size] -= 1
        self._bytes -= size

    def release(self, region: Region) -> None:
        """A region whose call ended with its response: reused."""
        self._free.setdefault(region.size, []).append(region)

    async def retire(self, region: Region) -> None:
        """A region whose call failed or was cut short (Triton may still use it): dropped."""
        await self._drop(region)

    async def _drop(self, region: Region) -> None:
        self._forget(region.size)
        with contextlib.suppress(Exception):
            await self._client.unregister_system_shared_memory(region.name)
        region.close()

    def _disable(self, why: str) -> None:
        self.disabled = why
        log.warning("tensors go to and from Triton as gRPC bytes: %s", why)

    async def close(self) -> None:
        regions = [r for free in self._free.values() for r in free]
        self._free.clear()
        for region in regions:
            await self._drop(region)
