"""Image embeddings: from the Redis cache when there, else from the encoder, once.

Concurrent requests for one new image share one encoder run: in this process through a
future, across replicas through a short Redis lock (samserve.contract.lock_key). A damaged
cache value is a miss and gets rewritten."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from samserve.contract import ModelInfo, cache_key, lock_key
from samserve.core.embedding_codec import CorruptEntry, ImageEmbedding, decode_entry, encode_entry
from samserve.core.errors import BackendUnavailable, InvalidInput, NotFound
from samserve.core.image import decode_image, image_sha256
from samserve.core.preprocess import PREPROCESS_VERSION, preprocess
from samserve.gateway.backends.redis_cache import RedisCache
from samserve.gateway.backends.triton import TritonBackend
from samserve.gateway.deadline import Deadline
from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings

log = logging.getLogger(__name__)

RunOnCpu = Callable[..., Awaitable]


class EmbeddingStore:
    def __init__(
        self, settings: Settings, triton: TritonBackend, cache: RedisCache | None, metrics: Metrics, cpu: RunOnCpu
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.cache = cache
        self.metrics = metrics
        self._cpu = cpu
        self._inflight: dict[str, asyncio.Future] = {}

    async def _lookup(self, key: str, model: ModelInfo) -> ImageEmbedding | None:
        if self.cache is None:
            return None
        value = await self.cache.get(key)
        if value is None:
            return None
        try:
            return decode_entry(value, model.model_id)
        except CorruptEntry as exc:
            log.warning("corrupt cache entry %s (%s): treated as a miss", key, exc)
            self.metrics.cache.labels("corrupt").inc()
            return None

    async def _compute(
        self, data: bytes, key: str, model: ModelInfo, validate: Callable | None, deadline: Deadline
    ) -> ImageEmbedding:
        self.metrics.image_bytes.observe(len(data))
        rgb = await self._cpu(decode_image, data, self.settings.max_image_pixels, self.settings.min_image_side)
        original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.metrics.image_pixels.observe(original_size[0] * original_size[1])
        if validate is not None:
            validate(original_size)  # bad prompts fail before the expensive encoder run
        x, input_size = await self._cpu(preprocess, rgb, model.img_size, model.pixel_mean, model.pixel_std)
        started = time.perf_counter()
        emb = await self.triton.encode(x, deadline.remaining("running the encoder"))
        self.metrics.backend_latency.labels("sam_encoder").observe(time.perf_counter() - started)
        self.metrics.encoder_runs.inc()
        entry = ImageEmbedding(np.ascontiguousarray(emb, dtype=np.float16), original_size, input_size, model.model_id)
        if self.cache is not None:
            await self.cache.set(key, encode_entry(entry), self.settings.cache_ttl_s)
        return entry

    async def _wait_for_other_replica(self, key: str, model: ModelInfo, deadline: Deadline) -> ImageEmbedding | None:
        """Another replica holds the lock: poll the cache until it writes the entry, or until the
        lock is gone without an entry (that replica failed) or expires."""
        give_up = time.monotonic() + self.settings.lock_ttl_s
        while time.monotonic() < give_up:
            deadline.remaining("waiting for another replica's encoder run")
            await asyncio.sleep(0.05)
            entry = await self._lookup(key, model)
            if entry is not None:
                return entry
            if self.cache is None or not await self.cache.exists(lock_key(key)):
                return None
        return None

    async def _lead(
        self, data: bytes, key: str, model: ModelInfo, validate, deadline: Deadline
    ) -> tuple[ImageEmbedding, bool]:
        token = None
        if self.cache is not None:
            token = await self.cache.acquire_lock(lock_key(key), self.settings.lock_ttl_s)
            if token is None:
                entry = await self._wait_for_other_replica(key, model, deadline)
                if entry is not None:
                    return entry, True
        try:
            return await self._compute(data, key, model, validate, deadline), False
        finally:
            if token is not None and self.cache is not None:
                await self.cache.release_lock(lock_key(key), token)

    async def embedding(
        self, data: bytes, model: ModelInfo, deadline: Deadline, validate: Callable | None = None
    ) -> tuple[str, ImageEmbedding, bool]:
        """(image_id, embedding, cached). Concurrent requests for one new image share one
        encoder run (in this process through a future, across replicas through a Redis lock)."""
        image_id = await self._cpu(image_sha256, data)  # hashlib releases the GIL on large inputs
        key = cache_key(model.model_id, PREPROCESS_VERSION, image_id)
        entry = await self._lookup(key, model)
        if entry is not None:
            self.metrics.cache.labels("hit").inc()
            return image_id, entry, True
        self.metrics.cache.labels("miss").inc()
        while (pending := self._inflight.get(key)) is not None:
            try:
                return image_id, await asyncio.shield(pending), True
            except InvalidInput:
                raise  # the image itself is bad, for everyone
            except Exception:
                continue  # the leader's own failure (deadline, ...): lead ourselves
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even without followers
        self._inflight[key] = future
        try:
            entry, cached = await self._lead(data, key, model, validate, deadline)
            future.set_result(entry)
            return image_id, entry, cached
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else BackendUnavailable("request cancelled"))
            raise
        finally:
            del self._inflight[key]

    async def by_id(self, image_id: str, model: ModelInfo) -> ImageEmbedding:
        if len(image_id) != 64 or any(c not in "0123456789abcdef" for c in image_id):
            raise InvalidInput(f"image_id: {image_id!r} is not a sha256 hex digest (64 lowercase hex characters)")
        entry = await self._lookup(cache_key(model.model_id, PREPROCESS_VERSION, image_id), model)
        if entry is None:
            self.metrics.cache.labels("miss").inc()
            raise NotFound(
                f"image_id {image_id} is not in the cache (never embedded, expired, or embedded with another "
                "model); send the image bytes instead"
            )
        self.metrics.cache.labels("hit").inc()
        return entry
