"""Merging the requests of one Triton execution into model-sized batches and splitting the
results back. Used by the python-backend models (model_repository/*/1/model.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from samserve.contract import DECODER_INPUTS, DECODER_NOMASK_INPUTS

Arrays = dict[str, np.ndarray]


def run_concatenated(
    inputs: Sequence[np.ndarray], run: Callable[[np.ndarray], np.ndarray], max_batch: int
) -> list[np.ndarray]:
    """Runs `run` on the row-wise concatenation of `inputs` (each (n_i, ...)), at most
    `max_batch` rows a call, and returns one output per input with its n_i rows."""
    if not inputs:
        return []
    if len(inputs) == 1 and len(inputs[0]) <= max_batch:  # one request: its tensor as it came, no copy
        return [run(inputs[0])]
    batch = np.concatenate(inputs, axis=0)
    outs = [run(batch[i : i + max_batch]) for i in range(0, len(batch), max_batch)]
    out = np.concatenate(outs, axis=0)
    bounds = np.cumsum([len(x) for x in inputs])[:-1]
    return np.split(out, bounds, axis=0)


@dataclass(frozen=True)
class DecoderRequest:
    """One Triton request to sam_decoder: B prompts of N points on one image.

    image_embeddings (1, 256, h, w) float16/32; point_coords (B, N, 2) float32;
    point_labels (B, N) float32; mask_input (B, 1, 4h, 4w) float32; has_mask_input (B,) float32.
    """

    image_embeddings: np.ndarray
    point_coords: np.ndarray
    point_labels: np.ndarray
    mask_input: np.ndarray
    has_mask_input: np.ndarray

    @property
    def num_prompts(self) -> int:
        return int(self.point_coords.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.point_coords.shape[1])


def run_decoder_batched(
    requests: Sequence[DecoderRequest],
    run: Callable[[Arrays], tuple[np.ndarray, np.ndarray]],
    max_prompts: int,
    embedding_dtype: type = np.float32,
    broadcast_image: bool = False,
    run_nomask: Callable[[Arrays], tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Groups the prompts of all requests by point count (the only shape that must match
    in one model call), gives each prompt its image's embedding (as `embedding_dtype`), runs
    `run` on at most `max_prompts` prompts at a time and returns (low_res_masks,
    iou_predictions) per request.

    broadcast_image: each run holds the prompts of one request only and gets its image's
    embedding once, (1, C, e, e), which the network broadcasts over the prompts (ONNX Runtime:
    the same results, without a copy of the embedding per prompt: 16 MiB each for SAM 2). A
    TensorRT plan behind Triton needs one row per prompt (one batch dimension for all inputs).

    run_nomask (with broadcast_image): the network for prompts without a mask input (the
    DECODER_NOMASK_INPUTS), which shares the image's work among them; prompts with one still go
    to `run`."""
    by_points: dict[tuple[int, int, bool], list[tuple[int, int]]] = defaultdict(list)  # -> [(request, prompt)]
    nomask = broadcast_image and run_nomask is not None
    for r, req in enumerate(requests):
        for p in range(req.num_prompts):
            plain = nomask and not req.has_mask_input[p]
            by_points[req.num_points, r if broadcast_image else -1, plain].append((r, p))
    results: list[list[tuple[np.ndarray, np.ndarray] | None]] = [[None] * req.num_prompts for req in requests]
    for (_, _, plain), members in by_points.items():
        for start in range(0, len(members), max_prompts):
            chunk = members[start : start + max_prompts]
            if broadcast_image:
                embeddings = requests[chunk[0][0]].image_embeddings
            else:
                embeddings = np.stack([requests[r].image_embeddings[0] for r, _ in chunk])
            per_prompt = [np.stack([getattr(requests[r], name)[p] for r, p in chunk]) for name in DECODER_INPUTS[1:]]
            feed = dict(zip(DECODER_INPUTS, [embeddings.astype(embedding_dtype, copy=False), *per_prompt], strict=True))
            if plain:
                masks, ious = run_nomask({k: feed[k] for k in DECODER_NOMASK_INPUTS})
            else:
                masks, ious = run(feed)
            for i, (r, p) in enumerate(chunk):
                results[r][p] = (masks[i], ious[i])
    out = []
    for per_prompt in results:
        out.append((np.stack([m for m, _ in per_prompt]), np.stack([s for _, s in per_prompt])))  # type: ignore[misc]
    return out
