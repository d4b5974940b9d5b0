"""SamAutomaticMaskGenerator.generate (SAM, MobileSAM) and SAM2AutomaticMaskGenerator.generate
(SAM 2: its point transform, mask selection, one-step upsampling, mask-to-mask refinement and
hole/sprinkle filling), as numpy orchestration over injected model calls.

The Triton model sam_amg_generate runs this with `encode` / `decode` doing BLS calls to
sam_encoder / sam_decoder; the tests can run it with any callables. Same steps, same order
and the same float32 comparisons as the reference, so the same records come out. Masks are
upsampled only after the predicted-IoU filter (which does not need them), in bounded chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from samserve.contract import SAM2, ModelInfo
from samserve.core.amg import (
    build_all_layer_point_grids,
    fill_holes_and_sprinkles,
    generate_crop_boxes,
    is_box_near_crop_edge,
    masks_to_boxes,
    nms,
    remove_small_regions,
    stability_score,
    uncrop_masks,
)
from samserve.core.amg_options import AmgOptions
from samserve.core.postprocess import postprocess_masks, postprocess_sam2_masks, returned_logits, select_masks
from samserve.core.preprocess import preprocess_for, preprocess_shape
from samserve.core.prompts import apply_coords, normalize_coords
from samserve.core.rle import counts_to_mask, mask_to_counts

# (1, 3, S, S) float32 -> (1, C, S/16, S/16) float16 (C: 256, SAM 2's packed 1024)
Encode = Callable[[np.ndarray], np.ndarray]
# SAM2AutomaticMaskGenerator builds its predictor without its mask_threshold: the predictor fills
# holes and sprinkles at its default, 0.0, whatever the generator's threshold
PREDICTOR_THRESHOLD = 0.0
# upsampled float32 logits held at once: chunks of masks are sized to stay under this
UPSAMPLE_PIXELS = 16 * 1024 * 1024


class Cancelled(Exception):
    """The request was cancelled (its client left or its deadline passed): work stopped."""


# embedding, point_coords (B, N, 2) float32, point_labels (B, N) float32[, mask_input (B, 1, L, L)
# float32 low-res logits] -> ((B, 4, L, L), (B, 4))
Decode = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclass
class AmgMasks:
    """N masks. rles: uncompressed RLE counts at the original size (column-major);
    boxes (N, 4) int64 XYXY (inclusive max); predicted_iou, stability_score (N,) float32;
    point_coords (N, 2) float64; crop_boxes (N, 4) int64 XYXY."""

    rles: list[list[int]]
    boxes: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    point_coords: np.ndarray
    crop_boxes: np.ndarray

    @classmethod
    def empty(cls) -> AmgMasks:
        return cls(
            [],
            np.zeros((0, 4), np.int64),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, 2), np.float64),
            np.zeros((0, 4), np.int64),
        )

    def __len__(self) -> int:
        return len(self.rles)

    def take(self, idx: np.ndarray) -> AmgMasks:
        idx = np.asarray(idx, dtype=np.int64)
        return AmgMasks(
            [self.rles[i] for i in idx],
            self.boxes[idx],
            self.predicted_iou[idx],
            self.stability_score[idx],
            self.point_coords[idx],
            self.crop_boxes[idx],
        )

    @classmethod
    def cat(cls, parts: list[AmgMasks]) -> AmgMasks:
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(
            [r for p in parts for r in p.rles],
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.predicted_iou for p in parts]),
            np.concatenate([p.stability_score for p in parts]),
            np.concatenate([p.point_coords for p in parts]),
            np.concatenate([p.crop_boxes for p in parts]),
        )

    @property
    def areas(self) -> np.ndarray:
        return np.array([sum(r[1::2]) for r in self.rles], dtype=np.int64)


class AutomaticMaskGenerator:
    def __init__(self, model: ModelInfo, encode: Encode, decode: Decode, upsample_chunk: int = 16) -> None:
        self.model = model
        self.encode = encode
        self.decode = decode
        self.upsample_chunk = upsample_chunk
        self.sam2 = model.family == SAM2
        self._cancelled: Callable[[], bool] = lambda: False

    def _check(self) -> None:
        if self._cancelled():
            raise Cancelled("cancelled: its client cancelled or its deadline passed")

    def generate(
        self,
        opts: AmgOptions,
        original_size: tuple[int, int],
        image: np.ndarray | None = None,
        embedding: np.ndarray | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> AmgMasks:
        """image (H, W, 3) uint8 RGB: needed for crop layers and when `embedding` (the whole
        image's, (1, 256, e, e) float16) is not given. `cancelled()` is asked before every
        encoder and decoder call: when it says so, Cancelled is raised and the work stops."""
        self._cancelled = cancelled
        grids = build_all_layer_point_grids(
            opts.points_per_side, opts.crop_n_layers, opts.crop_n_points_downscale_factor
        )
        crop_boxes, layers = generate_crop_boxes(original_size, opts.crop_n_layers, opts.crop_overlap_ratio)
        parts = []
        for crop_box, layer in zip(crop_boxes, layers, strict=True):
            full = layer == 0
            parts.append(
                self._process_crop(opts, grids[layer], crop_box, original_size, image, embedding if full else None)
            )
        data = AmgMasks.cat(parts)
        if len(crop_boxes) > 1 and len(data):
            cb = data.crop_boxes
            area = ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            data = data.take(nms(data.boxes, np.float32(1.0) / area, opts.crop_nms_thresh))
        # SAM 2's generator fills holes and sprinkles on the low-res logits instead (_finish_masks)
        if opts.min_mask_region_area > 0 and len(data) and not self.sam2:
            data = self._remove_small_regions(
                data, original_size, opts.min_mask_region_area, max(opts.box_nms_thresh, opts.crop_nms_thresh)
            )
        return data

    def _process_crop(
        self,
        opts: AmgOptions,
        grid: np.ndarray,
        crop_box: list[int],
        orig_size: tuple[int, int],
        image: np.ndarray | None,
        embedding: np.ndarray | None,
    ) -> AmgMasks:
        x0, y0, x1, y1 = crop_box
        crop_size = (y1 - y0, x1 - x0)
        s = self.model.img_size
        if embedding is None:
            if image is None:
                raise ValueError("the image is needed to embed a crop")
            m = self.model
            x, input_size = preprocess_for(m.family, image[y0:y1, x0:x1], s, m.pixel_mean, m.pixel_std)
            self._check()
            embedding = self.encode(x)
        else:
            input_size = (s, s) if self.sam2 else preprocess_shape(*crop_size, s)
        points_for_image = grid * np.array(crop_size)[None, ::-1]
        parts = [
            self._process_batch(
                opts,
                points_for_image[i : i + opts.points_per_batch],
                crop_size,
                input_size,
                crop_box,
                orig_size,
                embedding,
            )
            for i in range(0, len(points_for_image), opts.points_per_batch)
        ]
        data = AmgMasks.cat(parts)
        if not len(data):
            return data
        data = data.take(nms(data.boxes, data.predicted_iou, opts.box_nms_thresh))
        data.boxes = data.boxes + np.array([[x0, y0, x0, y0]])
        data.point_coords = data.point_coords + np.array([[x0, y0]])
        data.crop_boxes = np.tile(np.array(crop_box, dtype=np.int64), (len(data), 1))
        return data

    def _process_batch(
        self,
        opts: AmgOptions,
        points: np.ndarray,
        crop_size: tuple[int, int],
        input_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
        embedding: np.ndarray,
    ) -> AmgMasks:
        b = len(points)
        if self.sam2:
            points = points.astype(np.float32).astype(np.float64)  # SAM 2's generator holds them in float32
            coords = normalize_coords(points, crop_size, self.model.img_size)
        else:
            coords = apply_coords(points, crop_size, self.model.img_size)
        # both predictors pad a single point with a "not a point" (label -1) at (0, 0)
        point_coords = np.concatenate([coords[:, None, :], np.zeros((b, 1, 2))], axis=1).astype(np.float32)
        point_labels = np.tile(np.array([[1.0, -1.0]], dtype=np.float32), (b, 1))
        self._check()
        low_res, iou = self.decode(embedding, point_coords, point_labels)
        multimask = opts.multimask_output or not self.sam2
        low_res, iou = select_masks(low_res, iou, multimask, self.model.family)
        n = low_res.shape[1]
        low_res = low_res.reshape(-1, *low_res.shape[-2:])  # flattened, n a point
        iou = iou.reshape(-1).astype(np.float32)
        pts = points.repeat(n, axis=0)
        if self.sam2 and opts.use_m2m:
            low_res, iou = self._refine(opts, embedding, point_coords.repeat(n, axis=0), low_res)
        keep = np.arange(len(iou))
        if opts.pred_iou_thresh > 0.0:
            keep = keep[iou > np.float32(opts.pred_iou_thresh)]
        chunk = max(1, min(self.upsample_chunk, UPSAMPLE_PIXELS // (crop_size[0] * crop_size[1])))
        parts = [
            self._finish_masks(
                opts,
                low_res[keep[i : i + chunk]],
                iou[keep[i : i + chunk]],
                pts[keep[i : i + chunk]],
                crop_size,
                input_size,
                crop_box,
                orig_size,
            )
            for i in range(0, len(keep), chunk)
        ]
        return AmgMasks.cat(parts)

    def _finish_masks(
        self,
        opts: AmgOptions,
        low_res: np.ndarray,
        iou: np.ndarray,
        points: np.ndarray,
        crop_size: tuple[int, int],
        input_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
    ) -> AmgMasks:
        if self.sam2:
            thr = opts.mask_threshold
            if opts.min_mask_region_area > 0:  # the generator's predictor fills at its own threshold, 0
                low_res = fill_holes_and_sprinkles(low_res, opts.min_mask_region_area, PREDICTOR_THRESHOLD)
            logits = postprocess_sam2_masks(low_res[None], crop_size)[0]
        else:
            thr = self.model.mask_threshold
            logits = postprocess_masks(low_res[None], self.model.img_size, input_size, crop_size)[0]
        stab = stability_score(logits, thr, opts.stability_score_offset)
        keep = np.ones(len(stab), dtype=bool)
        if opts.stability_score_thresh > 0.0:
            keep &= stab >= np.float32(opts.stability_score_thresh)
        masks = logits[keep] > np.float32(thr)
        boxes = masks_to_boxes(masks)
        near = is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
        masks, boxes = masks[~near], boxes[~near]
        full = uncrop_masks(masks, crop_box, *orig_size)
        idx = np.flatnonzero(keep)[~near]
        return AmgMasks(
            [mask_to_counts(m) for m in full],
            boxes,
            iou[idx],
            stab[idx],
            points[idx],
            np.zeros((len(idx), 4), np.int64),
        )

    def _refine(
        self, opts: AmgOptions, embedding: np.ndarray, point_coords: np.ndarray, low_res: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """SAM2AutomaticMaskGenerator.refine_with_m2m: every mask of the first pass (before any
        filtering) prompted again with its point and its clamped low-res logits as mask input,
        points_per_batch at a time, one (stability-checked) mask each."""
        masks, ious = [], []
        labels = np.tile(np.array([[1.0, -1.0]], dtype=np.float32), (len(point_coords), 1))
        step = opts.points_per_batch
        for i in range(0, len(point_coords), step):
            mask_input = returned_logits(low_res[i : i + step], SAM2)[:, None]
            self._check()
            low, iou = self.decode(embedding, point_coords[i : i + step], labels[i : i + step], mask_input)
            low, iou = select_masks(low, iou, False, SAM2)
            masks.append(low[:, 0])
            ious.append(iou[:, 0].astype(np.float32))
        return np.concatenate(masks), np.concatenate(ious)

    @staticmethod
    def _remove_small_regions(data: AmgMasks, orig_size: tuple[int, int], min_area: int, nms_thresh: float) -> AmgMasks:
        """SamAutomaticMaskGenerator.postprocess_small_regions: fill small holes, drop small
        islands, then NMS preferring unchanged masks; changed masks that survive are updated.
        One full-size mask at a time: the changed ones are kept as RLE, not stacked."""
        boxes, scores, changed = [], [], {}
        for i, rle in enumerate(data.rles):
            mask = counts_to_mask(rle, *orig_size)
            mask, changed_holes = remove_small_regions(mask, min_area, "holes")
            mask, changed_islands = remove_small_regions(mask, min_area, "islands")
            box = masks_to_boxes(mask[None])[0]
            boxes.append(box)
            scores.append(float(not (changed_holes or changed_islands)))
            if changed_holes or changed_islands:
                changed[i] = mask_to_counts(mask)
        keep = nms(np.stack(boxes), np.asarray(scores, dtype=np.float32), nms_thresh)
        for i in keep:
            if i in changed:
                data.rles[i] = changed[i]
                data.boxes[i] = boxes[i]
        return data.take(keep)
