"""sam_amg_generate's output arrays -> SamAutomaticMaskGenerator's records, in the API's formats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samserve.contract import AMG_OUTPUTS
from samserve.core.mask_formats import MaskFormat, encode_mask
from samserve.core.rle import counts_to_mask, counts_to_string

RLE_COUNTS, BOXES, PREDICTED_IOU, STABILITY_SCORE, POINT_COORDS, CROP_BOXES = AMG_OUTPUTS


@dataclass(frozen=True)
class MaskRecord:
    segmentation: dict | list[int] | bytes  # the MaskFormat's payload
    bbox: list[int]  # XYWH (w = x_max - x_min, as the reference)
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[int]  # XYWH


def _xywh(box: np.ndarray) -> list[int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def records_from_arrays(
    arrays: dict[str, np.ndarray], original_size: tuple[int, int], fmt: MaskFormat, polygon_tolerance: float = 0.0
) -> list[MaskRecord]:
    """arrays: rle_counts (N,) bytes of uint32 LE counts; boxes (N, 4) XYXY; predicted_iou,
    stability_score (N,); point_coords (N, 2); crop_boxes (N, 4) XYXY."""
    h, w = original_size
    records = []
    for i, raw in enumerate(arrays[RLE_COUNTS]):
        counts = np.frombuffer(raw, dtype="<u4").astype(np.int64)
        if fmt is MaskFormat.COCO_RLE:
            segmentation = {"size": [h, w], "counts": counts_to_string(counts.tolist())}
        elif fmt is MaskFormat.UNCOMPRESSED_RLE:
            segmentation = counts.tolist()
        else:
            segmentation = encode_mask(counts_to_mask(counts.tolist(), h, w), fmt, polygon_tolerance)
        records.append(
            MaskRecord(
                segmentation=segmentation,
                bbox=_xywh(arrays[BOXES][i]),
                area=int(counts[1::2].sum()),
                predicted_iou=float(arrays[PREDICTED_IOU][i]),
                stability_score=float(arrays[STABILITY_SCORE][i]),
                point_coords=[[float(v) for v in arrays[POINT_COORDS][i]]],
                crop_box=_xywh(arrays[CROP_BOXES][i]),
            )
        )
    return records
