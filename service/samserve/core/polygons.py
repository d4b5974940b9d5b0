"""Masks as polygons: per connected part an exterior ring and its hole rings, traced by
OpenCV's contour finding (cv2.findContours, as CVAT and Roboflow do), optionally simplified
(Douglas-Peucker, cv2.approxPolyDP). A ring is COCO's flat list x0, y0, x1, y1, ... of the
pixel centres of boundary pixels: an exterior's run through the part's outermost pixels, a
hole's through the hole's outermost pixels, so filling each exterior and then clearing each
hole (boundaries included, as cv2.fillPoly and most rasterisers do) gives the mask back.
OpenCV is imported when polygons are asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_TOLERANCE = 1000.0


@dataclass
class PolygonPart:
    exterior: np.ndarray  # (2N,) int32: x0, y0, x1, y1, ...
    holes: list[np.ndarray] = field(default_factory=list)


def _ring(contour: np.ndarray, tolerance: float) -> np.ndarray:
    import cv2

    if tolerance > 0:
        contour = cv2.approxPolyDP(contour, tolerance, True)
    return contour.reshape(-1).astype(np.int32)


def _hole_pixels(mask: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """OpenCV traces a hole along the part's pixels around it; the ring of the hole's own
    outermost pixels instead (the enclosed background's outer contour)."""
    import cv2

    x, y, w, h = cv2.boundingRect(ring)
    inside = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(inside, [ring - np.array([x, y], dtype=ring.dtype)], 1)
    inside &= ~mask[y : y + h, x : x + w].astype(bool)
    traced, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not traced:
        return ring
    return max(traced, key=len) + np.array([x, y], dtype=ring.dtype)


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[PolygonPart]:
    """(H, W) bool -> its parts (8-connected), the largest first. tolerance: the most a
    simplified ring may stray from the traced one, in pixels (0: every corner kept)."""
    import cv2

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    parts = []
    for i, contour in enumerate(contours):
        if links[i][3] != -1:
            continue  # a hole: listed with its part
        holes = []
        j = links[i][2]
        while j != -1:
            holes.append(_ring(_hole_pixels(mask, contours[j]), tolerance))
            j = links[j][0]
        parts.append((cv2.contourArea(contour), PolygonPart(_ring(contour, tolerance), holes)))
    parts.sort(key=lambda p: -p[0])
    return [p for _, p in parts]


def polygons_to_mask(parts: list[PolygonPart], height: int, width: int) -> np.ndarray:
    """The mask the parts describe: each exterior filled, then its holes cleared; parts in
    order (the largest first), so a part inside another's hole stays."""
    import cv2

    out = np.zeros((height, width), dtype=np.uint8)
    for part in parts:
        cv2.fillPoly(out, [part.exterior.reshape(-1, 1, 2)], 1)
        if part.holes:
            cv2.fillPoly(out, [h.reshape(-1, 1, 2) for h in part.holes], 0)
    return out.astype(bool)
