"""Redis access, for either of its two roles: the embedding cache (it may evict anything) and
the state that must not be lost to cache pressure (single-flight locks, kept logits): get/set
with TTL and a short lock for single-flight across replicas. Every Redis failure is counted.
Where the request can go on without Redis (an image sent as bytes is encoded, logits kept
locally) a failure is "no answer", and Redis is skipped for `retry_after_s` after one (no
per-request stall); a read only Redis can answer (an image_id) is `read`: tried even then,
retried once, and CacheUnavailable when it still fails, never taken for an absent key."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
from redis.exceptions import OutOfMemoryError, RedisError

from samserve.core.errors import CacheUnavailable, Overloaded

log = logging.getLogger(__name__)
T = TypeVar("T")

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)


class RedisCache:
    def __init__(
        self,
        url: str,
        timeout_s: float,
        retry_after_s: float,
        on_error: Callable[[str], None] = lambda op: None,
        tls_ca_file: str | None = None,
    ) -> None:
        """url: redis://[:password@]host:port/db, or rediss:// for TLS (verified against tls_ca_file)."""
        extra = {"ssl_ca_certs": tls_ca_file} if tls_ca_file and url.startswith("rediss://") else {}
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False, **extra
        )
        self._retry_after_s = retry_after_s
        self._skip_until = 0.0
        self._on_error = on_error

    async def close(self) -> None:
        await self._redis.aclose()

    def _usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, op: str, exc: Exception) -> None:
        self._on_error(op)
        if self._usable():
            log.warning("redis %s failed (%s); going on without the cache for %.1fs", op, exc, self._retry_after_s)
        self._skip_until = time.monotonic() + self._retry_after_s

    async def _call(self, op: str, fn, default):
        if not self._usable():
            self._on_error(op)
            return default
        try:
            return await fn()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(op, exc)
            return default

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", lambda: self._redis.get(key), None)

    async def read(self, key: str, what: str = "the cache entry") -> bytes | None:
        """The value, or None when Redis says the key is absent; CacheUnavailable (retryable)
        when Redis fails twice."""
        for _ in range(2):
            try:
                value = await self._redis.get(key)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._failed("get", exc)
                continue
            self._skip_until = 0.0  # it answers again
            return value
        raise CacheUnavailable(f"the cache (Redis) did not answer reading {what}; retry with backoff")

    async def strict(self, what: str, fn: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """fn(client) for state only this Redis holds (a video session's): tried twice, then
        CacheUnavailable (retryable), never taken for an absent key."""
        for _ in range(2):
            try:
                result = await fn(self._redis)
            except OutOfMemoryError:
                raise Overloaded(
                    f"the state Redis is full (its maxmemory, noeviction) {what}: close sessions, or retry once "
                    "some expire"
                ) from None
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._failed(what, exc)
                continue
            self._skip_until = 0.0
            return result
        raise CacheUnavailable(f"the state Redis did not answer {what}; retry with backoff")

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        return bool(await self._call("set", lambda: self._redis.set(key, value, ex=ttl_s), False))

    async def exists(self, key: str) -> bool:
        return bool(await self._call("exists", lambda: self._redis.exists(key), False))

    async def acquire_lock(self, key: str, ttl_s: float) -> str | None:
        """A token when this caller holds `key` (SET NX PX); None when someone else does.
        Returns a token as well when Redis is unusable: then nobody can coordinate, so go ahead."""
        token = uuid.uuid4().hex
        got = await self._call("lock", lambda: self._redis.set(key, token, nx=True, px=int(ttl_s * 1000)), "error")
        if got == "error" or got:
            return token
        return None

    async def extend_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """Renews `key` for `ttl_s` if `token` still holds it; False when it was lost (expired and
        taken by someone else). A Redis error counts as held: nobody else can take it then either."""
        got = await self._call("extend", lambda: self._redis.eval(_EXTEND, 1, key, token, int(ttl_s * 1000)), "error")
        return got == "error" or bool(got)

    async def release_lock(self, key: str, token: str) -> None:
        await self._call("unlock", lambda: self._redis.eval(_RELEASE, 1, key, token), None)

    async def eviction(self) -> tuple[int, str] | None:
        """(maxmemory, maxmemory-policy) from INFO memory; None when Redis does not say."""
        try:
            info = await self._redis.info("memory")
            return int(info["maxmemory"]), str(info["maxmemory_policy"])
        except (RedisError, OSError, asyncio.TimeoutError, KeyError, ValueError):
            return None


def evicts(eviction: tuple[int, str]) -> bool:
    """Whether Redis may drop a key before its TTL: only under a memory limit, and every policy but
    noeviction does (the volatile-* ones too: each lock and kept logits has a TTL)."""
    maxmemory, policy = eviction
    return maxmemory > 0 and policy != "noeviction"


async def layout_problem(cache: RedisCache, state: RedisCache) -> str | None:
    """What is wrong with where the state lives, or None: state must be where nothing is evicted
    (a Redis without maxmemory, or with maxmemory-policy noeviction). `state is cache`: one
    instance serves both roles."""
    found = await state.eviction()
    if found is None:
        return "the state Redis does not report its maxmemory-policy (INFO memory); make sure it is noeviction"
    if not evicts(found):
        return None
    where = "the embedding cache's Redis" if state is cache else "the state Redis"
    return (
        f"single-flight locks and kept logits live in {where}, whose maxmemory-policy {found[1]} (maxmemory "
        f"{found[0]}) can evict them under memory pressure: set SAMSERVE_STATE_REDIS_URL to a Redis with "
        "maxmemory-policy noeviction"
    )
