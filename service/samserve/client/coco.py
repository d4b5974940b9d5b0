"""AMG records as a COCO JSON document (one image, one category), as pycocotools reads it."""

from __future__ import annotations

from samserve.client.sdk import AmgRecord
from samserve.core.rle import mask_to_coco_rle


def coco_document(records: list[AmgRecord], size: tuple[int, int], file_name: str, polygons: bool = False) -> dict:
    """segmentation: compressed RLE (exact), or with `polygons` COCO's polygon lists, one per
    part's exterior (the records must carry polygons: MASK_FORMAT_POLYGONS). COCO polygons
    have no holes: a mask with holes is exact only as RLE."""
    h, w = size
    annotations = []
    for i, r in enumerate(records, start=1):
        if polygons:
            if r.polygons is None:
                raise ValueError("polygons=True needs records asked in MASK_FORMAT_POLYGONS")
            segmentation: list | dict = [p.exterior.tolist() for p in r.polygons if p.exterior.size >= 6]
        else:
            segmentation = mask_to_coco_rle(r.segmentation)
        annotations.append(
            {
                "id": i,
                "image_id": 1,
                "category_id": 1,
                "segmentation": segmentation,
                "area": int(r.area),
                "bbox": [int(v) for v in r.bbox],
                "iscrowd": 0,
                "score": float(r.predicted_iou),
                "stability_score": float(r.stability_score),
                "point_coords": r.point_coords,
                "crop_box": [int(v) for v in r.crop_box],
            }
        )
    return {
        "images": [{"id": 1, "width": w, "height": h, "file_name": file_name}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }
