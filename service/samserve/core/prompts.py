"""Prompt validation and the predictors' prompt handling: coordinates from original-image
pixels to the model's S x S input frame (SAM: ResizeLongestSide.apply_coords / apply_boxes;
SAM 2: normalised by the original size), and each family's point/box/padding layout."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from samserve.core.errors import InvalidInput
from samserve.core.preprocess import preprocess_shape

BOX_LABELS = (2.0, 3.0)  # PromptEncoder.point_embeddings[2] / [3]: top-left / bottom-right
PAD_LABEL = -1.0  # "not a point": added after the points when there is no box


@dataclass(frozen=True)
class Prompt:
    """One prompt, in original-image pixels.

    points (N, 2) float64 XY; labels (N,) int64 (1 fg, 0 bg); box (4,) float64 XYXY or None;
    mask_input (L, L) float32 low-res logits or None (L = 4 * S / 16); mask_input_id names
    logits kept server-side instead (the gateway resolves it to mask_input)."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None
    mask_input_id: str | None = None


@dataclass(frozen=True)
class DecoderBatch:
    """Prompts of equal point count, ready for sam_decoder (batch dimension = prompts).

    indices: positions in the request's prompt list; point_coords (B, N, 2) float32 in the
    S x S frame; point_labels (B, N) float32; mask_input (B, 1, L, L) float32; has_mask_input (B,)."""

    indices: list[int]
    point_coords: np.ndarray
    point_labels: np.ndarray
    mask_input: np.ndarray
    has_mask_input: np.ndarray


def _check_xy(field: str, x: float, y: float, height: int, width: int) -> None:
    for axis, v, hi in (("x", x, width), ("y", y, height)):
        if not math.isfinite(v):
            raise InvalidInput(f"{field}.{axis} = {v} is not a finite number")
        if not 0 <= v <= hi:
            raise InvalidInput(f"{field}.{axis} = {v:g} is outside the image; allowed 0..{hi} ({width}x{height} image)")


def check_counts(prompts, max_prompts: int, max_points: int) -> None:
    """The limits on counts, read with len() alone: any sequence of anything with `.points`
    (the core's Prompts, or protobuf messages before they are converted)."""
    if len(prompts) > max_prompts:
        raise InvalidInput(f"prompts: {len(prompts)} prompts; at most {max_prompts} per request")
    for i, p in enumerate(prompts):
        if len(p.points) > max_points:
            raise InvalidInput(f"prompts[{i}].points: {len(p.points)} points; at most {max_points} per prompt")


def validate_prompts(
    prompts: list[Prompt],
    original_size: tuple[int, int],
    low_res_size: int,
    max_prompts: int,
    max_points: int,
) -> None:
    """Raises InvalidInput naming the first offending field (prompts[i].points[j].x, ...)."""
    height, width = original_size
    if not prompts:
        raise InvalidInput("prompts: at least one prompt is required")
    check_counts(prompts, max_prompts, max_points)
    for i, p in enumerate(prompts):
        field = f"prompts[{i}]"
        n = len(p.points)
        if n == 0 and p.box is None:
            raise InvalidInput(f"{field}: needs at least one point or a box")
        for j in range(n):
            _check_xy(f"{field}.points[{j}]", float(p.points[j, 0]), float(p.points[j, 1]), height, width)
            if int(p.labels[j]) not in (0, 1):
                raise InvalidInput(
                    f"{field}.points[{j}].label = {int(p.labels[j])}; allowed 1 (foreground) or 0 (background)"
                )
        if p.box is not None:
            x0, y0, x1, y1 = (float(v) for v in p.box)
            _check_xy(f"{field}.box (x0, y0)", x0, y0, height, width)
            _check_xy(f"{field}.box (x1, y1)", x1, y1, height, width)
            if x1 < x0 or y1 < y0:
                raise InvalidInput(f"{field}.box: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) needs x0 <= x1 and y0 <= y1")
        if p.mask_input is not None:
            if p.mask_input.shape != (low_res_size, low_res_size):
                raise InvalidInput(
                    f"{field}.mask_input: shape {p.mask_input.shape[0]}x{p.mask_input.shape[1]}; "
                    f"this model takes {low_res_size}x{low_res_size} low-res logits"
                )
            if not np.isfinite(p.mask_input).all():
                raise InvalidInput(f"{field}.mask_input: contains NaN or infinite values")


def apply_coords(coords: np.ndarray, original_size: tuple[int, int], img_size: int) -> np.ndarray:
    """(..., 2) XY in original pixels -> (..., 2) float64 in the S x S frame (ResizeLongestSide.apply_coords)."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, img_size)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out


def normalize_coords(coords: np.ndarray, original_size: tuple[int, int], img_size: int) -> np.ndarray:
    """(..., 2) XY in original pixels -> (..., 2) float32 in the S x S frame, as SAM 2's
    SAM2Transforms.transform_coords computes it (float32: x / w, y / h, then * S)."""
    h, w = original_size
    out = np.array(coords, dtype=np.float32, copy=True)
    out[..., 0] = out[..., 0] / np.float32(w)
    out[..., 1] = out[..., 1] / np.float32(h)
    return out * np.float32(img_size)


def sam_layout(p: Prompt, original_size: tuple[int, int], img_size: int) -> tuple[np.ndarray, np.ndarray]:
    """SamPredictor's: points, then the padding point when there is no box, then the box corners."""
    coords = apply_coords(np.asarray(p.points, dtype=np.float64).reshape(-1, 2), original_size, img_size)
    labels = np.asarray(p.labels, dtype=np.float64).reshape(-1)
    if p.box is None:
        return np.concatenate([coords, np.zeros((1, 2))]), np.concatenate([labels, [PAD_LABEL]])
    corners = apply_coords(np.asarray(p.box, dtype=np.float64).reshape(2, 2), original_size, img_size)
    return np.concatenate([coords, corners]), np.concatenate([labels, BOX_LABELS])


def sam2_layout(p: Prompt, original_size: tuple[int, int], img_size: int) -> tuple[np.ndarray, np.ndarray]:
    """SAM2ImagePredictor._predict's: the box corners first, then the points, then always the
    padding point (its prompt encoder is called with boxes=None, so it pads)."""
    coords = [normalize_coords(np.asarray(p.points, dtype=np.float64).reshape(-1, 2), original_size, img_size)]
    labels = [np.asarray(p.labels, dtype=np.float64).reshape(-1)]
    if p.box is not None:
        coords.insert(0, normalize_coords(np.asarray(p.box, dtype=np.float64).reshape(2, 2), original_size, img_size))
        labels.insert(0, np.asarray(BOX_LABELS))
    coords.append(np.zeros((1, 2), np.float32))
    labels.append(np.asarray([PAD_LABEL]))
    return np.concatenate(coords), np.concatenate(labels)


def decoder_batches(
    prompts: list[Prompt], original_size: tuple[int, int], img_size: int, low_res_size: int, family: str = "sam"
) -> list[DecoderBatch]:
    """Builds sam_decoder inputs exactly as the family's predictor feeds its prompt encoder
    (sam_layout, sam2_layout); grouped by the resulting point count so each group is one
    decoder call."""
    layout = sam2_layout if family == "sam2" else sam_layout
    groups: dict[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]] = {}
    for i, p in enumerate(prompts):
        coords, labels = layout(p, original_size, img_size)
        groups.setdefault(len(labels), []).append((i, coords, labels, p.mask_input))
    batches = []
    for members in groups.values():
        masks = np.zeros((len(members), 1, low_res_size, low_res_size), dtype=np.float32)
        has = np.zeros(len(members), dtype=np.float32)
        for k, (_, _, _, m) in enumerate(members):
            if m is not None:
                masks[k, 0] = m
                has[k] = 1.0
        batches.append(
            DecoderBatch(
                indices=[i for i, _, _, _ in members],
                point_coords=np.stack([c for _, c, _, _ in members]).astype(np.float32),
                point_labels=np.stack([lab for _, _, lab, _ in members]).astype(np.float32),
                mask_input=masks,
                has_mask_input=has,
            )
        )
    return batches
