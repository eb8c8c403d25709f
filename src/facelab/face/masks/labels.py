"""Hand-made segmentation labels: polygons stored in each face's metadata, and the mask they describe.

A label is two lists of polygons in aligned-face pixel coordinates (pixel centres at integers), kept in
``FaceMeta.extra``: ``seg_polygons`` (include: face) and ``seg_exclude_polygons`` (exclude: hair, hands,
glasses over the face). Polygons are stored instead of a bitmap because they are small enough for a
JPEG face's single metadata segment and they rasterise at any resolution.

The mask is include minus exclude. Polygons are painted largest first, so a polygon inside another one
wins: an exclude punches a hole into the include around it, and an include inside that hole (an eye
seen through a painted-out glasses frame) is face again. That makes :func:`polygons_from_mask` followed
by :func:`paint_polygons` reproduce any binary mask, however its regions nest.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.face.metadata import FaceMeta

INCLUDE_KEY = "seg_polygons"
EXCLUDE_KEY = "seg_exclude_polygons"

Polygon = list[list[int]]


def _outer_contours(binary: np.ndarray) -> list[np.ndarray]:
    """The outer borders of every 1-region (islands in holes included), as (K, 2) int arrays.

    Only the corners of each border are kept (straight runs are dropped), which loses no pixel.
    """
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    return [c[:, 0] for c, h in zip(contours, hierarchy[0]) if h[3] < 0]


def polygons_from_mask(mask: np.ndarray) -> tuple[list[Polygon], list[Polygon]]:
    """(include, exclude) polygons of a binary mask (non-zero = face).

    Includes trace the face regions' outer borders; excludes trace the holes' own borders (found on the
    inverted mask, padded so that the background around the face is one region and dropped), so
    painting them back gives the same pixels, not holes grown by the outline's width.
    """
    face = (np.asarray(mask) > 0).astype(np.uint8)
    include = _outer_contours(face)
    background = np.pad(1 - face, 1, constant_values=1)
    exclude = [c - 1 for c in _outer_contours(background) if c.min() > 0]  # the padded background touches 0
    return [c.tolist() for c in include], [c.tolist() for c in exclude]


def editable_polygons(mask: np.ndarray, tolerance: float = 1.0) -> tuple[list[Polygon], list[Polygon]]:
    """(include, exclude) polygons of a binary mask with few corners, for a person to edit: each border of
    :func:`polygons_from_mask` simplified to within ``tolerance`` pixels (Douglas-Peucker); borders that
    shrink below 3 corners are dropped."""
    simplified = []
    for polys in polygons_from_mask(mask):
        out = [cv2.approxPolyDP(np.asarray(p, np.int32).reshape(-1, 1, 2), tolerance, True)[:, 0].tolist()
               for p in polys]
        simplified.append([p for p in out if len(p) >= 3])
    return simplified[0], simplified[1]


def paint_polygons(include: list, exclude: list, source_size: int, size: int) -> np.ndarray:
    """The (size, size) uint8 0/1 mask of polygons drawn on a ``source_size`` face, largest first.

    Polygons run through the centres of a region's edge pixels, so they are painted at the face's own
    size (exact) and the mask is then resized: scaling the polygons instead would shave half a source
    pixel off every edge.
    """
    shapes = [(np.asarray(p, np.float64).reshape(-1, 2), value) for polys, value in ((include, 1), (exclude, 0))
              for p in polys if len(p)]
    shapes.sort(key=lambda s: -abs(cv2.contourArea(s[0].astype(np.float32))))
    mask = np.zeros((source_size, source_size), np.uint8)
    for pts, value in shapes:
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], value)
    if size == source_size:
        return mask
    resized = cv2.resize(mask.astype(np.float32), (size, size),
                         interpolation=cv2.INTER_AREA if size < source_size else cv2.INTER_LINEAR)
    return (resized >= 0.5).astype(np.uint8)


def has_label(meta: FaceMeta) -> bool:
    """Whether the face was labelled (an empty include list is a label too: "no face visible here")."""
    return INCLUDE_KEY in meta.extra or EXCLUDE_KEY in meta.extra


def label_mask(meta: FaceMeta, size: int | None = None) -> np.ndarray | None:
    """The labelled mask (uint8 0/1) at ``size`` (default: the face's own size), or None if unlabelled."""
    if not has_label(meta):
        return None
    return paint_polygons(meta.extra.get(INCLUDE_KEY, []), meta.extra.get(EXCLUDE_KEY, []), meta.size, size or meta.size)


def set_label(meta: FaceMeta, mask: np.ndarray, name: str = "mask") -> None:
    """Store a binary mask of the face's own size as its label, replacing any earlier label."""
    if mask.shape[:2] != (meta.size, meta.size):
        raise FacelabError(f"{name} is {mask.shape[1]}x{mask.shape[0]} but its face is {meta.size}x{meta.size}; "
                           "masks must have the face image's size")
    include, exclude = polygons_from_mask(mask)
    meta.extra[INCLUDE_KEY] = include
    meta.extra[EXCLUDE_KEY] = exclude


def set_polygons(meta: FaceMeta, include: list, exclude: list, name: str = "label") -> None:
    """Store polygons drawn by hand (the XSeg editor) as the face's label, replacing any earlier one.

    Each polygon needs at least 3 points inside the face (0..size-1 on both axes); the points are
    rounded to whole pixels, as :func:`polygons_from_mask` stores them.
    """
    clean = []
    for kind, polys in (("include", include), ("exclude", exclude)):
        if not isinstance(polys, list):
            raise FacelabError(f"{name}: {kind} must be a list of polygons, not {type(polys).__name__}")
        out = []
        for k, poly in enumerate(polys):
            try:
                pts = np.asarray(poly, np.float64)
            except (TypeError, ValueError):
                pts = np.zeros((0,))
            if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
                raise FacelabError(f"{name}: {kind} polygon {k} needs at least 3 [x, y] points")
            if pts.min() < 0 or pts.max() > meta.size - 1:
                raise FacelabError(f"{name}: {kind} polygon {k} leaves the {meta.size}x{meta.size} face")
            out.append(np.round(pts).astype(int).tolist())
        clean.append(out)
    meta.extra[INCLUDE_KEY], meta.extra[EXCLUDE_KEY] = clean


def clear_label(meta: FaceMeta) -> bool:
    """Delete the face's label; whether it had one."""
    had = has_label(meta)
    meta.extra.pop(INCLUDE_KEY, None)
    meta.extra.pop(EXCLUDE_KEY, None)
    return had
