"""Orchestration of Embed, Segment and GenerateMasks: the core's steps, the embedding store and
Triton. No gRPC types here; transport/ translates messages and maps exceptions to status codes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from samserve.contract import ENCODER, SAM2, SERVED_FAMILIES, ModelInfo, cache_key
from samserve.core.amg_options import AmgOptions
from samserve.core.amg_records import RLE_COUNTS, MaskRecord, records_from_arrays
from samserve.core.embedding_codec import ImageEmbedding
from samserve.core.errors import BackendError, BackendUnavailable, InvalidInput, NotFound, Overloaded, SamServeError
from samserve.core.image import decode_image
from samserve.core.mask_formats import MaskFormat, encode_mask, payload_bytes
from samserve.core.postprocess import postprocess_masks, postprocess_sam2_masks, returned_logits, select_masks
from samserve.core.preprocess import PREPROCESS_VERSION
from samserve.core.prompts import Prompt, decoder_batches, validate_prompts
from samserve.gateway.backends.redis_cache import RedisCache
from samserve.gateway.backends.triton import EmbeddingNotResident, IncompatibleRepository, TritonBackend
from samserve.gateway.deadline import Deadline
from samserve.gateway.embedding_store import EmbeddingStore, ModelChanged
from samserve.gateway.logits_store import LogitsStore
from samserve.gateway.metrics import Metrics
from samserve.gateway.residency import ResidentBelief
from samserve.gateway.settings import Settings

log = logging.getLogger(__name__)
AMG_FEWER_MASKS = (
    "raise pred_iou_thresh or stability_score_thresh, ask for COCO RLE, or use GenerateMasksStream (no total limit)"
)
AMG_STREAM_ENCODE = 64  # GenerateMasksStream: records encoded per CPU job
MODELS_REREAD_S = 2.0  # an unknown model name re-reads Triton's models at most this often
MODELS_RECHECK_S = 10.0  # readiness re-reads the served models' facts (layout, ids) this often


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
    low_res_logits_ids: list[str] | None = None  # (C,) with keep_logits: kept server-side


@dataclass(frozen=True)
class ImageResult:
    image_id: str
    original_size: tuple[int, int]
    cached: bool  # no encoder run was needed for this request


@dataclass(frozen=True)
class SegmentResult(ImageResult):
    outputs: list[PromptOutput]


@dataclass(frozen=True)
class GenerateResult(ImageResult):
    records: list[MaskRecord]


def masks_at_original_size(
    low: np.ndarray,
    model: ModelInfo,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    fmt: MaskFormat,
    polygon_tolerance: float = 0.0,
) -> list:
    """(C, L, L) low-res logits -> C masks at the original size, encoded in `fmt`."""
    runs = fmt in (MaskFormat.COCO_RLE, MaskFormat.UNCOMPRESSED_RLE)  # column-major: no transposing copy
    if model.family == SAM2:
        logits = postprocess_sam2_masks(low[None], original_size, runs)[0]
    else:
        logits = postprocess_masks(low[None], model.img_size, input_size, original_size, runs)[0]
    return [encode_mask(m > model.mask_threshold, fmt, polygon_tolerance) for m in logits]


class SamEngine:
    def __init__(
        self,
        settings: Settings,
        triton: TritonBackend,
        cache: RedisCache | None,
        metrics: Metrics,
        state: RedisCache | None = None,
    ) -> None:
        """cache: the embedding cache; state: where locks and kept logits live (nothing evicted
        there), by default the cache's Redis."""
        self.settings = settings
        self.triton = triton
        self.cache = cache
        self.state = state if state is not None else cache
        self.metrics = metrics
        self._models: dict[str, ModelInfo] | None = None  # by name, read from Triton
        self._default = ""
        self._loaded_at = 0.0
        self.not_ready: str | None = "not checked yet"  # why ready() is False
        self._executor = ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="samserve-cpu")
        self.embeddings = EmbeddingStore(settings, triton, cache, metrics, self.run_cpu, self.state)
        self.logits = LogitsStore(
            self.state,
            settings.logits_ttl_s,
            settings.logits_local_bytes,
            settings.logits_request_bytes,
            settings.logits_client_bytes,
        )
        self.resident = ResidentBelief()  # what each sam_decoder holds, by cache key

    async def close(self) -> None:
        await self.embeddings.close()  # the cache writes of embeddings already answered
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.triton.close()
        if self.cache is not None:
            await self.cache.close()
        if self.state is not None and self.state is not self.cache:
            await self.state.close()

    async def _load_models(self) -> None:
        served = await self.triton.models()
        if not served:
            raise BackendUnavailable("Triton serves no sam_encoder: no model to serve")
        for m in served:
            if m.family not in SERVED_FAMILIES:
                raise BackendUnavailable(
                    f"Triton serves a {m.family!r} model ({m.name}); this gateway serves {', '.join(SERVED_FAMILIES)}"
                )
        models = {m.name: m for m in served}
        if len(models) != len(served):
            names = sorted(m.name for m in served)
            raise BackendUnavailable(f"Triton serves two models under one name: {names}; rebuild the repository")
        default = self.settings.default_model or next((m.name for m in served if m.is_default), served[0].name)
        if default not in models:  # requests naming a served model still work; the others are told
            log.error("the default model %r is not served; served: %s", default, ", ".join(sorted(models)))
        changed = self._models is None or {n: m.model_id for n, m in self._models.items()} != {
            n: m.model_id for n, m in models.items()
        }
        self._models, self._default, self._loaded_at = models, default, time.monotonic()
        for m in served if changed else ():
            log.info(
                "serving model %s as %r%s (%s, family %s, input size %d)",
                m.model_id,
                m.name,
                " (the default)" if m.name == default else "",
                m.model_type,
                m.family,
                m.img_size,
            )

    def _known(self, name: str | None) -> ModelInfo | None:
        return None if self._models is None else self._models.get(name or self._default)

    async def model(self, name: str | None = None, refresh: bool = False) -> ModelInfo:
        """The named (or the default) served model's facts, read from Triton once (and again
        after Triton returns, when a model was swapped, or when a name is not known: a model
        added since is found). NotFound for a name not served."""
        if self._models is None or refresh:
            await self._load_models()
        model = self._known(name)
        if model is None and time.monotonic() - self._loaded_at > MODELS_REREAD_S:
            await self._load_models()
            model = self._known(name)
        if model is None:
            assert self._models is not None
            served = ", ".join(sorted(self._models))
            if not name:
                raise BackendUnavailable(f"the default model {self._default!r} is not served; name one of {served}")
            raise NotFound(f"model {name!r} is not served; served: {served} (unset: the default, {self._default!r})")
        return model

    def model_label(self, name: str | None) -> str:
        """The metrics' model label: the served model's name (unset: the default's); "unknown"
        for a name not served, so a client cannot grow the label set."""
        known = self._models or {}
        name = name or self._default
        return name if name in known else "unknown"

    async def models(self) -> tuple[list[ModelInfo], str]:
        """(every served model, the default's name)."""
        await self.model()
        assert self._models is not None
        served = [dataclasses.replace(m, runtime=self.triton.runtime(m)) for m in self._models.values()]
        return sorted(served, key=lambda m: m.name), self._default

    async def run_cpu(self, fn: Callable, *args):
        """`fn(*args)` on the engine's CPU threads (decoding, masks, a transport's encoding)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    async def embedding(
        self, data: bytes, deadline: Deadline, validate: Callable | None = None, model_name: str | None = None
    ) -> tuple[str, ImageEmbedding, bool]:
        """(image_id, embedding, cached): see EmbeddingStore.embedding. When the encoder says
        another model made the embedding (Triton's model was swapped), nothing was stored: the
        model facts are re-read and the image is embedded again, under the new model's key."""
        try:
            return await self.embeddings.embedding(data, await self.model(model_name), deadline, validate)
        except ModelChanged as exc:
            log.warning("the encoder is model %s, not %s: re-reading the served models", exc.made_by, exc.believed)
            model = await self.model(model_name, refresh=True)
            return await self.embeddings.embedding(data, model, deadline, validate)

    async def embedding_by_id(self, image_id: str, deadline: Deadline, model_name: str | None = None) -> ImageEmbedding:
        return await self.embeddings.by_id(image_id, await self.model(model_name), deadline)

    # -- RPCs ---------------------------------------------------------------------------
    async def embed(
        self, data: bytes, return_embedding: bool, deadline: Deadline, model_name: str | None = None
    ) -> EmbedResult:
        deadline.remaining("starting")  # work for an expired request is not started
        image_id, entry, cached = await self.embedding(data, deadline, model_name=model_name)
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
        model_name: str | None = None,
        polygon_tolerance: float = 0.0,
        keep_logits: bool = False,
    ) -> SegmentResult:
        deadline.remaining("starting")
        s = self.settings
        first = await self.model(model_name)
        prompts = await self._kept_masks(prompts, first)

        def validate(size: tuple[int, int]) -> None:
            model = self._known(model_name) or first  # after a refresh, the model served now
            validate_prompts(prompts, size, model.low_res_size, s.max_prompts_per_request, s.max_points_per_prompt)
            self._check_output(len(prompts), multimask_output, size, fmt, return_logits, model)

        if not prompts:
            validate((1, 1))  # the empty-list error, before any work
        if image is None and not image_id:
            raise InvalidInput("image_source: set either image (encoded bytes) or image_id")
        n_masks = 3 if multimask_output else 1
        # kept logits count against the request's and the client's budgets before any work
        reservation = self.logits.reserve(len(prompts) * n_masks, first.low_res_size) if keep_logits else None
        try:
            for attempt in (1, 2):
                image_id, entry, cached = await self._image_embedding(
                    image, image_id, deadline, validate, model_name, resident=True
                )
                model = await self.model(model_name)
                validate(entry.original_size)
                try:
                    selected, entry = await self._decode(
                        prompts, entry, model, multimask_output, deadline, image_id, model_name
                    )
                    break
                except (BackendError, BackendUnavailable):
                    if not await self._may_retry(attempt, model, entry, image is not None, image_id, model_name):
                        raise
            outputs = await self._finish(selected, entry, model, n_masks, fmt, return_logits, polygon_tolerance)
            if keep_logits:
                kept = [m for low, _ in selected for m in returned_logits(low, model.family)]
                ids = await self.logits.put_many(entry.model_id, kept)
                outputs = [
                    dataclasses.replace(o, low_res_logits_ids=ids[i * n_masks : (i + 1) * n_masks])
                    for i, o in enumerate(outputs)
                ]
            return SegmentResult(image_id, entry.original_size, cached, outputs)
        except BaseException:
            if reservation is not None:
                self.logits.release(reservation)
            raise

    async def _kept_masks(self, prompts: list[Prompt], model: ModelInfo) -> list[Prompt]:
        """Prompts naming kept logits (mask_input_id) get them as mask_input; NotFound first,
        before any work, for an id expired or of another model."""
        return [
            dataclasses.replace(
                p, mask_input=await self.logits.get(model.model_id, p.mask_input_id, f"prompts[{i}].mask_input_id")
            )
            if p.mask_input_id
            else p
            for i, p in enumerate(prompts)
        ]

    async def _image_embedding(
        self,
        image: bytes | None,
        image_id: str | None,
        deadline: Deadline,
        validate: Callable,
        model_name: str | None,
        resident: bool = False,
    ) -> tuple[str, ImageEmbedding, bool]:
        """(image_id, embedding, cached) of the image's bytes, or else of its image_id. resident:
        an image_id the decoder holds gives its facts alone (embedding None), without a read."""
        if image is not None:
            return await self.embedding(image, deadline, validate, model_name)
        if resident:
            model = await self.model(model_name)
            held = self.resident.get(model, cache_key(model.model_id, PREPROCESS_VERSION, image_id))
            if held is not None:
                self.metrics.cache.labels("hit").inc()
                return image_id, held, True
        return image_id, await self.embedding_by_id(image_id, deadline, model_name), True

    async def _may_retry(
        self, attempt: int, model: ModelInfo, entry: ImageEmbedding, have_bytes: bool, image_id: str, model_name
    ) -> bool:
        """After a decoder or AMG failure: True to try once more (Triton now serves another
        model under this name and the image's bytes can be embedded again); NotFound for an
        image_id of the old model; False when the failure stands."""
        if attempt == 2 or not await self._served_model_changed(model, entry.model_id):
            return False
        if not have_bytes:
            raise NotFound(
                f"image_id {image_id} was embedded by model {entry.model_id}, which this deployment no "
                f"longer serves ({(await self.model(model_name)).model_id}); send the image bytes"
            ) from None
        return True

    async def _served_model_changed(self, model: ModelInfo, made_by: str) -> bool:
        """After a decoder or AMG failure: True (and the models' facts refreshed) when Triton now
        serves another model under this name than the one that made the embedding (its decoder
        refused it)."""
        try:
            served = await self.triton.model_info(model.triton(ENCODER))
        except SamServeError:
            return False
        if served.model_id == made_by:
            return False
        log.warning(
            "Triton now serves model %s as %r (was %s): embeddings of the old one are not used",
            served.model_id,
            model.name,
            made_by,
        )
        with contextlib.suppress(SamServeError):  # the caller's own error stays the one reported
            await self._load_models()
        return True

    def _check_output(
        self, n_prompts: int, multimask: bool, size: tuple[int, int], fmt: MaskFormat, logits: bool, model: ModelInfo
    ) -> None:
        """Refuses, before any work, a Segment whose masks cannot be made and sent within the
        limits: masks x output pixels, and the bytes of the formats whose size is known ahead."""
        h, w = size
        n = n_prompts * (3 if multimask else 1)
        pixels = n * h * w
        limit = self.settings.max_output_mask_pixels
        if pixels > limit:
            raise Overloaded(
                f"output: {n} masks of {w}x{h} = {pixels} mask pixels exceeds the limit of {limit} per request; "
                "send fewer prompts, multimask_output=false, or a smaller image"
            )
        known = n * (h * w + 7) // 8 if fmt is MaskFormat.PACKED_BITS else 0
        known += n * model.low_res_size**2 * 4 if logits else 0
        if known > self.settings.max_response_bytes:
            raise Overloaded(
                f"output: {n} masks of {w}x{h} as packed bits and logits take {known} bytes, over the response "
                f"limit of {self.settings.max_response_bytes} bytes; send fewer prompts or ask for COCO RLE"
            )

    async def _decode(
        self,
        prompts: list[Prompt],
        entry: ImageEmbedding,
        model: ModelInfo,
        multimask_output: bool,
        deadline: Deadline,
        image_id: str,
        model_name: str | None,
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], ImageEmbedding]:
        """Per prompt, in order: its selected low-res logits (C, L, L) and scores (C,); prompts of
        equal point count go to the decoder together. The decoder keeps the embedding under its
        cache key; an entry without its tensor (one the decoder holds) sends the key alone, and
        the embedding is read and sent when the decoder no longer holds it: labelled with the id
        and key of the model that made what is read now (the served model may have changed since
        the belief), never the belief's. Also returns the entry decoded."""
        batches = decoder_batches(prompts, entry.original_size, model.img_size, model.low_res_size, model.family)

        def run_all(sent: ImageEmbedding):
            key = cache_key(sent.model_id, PREPROCESS_VERSION, image_id)
            return asyncio.gather(
                *(
                    self.triton.decode(
                        model,
                        sent.embedding,
                        sent.model_id,
                        b.point_coords,
                        b.point_labels,
                        b.mask_input,
                        b.has_mask_input,
                        deadline.remaining("running the decoder"),
                        key=key,
                    )
                    for b in batches
                )
            )

        started = time.perf_counter()
        try:
            decoded = await run_all(entry)
        except EmbeddingNotResident:
            self.resident.forget(model, cache_key(entry.model_id, PREPROCESS_VERSION, image_id))
            entry = await self.embedding_by_id(image_id, deadline, model_name)
            decoded = await run_all(entry)
        self.resident.held(model, cache_key(entry.model_id, PREPROCESS_VERSION, image_id), entry)
        self.metrics.backend_latency.labels("sam_decoder").observe(time.perf_counter() - started)
        selected: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for batch, (low_res, iou) in zip(batches, decoded, strict=True):
            low, scores = select_masks(low_res, iou, multimask_output, model.family)
            for k, index in enumerate(batch.indices):
                selected[index] = (low[k], scores[k])
        return [selected[i] for i in range(len(prompts))], entry

    async def _finish(
        self,
        selected: list[tuple[np.ndarray, np.ndarray]],
        entry: ImageEmbedding,
        model: ModelInfo,
        n_masks: int,
        fmt: MaskFormat,
        return_logits: bool,
        polygon_tolerance: float,
    ) -> list[PromptOutput]:
        """Masks at the original size in `fmt`. One job per mask: upsampling and encoding release
        the GIL, so the masks of a request are finished in parallel on the executor's threads."""
        # at most cpu_workers jobs of this request in the executor's queue at a time, so one large
        # request cannot hold the executor while a small one waits behind all of its masks
        share = asyncio.Semaphore(self.settings.cpu_workers)

        async def one(low: np.ndarray, c: int) -> list:
            async with share:
                return await self.run_cpu(
                    masks_at_original_size,
                    low[c : c + 1],
                    model,
                    entry.input_size,
                    entry.original_size,
                    fmt,
                    polygon_tolerance,
                )

        encoded = await asyncio.gather(*(one(low, c) for low, _ in selected for c in range(n_masks)))
        size = sum(payload_bytes(m, fmt) for part in encoded for m in part)
        size += sum(low.nbytes for low, _ in selected) if return_logits else 0
        self._check_response(size, "send fewer prompts or a smaller image")
        return [
            PromptOutput(
                masks=[m for part in encoded[i * n_masks : (i + 1) * n_masks] for m in part],
                iou_predictions=scores.astype(np.float32),
                low_res_logits=returned_logits(low, model.family) if return_logits else None,
            )
            for i, (low, scores) in enumerate(selected)
        ]

    async def generate_masks(
        self,
        image: bytes | None,
        image_id: str | None,
        opts: AmgOptions,
        fmt: MaskFormat,
        deadline: Deadline,
        model_name: str | None = None,
        polygon_tolerance: float = 0.0,
    ) -> GenerateResult:
        """SamAutomaticMaskGenerator inside Triton: every record in one answer (within
        max_response_bytes; generate_masks_stream has no such bound)."""
        image_id, entry, cached, arrays = await self._amg_arrays(image, image_id, opts, deadline, model_name)
        if fmt is MaskFormat.PACKED_BITS:  # known before the masks are made: refuse before making them
            h, w = entry.original_size
            self._check_response(len(arrays[RLE_COUNTS]) * ((h * w + 7) // 8 + 64), AMG_FEWER_MASKS)
        records = await self.run_cpu(records_from_arrays, arrays, entry.original_size, fmt, polygon_tolerance)
        self._check_response(sum(payload_bytes(r.segmentation, fmt) + 64 for r in records), AMG_FEWER_MASKS)
        return GenerateResult(image_id, entry.original_size, cached, records)

    async def generate_masks_stream(
        self,
        image: bytes | None,
        image_id: str | None,
        opts: AmgOptions,
        fmt: MaskFormat,
        deadline: Deadline,
        model_name: str | None = None,
        polygon_tolerance: float = 0.0,
    ) -> AsyncIterator[GenerateResult]:
        """generate_masks' records in the same order, in chunks of at most
        amg_stream_chunk_bytes (a record larger than that alone): each chunk is encoded and
        sent while the next is encoded, so no answer is one giant message and the first
        records go out while the last are still made. (A record is final only after the
        NMS over all of them, inside sam_amg_generate: the chunks start when it returns.)"""
        image_id, entry, cached, arrays = await self._amg_arrays(image, image_id, opts, deadline, model_name)
        size, n = entry.original_size, len(arrays[RLE_COUNTS])
        limit = self.settings.amg_stream_chunk_bytes
        if n == 0:
            yield GenerateResult(image_id, size, cached, [])
        for start in range(0, n, AMG_STREAM_ENCODE):
            deadline.remaining("sending masks")
            part = {k: v[start : start + AMG_STREAM_ENCODE] for k, v in arrays.items()}
            records = await self.run_cpu(records_from_arrays, part, size, fmt, polygon_tolerance)
            chunk: list[MaskRecord] = []
            held = 0
            for r in records:
                nbytes = payload_bytes(r.segmentation, fmt) + 64
                if chunk and held + nbytes > limit:
                    yield GenerateResult(image_id, size, cached, chunk)
                    chunk, held = [], 0
                chunk.append(r)
                held += nbytes
            if chunk:
                yield GenerateResult(image_id, size, cached, chunk)

    async def _amg_arrays(
        self, image: bytes | None, image_id: str | None, opts: AmgOptions, deadline: Deadline, model_name: str | None
    ) -> tuple[str, ImageEmbedding, bool, dict[str, np.ndarray]]:
        """Options and the work budgets are checked before any work (those that need the
        image's size once it is decoded, before the encoder); the whole-image embedding comes
        from the cache when it is there. (image_id, embedding, cached, Triton's arrays)."""
        deadline.remaining("starting")
        opts.validate()
        s = self.settings
        first = await self.model(model_name)
        opts = opts.for_family(first.family)  # its generator's defaults; its options only
        opts.check_budget(s.amg_max_points)

        def validate(size: tuple[int, int]) -> None:
            model = self._known(model_name) or first  # after a refresh, the model served now
            opts.check_image_budget(
                size, model.img_size, s.amg_max_encoder_runs, s.amg_max_mask_pixels, model.family == SAM2
            )

        if image is None and not image_id:
            raise InvalidInput("image_source: set either image (encoded bytes) or image_id")
        rgb = None
        if opts.crop_n_layers > 0:  # crops are embedded from the pixels
            if image is None:
                raise InvalidInput(
                    f"image_id: crop_n_layers={opts.crop_n_layers} embeds crops of the pixels; send the image bytes"
                )
            rgb = await self.run_cpu(decode_image, image, s.max_image_pixels, s.min_image_side)
        for attempt in (1, 2):
            image_id, entry, cached = await self._image_embedding(image, image_id, deadline, validate, model_name)
            model = await self.model(model_name)
            validate(entry.original_size)  # a cached image was not decoded
            started = time.perf_counter()
            try:
                arrays = await self.triton.generate_masks(
                    model,
                    entry.embedding,
                    entry.model_id,
                    rgb,
                    entry.original_size,
                    opts.to_json(),
                    deadline.remaining("generating masks"),
                )
                break
            except (BackendError, BackendUnavailable):
                if not await self._may_retry(attempt, model, entry, image is not None, image_id, model_name):
                    raise
        self.metrics.backend_latency.labels("sam_amg").observe(time.perf_counter() - started)
        return image_id, entry, cached, arrays

    def _check_response(self, size: int, advice: str) -> None:
        if size > self.settings.max_response_bytes:
            raise Overloaded(
                f"output: the masks encode to {size} bytes, over the response limit of "
                f"{self.settings.max_response_bytes} bytes; {advice}"
            )

    async def ready(self) -> bool:
        """Triton's models are ready and of this gateway's repository layout. The models' facts
        are read when they first are, again when the models known are not ready (Triton may have
        come back with another set), and every MODELS_RECHECK_S (a repository replaced under a
        Triton that never went not-ready). not_ready says why it is not."""
        try:
            known = self._models is not None and await self.triton.ready(list(self._models.values()))
            if not known or time.monotonic() - self._loaded_at > MODELS_RECHECK_S:
                try:
                    await self._load_models()
                except IncompatibleRepository:
                    raise
                except Exception as exc:
                    if not known:
                        raise
                    # a periodic recheck that failed once (a slow config read): the models known
                    # are ready, so serving goes on and the next check reads them again
                    log.info("rereading Triton's models failed (%s); the models known are ready", exc)
            assert self._models is not None
            ready = await self.triton.ready(list(self._models.values()))
            self.not_ready = None if ready else "Triton's models are not ready"
        except IncompatibleRepository as exc:
            self._models = None  # every RPC is refused with the reason, not sent what Triton cannot take
            self.not_ready, ready = str(exc), False
        except Exception as exc:  # readiness never raises: it says why
            self.not_ready, ready = f"Triton: {exc}", False
        return ready
