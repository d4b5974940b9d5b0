"""The computations of SamAutomaticMaskGenerator (segment_anything/utils/amg.py) in numpy:
point grids, crop boxes, stability score, mask boxes, NMS, uncropping, small-region removal.
Vectorised over masks; no Python loop over pixels."""

from __future__ import annotations

import math
from itertools import product

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) float64 points evenly spaced in [0, 1] x [0, 1], row by row."""
    offset = 1 / (2 * n_per_side)
    one_side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes (the whole image first) and their layer indices."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

    for i_layer in range(n_layers):
        n = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w, crop_h = crop_len(im_w, n, overlap), crop_len(im_h, n, overlap)
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def stability_score(logits: np.ndarray, mask_threshold: float, offset: float) -> np.ndarray:
    """(K, H, W) logits -> (K,) float32 IoU of the masks thresholded at +/- offset."""
    inter = (logits > (mask_threshold + offset)).sum(axis=(-1, -2), dtype=np.int64)
    union = (logits > (mask_threshold - offset)).sum(axis=(-1, -2), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(np.float32) / union.astype(np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, 4) int64 XYXY with inclusive max; [0, 0, 0, 0] for an empty mask."""
    k, h, w = masks.shape
    if k == 0:
        return np.zeros((0, 4), dtype=np.int64)
    rows = masks.any(axis=2)  # (K, H)
    cols = masks.any(axis=1)  # (K, W)
    empty = ~rows.any(axis=1)
    top = np.argmax(rows, axis=1)
    bottom = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    left = np.argmax(cols, axis=1)
    right = w - 1 - np.argmax(cols[:, ::-1], axis=1)
    out = np.stack([left, top, right, bottom], axis=1).astype(np.int64)
    out[empty] = 0
    return out


def is_box_near_crop_edge(
    boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> np.ndarray:
    """(K, 4) XYXY boxes in crop coordinates -> (K,) bool: touches a crop edge that is not an image edge."""
    crop = np.asarray(crop_box, dtype=np.float32)
    orig = np.asarray(orig_box, dtype=np.float32)
    b = (boxes + np.array([crop_box[0], crop_box[1], crop_box[0], crop_box[1]])).astype(np.float32)
    near_crop = np.abs(b - crop[None]) <= atol
    near_image = np.abs(b - orig[None]) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS in descending score order (ties in input order), as
    torchvision.ops.nms: IoU of XYXY float32 boxes, suppress where IoU > threshold.

    Memory O(n): each kept box's IoU row is computed against the boxes not yet suppressed (the
    same float32 arithmetic as a full n x n matrix, which for 50k boxes would be tens of GB)."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    b = np.asarray(boxes, dtype=np.float32)[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(n, dtype=bool)
    keep = []
    for i in range(n):  # over masks, not pixels
        if not alive[i]:
            continue
        keep.append(i)
        rest = i + 1 + np.flatnonzero(alive[i + 1 :])
        if not len(rest):
            break
        lt = np.maximum(b[i, :2], b[rest, :2])
        rb = np.minimum(b[i, 2:], b[rest, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area[i] + area[rest] - inter)
        alive[rest[iou > iou_threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def uncrop_masks(masks: np.ndarray, crop_box: list[int], orig_h: int, orig_w: int) -> np.ndarray:
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    out = np.zeros((masks.shape[0], orig_h, orig_w), dtype=masks.dtype)
    out[:, y0:y1, x0:x1] = masks
    return out


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fills holes ("holes") or removes islands ("islands") smaller than area_thresh, with
    8-connectivity, as the reference does with cv2.connectedComponentsWithStats."""
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = correct_holes ^ mask
    regions, n = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if len(small) == 0:
        return mask, False
    fill = np.concatenate([[0], small])
    if not correct_holes:
        fill = np.setdiff1d(np.arange(n + 1), fill)
        if len(fill) == 0:
            fill = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, fill), True


def fill_holes_and_sprinkles(low_res: np.ndarray, max_area: int, threshold: float) -> np.ndarray:
    """SAM2Transforms.postprocess_masks' filling on low-res logits (N, L, L) (what SAM 2's
    generator does with min_mask_region_area, as max_hole_area and max_sprinkle_area): the
    8-connected components of the background (logit <= threshold) of at most `max_area` pixels
    become threshold + 10, those of the foreground threshold - 10, both found on the logits as
    given. The reference finds the components with its CUDA kernel (and skips the step where it
    cannot run); the components of a binary image are the same whoever labels them."""
    from scipy import ndimage

    eight = np.ones((3, 3), dtype=bool)
    out = low_res.astype(np.float32, copy=True)
    for n, logits in enumerate(low_res):
        for region, value in ((logits <= threshold, threshold + 10.0), (logits > threshold, threshold - 10.0)):
            labels, count = ndimage.label(region, structure=eight)
            if count == 0:
                continue
            areas = np.bincount(labels.ravel(), minlength=count + 1)
            small = (labels > 0) & (areas[labels] <= max_area)
            out[n][small] = np.float32(value)
    return out
