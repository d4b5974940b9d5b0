"""Image embeddings: from the Redis cache when there, else from the encoder, once.

Concurrent requests for one new image share one decode and one encoder run (a "flight"): in
this process through tasks that no single request owns, across replicas through a Redis lock
(samserve.contract.lock_key) that its holder keeps alive while it works. Only what belongs to
the image is shared: a request's own prompts are validated by that request alone, between the
shared decode and the shared encode, so one client's bad prompt or cancelled call never fails
another's. A damaged cache value is a miss and gets rewritten.

Video frames (SAM 2 tracking) are embedded the same way under their own preprocessing version
(core.video_preprocess: the video predictor's frame loading, not the image predictor's
transform): as image bytes, or as frames decoded from a video file, identified by their pixels.

A new embedding is answered as soon as the encoder has made it; its cache entry is encoded and
written to Redis after that, off the response's path (2 to 25 ms, 8 MiB for SAM 2). Until it is
written, this process answers lookups of it from memory, and the cross-replica lock stays held:
another replica's lookup of that image_id waits for the write instead of missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from samserve.contract import SAM2, ModelInfo, cache_key, lock_key
from samserve.core.embedding_codec import CorruptEntry, ImageEmbedding, decode_entry, encode_entry
from samserve.core.errors import BackendUnavailable, DeadlineExceeded, InvalidInput, NotFound
from samserve.core.image import decode_image, image_sha256
from samserve.core.preprocess import PREPROCESS_VERSION, check_resizable, preprocess_for
from samserve.core.video_preprocess import VIDEO_PREPROCESS_VERSION, frame_sha256, preprocess_video_frame
from samserve.gateway.backends.redis_cache import RedisCache
from samserve.gateway.backends.triton import TritonBackend
from samserve.gateway.deadline import Deadline
from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings

log = logging.getLogger(__name__)

RunOnCpu = Callable[..., Awaitable]


class ModelChanged(BackendUnavailable):
    """The encoder is another model than the gateway believed it served (Triton's model was
    swapped without a restart): its embedding was not stored. The engine re-reads the model."""

    def __init__(self, made_by: str, believed: str) -> None:
        super().__init__(f"the served model changed from {believed} to {made_by}; retry")
        self.made_by, self.believed = made_by, believed


@dataclass
class _Flight:
    """The shared work for one new image: its decode, then (started by the first request whose
    own prompts are valid) its encoder run -> (embedding, whether another replica made it)."""

    decoded: asyncio.Task
    encoded: asyncio.Task | None = None
    waiters: int = 0


class _JoinedRunExpired(DeadlineExceeded):
    """The encoder run this request joined ended on the deadline of the request that started it."""


def _failed(task: asyncio.Task | None) -> bool:
    return task is not None and task.done() and (task.cancelled() or task.exception() is not None)


RETRIES_AFTER_A_JOINED_RUN_EXPIRED = 2


async def _wait(task: asyncio.Task, deadline: Deadline, what: str):
    """The task's result within this request's deadline; cancelling or timing out this request
    leaves the task running for the others."""
    remaining = deadline.remaining(what)
    try:
        return await asyncio.wait_for(asyncio.shield(task), remaining)
    except asyncio.TimeoutError:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception() from None
        raise DeadlineExceeded(f"deadline exceeded {what}") from None


class EmbeddingStore:
    def __init__(
        self,
        settings: Settings,
        triton: TritonBackend,
        cache: RedisCache | None,
        metrics: Metrics,
        cpu: RunOnCpu,
        locks: RedisCache | None = None,
    ) -> None:
        """cache: the entries; locks: where the single-flight locks live (a Redis that evicts
        nothing), by default the cache's."""
        self.settings = settings
        self.triton = triton
        self.cache = cache
        self.locks = locks if locks is not None else cache
        self.metrics = metrics
        self._cpu = cpu
        self._flights: dict[str, _Flight] = {}
        self._reads: dict[tuple[str, bool], asyncio.Task] = {}  # cache reads in flight
        self._writes: dict[str, tuple[ImageEmbedding, asyncio.Task]] = {}  # entries answered, being written

    async def close(self, timeout_s: float = 10.0) -> None:
        """Waits (at most timeout_s) for the cache writes of embeddings already answered."""
        writes = [task for _, task in self._writes.values()]
        if writes:
            await asyncio.wait(writes, timeout=timeout_s)

    async def _lookup(self, key: str, model: ModelInfo, strict: bool = False) -> ImageEmbedding | None:
        """The cache's entry under `key`, None when absent (or damaged). Concurrent lookups of one
        key in this process are one Redis read. strict (an image_id: only the cache has it): a
        Redis that fails is CacheUnavailable, never an absent key; else it is a miss."""
        if self.cache is None:
            return None
        if (writing := self._writes.get(key)) is not None:
            return writing[0]
        read = self._reads.get((key, strict))
        if read is None:
            read = asyncio.create_task(self._read(key, model, strict))
            self._reads[(key, strict)] = read
            read.add_done_callback(partial(self._read_ended, (key, strict)))
        return await asyncio.shield(read)  # a waiter that leaves does not end the read for the others

    def _read_ended(self, flight: tuple[str, bool], task: asyncio.Task) -> None:
        task.cancelled() or task.exception()  # retrieved even when every waiter left
        if self._reads.get(flight) is task:
            del self._reads[flight]

    async def _read(self, key: str, model: ModelInfo, strict: bool) -> ImageEmbedding | None:
        assert self.cache is not None
        value = await (self.cache.read(key, "the image's embedding") if strict else self.cache.get(key))
        if value is None:
            return None
        try:
            return decode_entry(value, model.model_id)
        except CorruptEntry as exc:
            log.warning("corrupt cache entry %s (%s): treated as a miss", key, exc)
            self.metrics.cache.labels("corrupt").inc()
            return None

    async def _decode(
        self, data: bytes | np.ndarray, model: ModelInfo, video: bool = False
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """The image's own checks (decodable, within the limits, resizable for this model); a
        frame decoded from a video file was checked when it was decoded. A video frame sent as
        an image is held to the video frames' limit (video_max_frame_pixels) too."""
        if isinstance(data, np.ndarray):
            return data, (int(data.shape[0]), int(data.shape[1]))
        self.metrics.image_bytes.observe(len(data))
        limit = self.settings.max_image_pixels
        if video:
            limit = min(limit, self.settings.video_max_frame_pixels)
        rgb = await self._cpu(decode_image, data, limit, self.settings.min_image_side)
        original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.metrics.image_pixels.observe(original_size[0] * original_size[1])
        if model.family != SAM2:  # SAM 2 resizes to a square: any aspect ratio fits
            check_resizable(*original_size, model.img_size)
        return rgb, original_size

    async def _encode(
        self,
        rgb: np.ndarray,
        original_size: tuple[int, int],
        key: str,
        model: ModelInfo,
        deadline: Deadline,
        video: bool = False,
    ) -> ImageEmbedding:
        if video:
            x = await self._cpu(preprocess_video_frame, rgb, model.img_size, model.pixel_mean, model.pixel_std)
            input_size = (model.img_size, model.img_size)
        else:
            x, input_size = await self._cpu(
                preprocess_for, model.family, rgb, model.img_size, model.pixel_mean, model.pixel_std
            )
        started = time.perf_counter()
        emb, made_by = await self.triton.encode(model, x, deadline.remaining("running the encoder"))
        self.metrics.backend_latency.labels("sam_encoder").observe(time.perf_counter() - started)
        self.metrics.encoder_runs.inc()
        if made_by != model.model_id:  # stored under the key of the model that made it, or not at all
            raise ModelChanged(made_by, model.model_id)
        return ImageEmbedding(np.ascontiguousarray(emb, dtype=np.float16), original_size, input_size, model.model_id)

    def _store(self, key: str, entry: ImageEmbedding, release: Callable[[], Awaitable[None]]) -> None:
        """Writes the entry to the cache off the response's path, then `release`s the lock;
        lookups in this process get the entry from memory until then (not after: once the lock
        is gone, Redis alone has it)."""

        async def write() -> None:
            try:
                assert self.cache is not None
                await self.cache.set(key, await self._cpu(encode_entry, entry), self.settings.cache_ttl_s)
            finally:
                if self._writes.get(key, (None, None))[1] is task:
                    del self._writes[key]
                await release()

        task = asyncio.create_task(write())
        self._writes[key] = (entry, task)
        task.add_done_callback(partial(self._write_ended, key))

    def _write_ended(self, key: str, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("writing cache entry %s failed: %s", key, task.exception())

    async def _keep_lock(self, key: str, token: str) -> None:
        """Renews the cross-replica lock every third of its TTL while its holder works."""
        assert self.locks is not None
        ttl = self.settings.lock_ttl_s
        while True:
            await asyncio.sleep(ttl / 3)
            if not await self.locks.extend_lock(lock_key(key), token, ttl):
                log.warning("single-flight lock %s was lost while its encoder run went on", lock_key(key))
                return

    async def _wait_for_other_replica(self, key: str, model: ModelInfo, deadline: Deadline) -> ImageEmbedding | None:
        """Another replica holds the lock: poll the cache until it writes the entry, or until the
        lock is gone without an entry (that replica failed). Its holder renews the lock while it
        works, so waiting is bounded by this request's deadline and by Triton's timeout."""
        give_up = time.monotonic() + self.settings.triton_timeout_s + self.settings.lock_ttl_s
        while time.monotonic() < give_up:
            deadline.remaining("waiting for another replica's encoder run")
            await asyncio.sleep(0.05)
            entry = await self._lookup(key, model)
            if entry is not None:
                return entry
            if self.cache is None or self.locks is None or not await self.locks.exists(lock_key(key)):
                # the holder may have written the entry and let the lock go since the read above
                # (it writes, then releases): read once more before running the encoder again
                return None if self.cache is None else await self._lookup(key, model)
        return None

    async def _lead(
        self,
        rgb: np.ndarray,
        original_size: tuple[int, int],
        key: str,
        model: ModelInfo,
        deadline: Deadline,
        video: bool = False,
    ) -> tuple[ImageEmbedding, bool]:
        """(embedding, made by another replica): this replica's encoder run, or another's."""
        token = None
        if self.cache is not None and self.locks is not None:
            token = await self.locks.acquire_lock(lock_key(key), self.settings.lock_ttl_s)
            if token is None:
                entry = await self._wait_for_other_replica(key, model, deadline)
                if entry is not None:
                    return entry, True
        keeper = asyncio.create_task(self._keep_lock(key, token)) if token is not None else None

        async def release() -> None:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            if token is not None and self.locks is not None:
                await self.locks.release_lock(lock_key(key), token)

        try:
            entry = await self._encode(rgb, original_size, key, model, deadline, video)
        except BaseException:
            await release()
            raise
        if self.cache is None:
            await release()
        else:  # the lock is let go once the entry is written
            self._store(key, entry, release)
        return entry, False

    def _flight(self, key: str, data: bytes | np.ndarray, model: ModelInfo, video: bool = False) -> _Flight:
        flight = self._flights.get(key)
        if flight is None or _failed(flight.encoded):  # a failed run is never joined
            flight = _Flight(asyncio.create_task(self._decode(data, model, video)))
            flight.decoded.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even unread
            self._flights[key] = flight
        return flight

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _leave(self, key: str, flight: _Flight) -> None:
        """The last request to leave a flight ends it: a decode nobody waits for is cancelled; a
        running encoder run goes on (it fills the cache) and forgets the flight when it ends."""
        flight.waiters -= 1
        if flight.waiters > 0:
            return
        if flight.encoded is None:
            flight.decoded.cancel()  # a no-op once it is done
            self._forget(key, flight)
        elif flight.encoded.done():
            self._forget(key, flight)

    def _encoder_run_ended(self, key: str, flight: _Flight, task: asyncio.Task) -> None:
        task.cancelled() or task.exception()  # retrieved even without waiters
        if flight.waiters == 0:
            self._forget(key, flight)

    async def _fly(
        self,
        key: str,
        data: bytes | np.ndarray,
        model: ModelInfo,
        deadline: Deadline,
        validate: Callable | None,
        video: bool = False,
    ) -> tuple[ImageEmbedding, bool]:
        flight = self._flight(key, data, model, video)
        flight.waiters += 1
        try:
            rgb, original_size = await _wait(flight.decoded, deadline, "decoding the image")
            if validate is not None:
                validate(original_size)  # this request's own prompts, before any encoder run
            started_here = flight.encoded is None
            if started_here:
                flight.encoded = asyncio.create_task(self._lead(rgb, original_size, key, model, deadline, video))
                flight.encoded.add_done_callback(partial(self._encoder_run_ended, key, flight))
            encoded = flight.encoded
            try:
                entry, by_other = await _wait(encoded, deadline, "waiting for the encoder")
            except DeadlineExceeded:
                if not started_here and _failed(encoded) and isinstance(encoded.exception(), DeadlineExceeded):
                    raise _JoinedRunExpired("the shared encoder run ended on another request's deadline") from None
                raise
            return entry, by_other or not started_here
        finally:
            self._leave(key, flight)

    async def embedding(
        self, data: bytes, model: ModelInfo, deadline: Deadline, validate: Callable | None = None
    ) -> tuple[str, ImageEmbedding, bool]:
        """(image_id, embedding, cached): `cached` when no encoder run was made for this request.
        `validate(original_size)` checks the request's own prompts once the image is decoded."""
        image_id = await self._cpu(image_sha256, data)  # hashlib releases the GIL on large inputs
        return await self._embedding(image_id, data, model, deadline, validate, video=False)

    async def frame_embedding(
        self, frame: bytes | np.ndarray, model: ModelInfo, deadline: Deadline
    ) -> tuple[str, ImageEmbedding, bool]:
        """A video frame's (frame_id, embedding, cached): image bytes (frame_id: their sha256) or a
        frame decoded from a video file ((H, W, 3) uint8; frame_id: core.video_preprocess.frame_sha256),
        preprocessed as the video predictor loads frames, under VIDEO_PREPROCESS_VERSION."""
        frame_id = await self._cpu(frame_sha256 if isinstance(frame, np.ndarray) else image_sha256, frame)
        return await self._embedding(frame_id, frame, model, deadline, None, video=True)

    async def _embedding(
        self,
        image_id: str,
        data: bytes | np.ndarray,
        model: ModelInfo,
        deadline: Deadline,
        validate: Callable | None,
        video: bool,
    ) -> tuple[str, ImageEmbedding, bool]:
        key = cache_key(model.model_id, VIDEO_PREPROCESS_VERSION if video else PREPROCESS_VERSION, image_id)
        entry = await self._lookup(key, model)
        if entry is not None:
            self.metrics.cache.labels("hit").inc()
            return image_id, entry, True
        self.metrics.cache.labels("miss").inc()
        for retry in range(RETRIES_AFTER_A_JOINED_RUN_EXPIRED + 1):
            try:
                entry, cached = await self._fly(key, data, model, deadline, validate, video)
                return image_id, entry, cached
            except _JoinedRunExpired:
                # the run this request joined was bound by the deadline of the request that
                # started it; with time of its own left, this request starts (or joins) another
                if retry == RETRIES_AFTER_A_JOINED_RUN_EXPIRED:
                    raise
                deadline.remaining("running the encoder")
                if (entry := await self._lookup(key, model)) is not None:
                    return image_id, entry, True
        raise AssertionError("unreachable")

    async def by_id(self, image_id: str, model: ModelInfo, deadline: Deadline, video: bool = False) -> ImageEmbedding:
        """The cached embedding of an image (video: of a video frame) by its id; NotFound when the
        cache has none."""
        if len(image_id) != 64 or any(c not in "0123456789abcdef" for c in image_id):
            raise InvalidInput(f"image_id: {image_id!r} is not a sha256 hex digest (64 lowercase hex characters)")
        key = cache_key(model.model_id, VIDEO_PREPROCESS_VERSION if video else PREPROCESS_VERSION, image_id)
        entry = await self._lookup(key, model, strict=True)
        if entry is None and self.locks is not None:
            if await self.locks.exists(lock_key(key)):
                # another replica is making it, or answered it and is writing it now: wait for it
                entry = await self._wait_for_other_replica(key, model, deadline)
            else:
                # its writer may have written it and let the lock go between the read and the
                # check (it writes, then releases): only a miss after a free lock is a miss
                entry = await self._lookup(key, model, strict=True)
        if entry is None:
            self.metrics.cache.labels("miss").inc()
            raise NotFound(
                f"image_id {image_id} is not in the cache (never embedded, expired, or embedded with another "
                "model); send the image bytes instead"
            )
        self.metrics.cache.labels("hit").inc()
        return entry
