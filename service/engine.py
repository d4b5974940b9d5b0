"""Orchestration of Embed and Segment: pipeline steps, the embedding cache and Triton.
No gRPC types here; transport/ translates messages and maps exceptions to status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from samserve.backends.cache import RedisCache
from samserve.backends.triton import TritonBackend
from samserve.errors import BackendUnavailable, DeadlineExceeded, InvalidInput, NotFound
from samserve.metrics import Metrics
from samserve.pipeline.amg_options import AmgOptions
from samserve.pipeline.amg_records import MaskRecord, records_from_arrays
from samserve.pipeline.embedding_codec import (
    CorruptEntry,
    ImageEmbedding,
    cache_key,
    decode_entry,
    encode_entry,
)
from samserve.pipeline.image import decode_image, image_sha256
from samserve.pipeline.mask_formats import MaskFormat, encode_mask
from samserve.pipeline.model_info import ModelInfo
from samserve.pipeline.postprocess import postprocess_masks, select_masks
from samserve.pipeline.preprocess import PREPROCESS_VERSION, preprocess
from samserve.pipeline.prompts import Prompt, decoder_batches, validate_prompts
from samserve.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedResult:
    image_id: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    cached: bool  # no encoder run was needed for this request
    model_id: str
    embedding: np.ndarray | None  # (1, 256, e, e) float16 when requested


@dataclass(frozen=True)
class PromptOutput:
    masks: list  # per mask: the MaskFormat's payload (dict, counts list or bytes)
    iou_predictions: np.ndarray  # (C,) float32
    low_res_logits: np.ndarray | None  # (C, L, L) float32


@dataclass(frozen=True)
class SegmentResult:
    image_id: str
    original_size: tuple[int, int]
    cached: bool
    outputs: list[PromptOutput]


@dataclass(frozen=True)
class GenerateResult:
    image_id: str
    original_size: tuple[int, int]
    cached: bool
    records: list[MaskRecord]


class Deadline:
    """The client's deadline as an absolute monotonic time (None = no deadline)."""

    def __init__(self, remaining_s: float | None) -> None:
        self.at = None if remaining_s is None else time.monotonic() + remaining_s

    def remaining(self, what: str) -> float | None:
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"deadline exceeded before {what}")
        return left


def masks_at_original_size(
    low: np.ndarray, model: ModelInfo, input_size: tuple[int, int], original_size: tuple[int, int], fmt: MaskFormat
) -> list:
    """(C, L, L) low-res logits -> C masks at the original size, encoded in `fmt`."""
    logits = postprocess_masks(low[None], model.img_size, input_size, original_size)[0]
    return [encode_mask(m > model.mask_threshold, fmt) for m in logits]


