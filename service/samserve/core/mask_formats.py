"""Encoding masks in the API's formats (COCO RLE, uncompressed RLE, PNG, packed bits, polygons)."""

from __future__ import annotations

import enum
import io

import numpy as np
from PIL import Image

from samserve.core.polygons import PolygonPart, mask_to_polygons
from samserve.core.rle import mask_to_counts


class MaskFormat(enum.Enum):
    COCO_RLE = "coco_rle"
    UNCOMPRESSED_RLE = "uncompressed_rle"
    PNG = "png"
    PACKED_BITS = "packed_bits"
    POLYGONS = "polygons"


def mask_to_png(mask: np.ndarray) -> bytes:
    """(H, W) bool -> 8-bit grayscale PNG with 0 / 255."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_to_mask(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 127


def mask_to_packed_bits(mask: np.ndarray) -> bytes:
    """(H, W) bool -> numpy.packbits of the row-major flattening (bitorder big)."""
    return np.packbits(np.asarray(mask, dtype=bool).reshape(-1)).tobytes()


def packed_bits_to_mask(data: bytes, height: int, width: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=height * width)
    return bits.reshape(height, width).astype(bool)


Payload = dict | list[int] | bytes | list[PolygonPart]


def mask_to_coco_rle_c(mask: np.ndarray) -> dict:
    """mask_to_coco_rle by pycocotools' C encoder (the gateway's; several times faster on
    masks with many runs). Imported here, not at the top: Triton's environment has none."""
    from pycocotools import mask as coco_mask

    h, w = mask.shape
    fortran = np.asfortranarray(mask, dtype=bool).view(np.uint8)  # no copy when made column-major
    rle = coco_mask.encode(fortran)
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")}


def encode_mask(mask: np.ndarray, fmt: MaskFormat, polygon_tolerance: float = 0.0) -> Payload:
    """The format's payload: dict for COCO RLE, counts for uncompressed RLE, parts for
    polygons, bytes otherwise."""
    if fmt is MaskFormat.COCO_RLE:
        return mask_to_coco_rle_c(mask)
    if fmt is MaskFormat.UNCOMPRESSED_RLE:
        return mask_to_counts(mask)
    if fmt is MaskFormat.PNG:
        return mask_to_png(mask)
    if fmt is MaskFormat.POLYGONS:
        return mask_to_polygons(mask, polygon_tolerance)
    return mask_to_packed_bits(mask)


def payload_bytes(payload: Payload, fmt: MaskFormat) -> int:
    """About what a mask's payload takes in a response (an upper bound for uncompressed RLE
    and polygons: a protobuf varint of a count or a coordinate is at most 5 bytes)."""
    if fmt is MaskFormat.COCO_RLE:
        return len(payload["counts"]) + 16  # type: ignore[index]
    if fmt is MaskFormat.UNCOMPRESSED_RLE:
        return 5 * len(payload) + 16
    if fmt is MaskFormat.POLYGONS:
        return sum(5 * (p.exterior.size + sum(h.size for h in p.holes)) + 8 * (2 + len(p.holes)) for p in payload)
    return len(payload)  # type: ignore[arg-type]
