"""Async client for the sam_encoder / sam_decoder models in Triton (and the video tracker's)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, triton_to_np_dtype

from samserve.contract import (
    AMG_GENERATE,
    AMG_IMAGE,
    AMG_OPTIONS,
    AMG_ORIGINAL_SIZE,
    AMG_OUTPUTS,
    DECODER,
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    EMBEDDING_KEY,
    EMBEDDINGS,
    ENCODER,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    MODEL_ID,
    NOT_RESIDENT,
    ONNXRUNTIME,
    PREFIX_SEPARATOR,
    RESIDENT_BYTES,
    RUNTIME,
    TRACKER_IO,
    ModelInfo,
    config_parameters,
    layout_mismatch,
    model_id_of,
    model_id_tensor,
)
from samserve.core.errors import BackendError, BackendUnavailable, DeadlineExceeded, OverCapacity, SamServeError
from samserve.gateway.backends.triton_shm import Region, SharedRegions
from samserve.gateway.request_id import REQUEST_ID

log = logging.getLogger(__name__)
DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int64): "INT64",
    np.dtype(np.object_): "BYTES",
}


# Triton's gRPC status -> the project's exception: retryable unavailability stays UNAVAILABLE,
# everything else is precise. The client never sees Triton's text (pod addresses, ONNX node
# names); the log has it.
_RETRYABLE = ("UNAVAILABLE", "NOT_FOUND", "UNIMPLEMENTED", "CANCELLED")  # down, model (re)loading


class IncompatibleRepository(BackendUnavailable):
    """Triton serves a model repository of another layout than this gateway speaks."""


class EmbeddingNotResident(BackendError):
    """sam_decoder does not hold the embedding a request named by key alone: send it again with
    the embedding (the engine does, once)."""


def _translate(exc: InferenceServerException, what: str) -> SamServeError:
    status = str(exc.status() or "").removeprefix("StatusCode.")
    text = str(exc.message() or exc)
    if NOT_RESIDENT in text:
        log.info("request %s: Triton %s: the embedding is not kept there; sending it", REQUEST_ID.get(), what)
        return EmbeddingNotResident(f"Triton {what} does not hold the embedding")
    log.warning("request %s: Triton %s: %s: %s", REQUEST_ID.get(), what, status or "no status", text)
    if status == "DEADLINE_EXCEEDED" or "Deadline Exceeded" in text:
        return DeadlineExceeded(f"deadline exceeded while Triton ran {what}")
    if status in _RETRYABLE or "failed to connect" in text.lower() or not status:
        return BackendUnavailable(f"Triton is unavailable for {what}; retry with backoff")
    if status == "RESOURCE_EXHAUSTED":
        return OverCapacity(f"Triton is over capacity for {what}; retry with backoff")
    return BackendError(f"internal error while Triton ran {what}")


def resident_budget(decoder_config: dict) -> int:
    """The bytes of embeddings a decoder holds by key that a click can count on: its
    resident_embedding_bytes; 0 when it has several instances (each holds its own, and a click
    reaches any of them: a key sent alone would miss as often as not)."""
    try:
        budget = int(config_parameters(decoder_config).get(RESIDENT_BYTES, "0"))
    except ValueError:
        return 0
    instances = sum(int(g.get("count", 1)) for g in decoder_config.get("instance_group", [])) or 1
    return max(0, budget) if instances == 1 else 0


class TritonBackend:
    def __init__(self, url: str, timeout_s: float, shared_memory: bool = False) -> None:
        self.url = url
        self.timeout_s = timeout_s
        # reconnect fast after Triton restarts (gRPC's default backoff grows to two minutes);
        # dns:/// targets (a headless Service) get round-robin over every resolved Triton pod
        channel_args = [
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.max_send_message_length", 1 << 30),
            ("grpc.max_receive_message_length", 1 << 30),
            ("grpc.keepalive_time_ms", 30000),
        ]
        if url.startswith("dns:"):
            channel_args.append(("grpc.lb_policy_name", "round_robin"))
        self._client = triton.InferenceServerClient(url, channel_args=channel_args)
        self._runtimes: dict[str, str] = {}  # Triton model -> what its last response said runs it
        # large inputs and outputs through /dev/shm when Triton shares this host (triton_shm)
        self._shm = SharedRegions(self._client) if shared_memory else None
        self._output_bytes: dict[tuple[str, str], int] = {}  # (Triton model, output) -> bytes last seen

    def runtime(self, model: ModelInfo) -> str:
        """What runs `model`'s encoder and decoder, as their last responses said, else as
        configured (the runtime is chosen when Triton loads a model: OpenVINO may fall back)."""
        seen = [(role, self._runtimes.get(model.triton(role))) for role in (ENCODER, DECODER)]
        if any(r for _, r in seen):
            return "; ".join(f"{role.removeprefix('sam_')} {r or 'not yet run'}" for role, r in seen)
        configured = model.runtime or ("tensorrt" if "-gpu-" in model.model_id else ONNXRUNTIME)
        return f"{configured} {model.precision} (as configured; not yet run)"

    async def close(self) -> None:
        if self._shm is not None:
            await self._shm.close()
        await self._client.close()

    def _timeout(self, deadline_s: float | None) -> float:
        return self.timeout_s if deadline_s is None else max(0.001, min(self.timeout_s, deadline_s))

    async def ready(self, models: list[ModelInfo]) -> bool:
        """Every model's encoder and decoder are ready."""
        try:
            for m in models:
                for role in (ENCODER, DECODER):
                    if not await self._client.is_model_ready(m.triton(role), client_timeout=2):
                        return False
            return bool(models)
        except InferenceServerException:
            return False

    async def encoders(self) -> list[str]:
        """The Triton names of every served model's encoder (sam_encoder, or <name>__sam_encoder)."""
        try:
            index = await self._client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, "reading the model repository index") from None
        names = [m["name"] for m in index.get("models", [])]
        return sorted(n for n in names if n == ENCODER or n.endswith(PREFIX_SEPARATOR + ENCODER))

    async def _config(self, model: str) -> dict:
        try:
            config = await self._client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, f"reading {model}'s config") from None
        return config["config"]

    async def model_info(self, encoder: str = ENCODER) -> ModelInfo:
        """What the model whose encoder is `encoder` says about itself (its config parameters),
        with the residency budget of its decoder as the decoder's own config states it."""
        encoder_config = await self._config(encoder)
        params = config_parameters(encoder_config)
        if (mismatch := layout_mismatch(params, encoder)) is not None:
            raise IncompatibleRepository(mismatch)
        try:
            info = ModelInfo.from_parameters(params)
        except (KeyError, ValueError) as exc:
            raise BackendUnavailable(f"{encoder}'s config: {exc}") from None
        decoder = await self._config(info.triton(DECODER))
        if (mismatch := layout_mismatch(config_parameters(decoder), info.triton(DECODER))) is not None:
            raise IncompatibleRepository(mismatch)
        reports = all(RUNTIME in {o["name"] for o in c.get("output", [])} for c in (encoder_config, decoder))
        return dataclasses.replace(info, resident_bytes=resident_budget(decoder), reports_runtime=reports)

    async def models(self) -> list[ModelInfo]:
        """Every model the repository serves."""
        return [await self.model_info(e) for e in await self.encoders()]

    async def _infer(
        self,
        model: str,
        arrays: dict[str, np.ndarray],
        outputs: list[str],
        deadline_s: float | None,
        output_bytes: dict[str, int] | None = None,
    ) -> list[np.ndarray]:
        """The outputs of one call. With shared memory (Triton on this host), inputs of at least
        the pool's min_bytes go through regions, and so do outputs whose size is known: from
        `output_bytes`, else the size this model's output had last time. A region Triton no
        longer knows (it restarted) or one too small (a model reloaded with larger outputs) is
        dropped and the call made again with bytes."""
        if self._shm is None or self._shm.disabled is not None:
            return await self._call(model, arrays, {}, outputs, deadline_s)
        regions: dict[str, Region] = {}
        try:
            for name, arr in arrays.items():
                if arr.nbytes >= self._shm.min_bytes and (region := await self._shm.acquire(arr.nbytes)) is not None:
                    regions[name] = region
                    region.write(arr)
            for o in outputs:
                size = (output_bytes or {}).get(o) or self._output_bytes.get((model, o), 0)
                if size >= self._shm.min_bytes and (region := await self._shm.acquire(size)) is not None:
                    regions[o] = region
            result = await self._call(model, arrays, regions, outputs, deadline_s, raw=True)
        except InferenceServerException as exc:
            for region in regions.values():
                await self._shm.retire(region)  # Triton may still use it: never reused
            if not regions or "shared memory" not in str(exc.message() or exc).lower():
                raise _translate(exc, model) from None
            log.warning("Triton refused shared-memory regions for %s (%s): sent as bytes", model, exc.message())
            self._output_bytes = {k: v for k, v in self._output_bytes.items() if k[0] != model}
            return await self._call(model, arrays, {}, outputs, deadline_s)
        except BaseException:
            for region in regions.values():
                await self._shm.retire(region)
            raise
        for region in regions.values():
            self._shm.release(region)
        return result

    async def _call(
        self,
        model: str,
        arrays: dict[str, np.ndarray],
        regions: dict[str, Region],
        outputs: list[str],
        deadline_s: float | None,
        raw: bool = False,
    ) -> list[np.ndarray]:
        """One call; the inputs and outputs named in `regions` through them (the inputs already
        written there). raw: Triton's own exception, untranslated."""
        inputs = []
        for name, arr in arrays.items():
            inp = InferInput(name, list(arr.shape), DTYPES[arr.dtype])
            if name in regions:
                inp.set_shared_memory(regions[name].name, arr.nbytes)
            else:
                inp.set_data_from_numpy(np.ascontiguousarray(arr))
            inputs.append(inp)
        requested = []
        for o in outputs:
            out = InferRequestedOutput(o)
            if o in regions:
                out.set_shared_memory(regions[o].name, regions[o].size)
            requested.append(out)
        try:
            result = await self._client.infer(
                model, inputs, outputs=requested, client_timeout=self._timeout(deadline_s)
            )
        except InferenceServerException as exc:
            if raw:
                raise
            raise _translate(exc, model) from None
        return self._outputs(model, result.get_response(), outputs, regions)

    def _outputs(self, model: str, response, outputs: list[str], regions: dict[str, Region]) -> list[np.ndarray]:
        """The named outputs of a response: those in regions copied out of them, the rest from
        its raw contents (Triton 2.51 leaves an empty entry there for an output in a region;
        without one, the entries are those of the other outputs, in order)."""
        contents = list(response.raw_output_contents)
        aligned = len(contents) == len(response.outputs)
        rest = iter(contents)
        by_name = {}
        for i, out in enumerate(response.outputs):
            shape, dtype = list(out.shape), out.datatype
            if out.name in regions:
                by_name[out.name] = regions[out.name].read(shape, triton_to_np_dtype(dtype))
                continue
            data = contents[i] if aligned else next(rest)
            if dtype == "BYTES":
                arr = deserialize_bytes_tensor(data)
            else:
                arr = np.frombuffer(data, dtype=triton_to_np_dtype(dtype))
                if self._shm is not None and len(data) >= self._shm.min_bytes:  # next time, into a region
                    self._output_bytes[(model, out.name)] = len(data)
            by_name[out.name] = arr.reshape(shape)
        return [by_name[o] for o in outputs]

    async def encode(
        self, model: ModelInfo, images: np.ndarray, deadline_s: float | None = None
    ) -> tuple[np.ndarray, str]:
        """(1, 3, S, S) float32 -> ((1, 256, S/16, S/16) float16, the id of the model that made it)."""
        outputs = [*ENCODER_OUTPUTS, RUNTIME] if model.reports_runtime else list(ENCODER_OUTPUTS)
        name = model.triton(ENCODER)
        emb, made_by, *runtime = await self._infer(name, {ENCODER_INPUT: images}, outputs, deadline_s)
        self._note_runtime(model.triton(ENCODER), runtime)
        return emb, model_id_of(made_by)

    async def decode(
        self,
        model: ModelInfo,
        image_embeddings: np.ndarray | None,
        model_id: str,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
        deadline_s: float | None = None,
        key: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One image's embedding (1, C, e, e) float16, made by `model_id` (the decoder refuses
        another model's), and B prompts -> ((B, 4, L, L), (B, 4)). `key`: the embedding's cache
        key, under which the decoder keeps it; with image_embeddings None only the key is sent
        (EmbeddingNotResident when the decoder does not hold it)."""
        per_prompt = (point_coords, point_labels, mask_input, has_mask_input)  # + the request's batch dim
        inputs = dict(zip(DECODER_INPUTS[1:], (x[None] for x in per_prompt), strict=True))
        if image_embeddings is not None:
            inputs[DECODER_INPUTS[0]] = image_embeddings
        if key is not None:
            inputs[EMBEDDING_KEY] = model_id_tensor(key)
        inputs[MODEL_ID] = model_id_tensor(model_id)
        outputs = [*DECODER_OUTPUTS, RUNTIME] if model.reports_runtime else list(DECODER_OUTPUTS)
        low = model.low_res_size
        sizes = {DECODER_OUTPUTS[0]: len(point_coords) * 4 * low * low * 4}  # (B, 4, L, L) float32
        masks, iou, *runtime = await self._infer(model.triton(DECODER), inputs, outputs, deadline_s, sizes)
        self._note_runtime(model.triton(DECODER), runtime)
        return masks[0], iou[0]

    async def track(
        self,
        model: ModelInfo,
        role: str,
        arrays: dict[str, np.ndarray],
        deadline_s: float | None = None,
        output_bytes: dict[str, int] | None = None,
    ) -> list[np.ndarray]:
        """One call of a video tracker model (contract.TRACKER_MODELS; its tensors TRACKER_IO),
        made for `model` (the tracker model refuses another's): its outputs, in order.
        output_bytes: the outputs' sizes, which change with the object count (shared memory)."""
        inputs = {**arrays, MODEL_ID: model_id_tensor(model.model_id).reshape(1)}  # no batch axis (max_batch_size 0)
        return await self._infer(model.triton(role), inputs, list(TRACKER_IO[role][1]), deadline_s, output_bytes)

    def _note_runtime(self, model: str, runtime: list[np.ndarray]) -> None:
        if runtime:
            self._runtimes[model] = model_id_of(runtime[0])

    async def generate_masks(
        self,
        model: ModelInfo,
        image_embeddings: np.ndarray,
        model_id: str,
        image: np.ndarray | None,
        original_size: tuple[int, int],
        options_json: str,
        deadline_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """sam_amg_generate on one image: the per-mask output arrays, batch dimension removed."""
        inputs = {
            EMBEDDINGS: image_embeddings,
            AMG_ORIGINAL_SIZE: np.array([original_size], dtype=np.int64),
            AMG_OPTIONS: np.array([[options_json.encode()]], dtype=np.object_),
            MODEL_ID: model_id_tensor(model_id),
        }
        if image is not None:
            inputs[AMG_IMAGE] = image[None]
        arrays = await self._infer(model.triton(AMG_GENERATE), inputs, list(AMG_OUTPUTS), deadline_s)
        return {name: arr[0] for name, arr in zip(AMG_OUTPUTS, arrays, strict=True)}