class SamEngine:
    def __init__(
        self,
        settings: Settings,
        triton: TritonBackend,
        cache: RedisCache | None,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.cache = cache
        self.metrics = metrics
        self._model: ModelInfo | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._executor = ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="samserve-cpu")

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.triton.close()
        if self.cache is not None:
            await self.cache.close()

    async def model(self, refresh: bool = False) -> ModelInfo:
        """The served model's facts, read from Triton once (and again after Triton returns)."""
        if self._model is None or refresh:
            self._model = await self.triton.model_info()
            log.info(
                "serving model %s (%s, input size %d)",
                self._model.model_id,
                self._model.model_type,
                self._model.img_size,
            )
        return self._model

    async def _cpu(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    # -- embedding cache ----------------------------------------------------------------
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
            if self.cache is None or not await self.cache.exists(key + ":lock"):
                return None
        return None

    async def _lead(
        self, data: bytes, key: str, model: ModelInfo, validate, deadline: Deadline
    ) -> tuple[ImageEmbedding, bool]:
        token = None
        if self.cache is not None:
            token = await self.cache.acquire_lock(key + ":lock", self.settings.lock_ttl_s)
            if token is None:
                entry = await self._wait_for_other_replica(key, model, deadline)
                if entry is not None:
                    return entry, True
        try:
            return await self._compute(data, key, model, validate, deadline), False
        finally:
            if token is not None and self.cache is not None:
                await self.cache.release_lock(key + ":lock", token)

    async def embedding(
        self, data: bytes, deadline: Deadline, validate: Callable | None = None
    ) -> tuple[str, ImageEmbedding, bool]:
        """(image_id, embedding, cached). Concurrent requests for one new image share one
        encoder run (in this process through a future, across replicas through a Redis lock)."""
        model = await self.model()
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

    async def embedding_by_id(self, image_id: str) -> ImageEmbedding:
        model = await self.model()
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

    # -- RPCs ---------------------------------------------------------------------------
    async def embed(self, data: bytes, return_embedding: bool, deadline: Deadline) -> EmbedResult:
        deadline.remaining("starting")  # work for an expired request is not started
        image_id, entry, cached = await self.embedding(data, deadline)
        return EmbedResult(
            image_id,
            entry.original_size,
            entry.input_size,
            cached,
            entry.model_id,
            entry.embedding if return_embedding else None,
        )

    async def segment(
        self,
        image: bytes | None,
        image_id: str | None,
        prompts: list[Prompt],
        multimask_output: bool,
        fmt: MaskFormat,
        return_logits: bool,
        deadline: Deadline,
    ) -> SegmentResult:
        deadline.remaining("starting")
        model = await self.model()
        s = self.settings

        def validate(size: tuple[int, int]) -> None:
            validate_prompts(prompts, size, model.low_res_size, s.max_prompts_per_request, s.max_points_per_prompt)

        if not prompts:
            validate((1, 1))  # the empty-list error, before any work
        if image is not None:
            image_id, entry, cached = await self.embedding(image, deadline, validate)
        elif image_id:
            entry, cached = await self.embedding_by_id(image_id), True
        else:
            raise InvalidInput("image_source: set either image (encoded bytes) or image_id")
        validate(entry.original_size)
        batches = decoder_batches(prompts, entry.original_size, model.img_size, model.low_res_size)
        started = time.perf_counter()
        decoded = await asyncio.gather(
            *(
                self.triton.decode(
                    entry.embedding,
                    b.point_coords,
                    b.point_labels,
                    b.mask_input,
                    b.has_mask_input,
                    deadline.remaining("running the decoder"),
                )
                for b in batches
            )
        )
        self.metrics.backend_latency.labels("sam_decoder").observe(time.perf_counter() - started)
        selected: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # prompt -> ((C, L, L), (C,))
        for batch, (low_res, iou) in zip(batches, decoded, strict=True):
            low, scores = select_masks(low_res, iou, multimask_output)
            for k, index in enumerate(batch.indices):
                selected[index] = (low[k], scores[k])
        n_masks = 3 if multimask_output else 1
        # one job per mask: upsampling and encoding release the GIL, so the masks of a
        # request are finished in parallel on the executor's threads
        encoded = await asyncio.gather(
            *(
                self._cpu(
                    masks_at_original_size, selected[i][0][c : c + 1], model, entry.input_size, entry.original_size, fmt
                )
                for i in range(len(prompts))
                for c in range(n_masks)
            )
        )
        outputs = [
            PromptOutput(
                masks=[m for part in encoded[i * n_masks : (i + 1) * n_masks] for m in part],
                iou_predictions=selected[i][1].astype(np.float32),
                low_res_logits=selected[i][0].copy() if return_logits else None,
            )
            for i in range(len(prompts))
        ]
        return SegmentResult(image_id, entry.original_size, cached, outputs)

    async def generate_masks(
        self, image: bytes, opts: AmgOptions, fmt: MaskFormat, deadline: Deadline
    ) -> GenerateResult:
        """SamAutomaticMaskGenerator inside Triton. Options and the work budget are checked
        before any work; the whole-image embedding comes from the cache when it is there."""
        deadline.remaining("starting")
        opts.validate()
        opts.check_budget(self.settings.amg_max_points)
        image_id, entry, cached = await self.embedding(image, deadline)
        rgb = None
        if opts.crop_n_layers > 0:  # crops are embedded from the pixels
            rgb = await self._cpu(decode_image, image, self.settings.max_image_pixels, self.settings.min_image_side)
        started = time.perf_counter()
        arrays = await self.triton.generate_masks(
            entry.embedding, rgb, entry.original_size, opts.to_json(), deadline.remaining("generating masks")
        )
        self.metrics.backend_latency.labels("sam_amg").observe(time.perf_counter() - started)
        records = await self._cpu(records_from_arrays, arrays, entry.original_size, fmt)
        return GenerateResult(image_id, entry.original_size, cached, records)

    async def ready(self) -> bool:
        """Triton's models are ready (the model info is re-read when they come back)."""
        ok = await self.triton.ready()
        if ok and self._model is None:
            with contextlib.suppress(Exception):
                await self.model()
        return ok and self._model is not None
