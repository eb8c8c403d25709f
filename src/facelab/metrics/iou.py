"""Intersection over union: of binary masks (how well a segmenter's masks match the labels) and of boxes
(how well a detector's faces match hand-made boxes, and whether one face lies inside another)."""

from __future__ import annotations

import numpy as np


def mask_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of each pair of masks ``(..., H, W)`` (non-zero = face); two empty masks agree fully (1.0)."""
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    inter = (pred & target).sum((-2, -1))
    union = (pred | target).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = _intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_covered(inner: Box, outer: Box) -> float:
    """Share of box ``inner``'s area that lies inside box ``outer``."""
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return _intersection(inner, outer) / area if area > 0 else 1.0


def _intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def matched_boxes(found: list[Box], truth: list[Box], threshold: float = 0.3) -> int:
    """How many found boxes match a true box at IoU >= ``threshold``, one to one, best pairs first:
    the true positives of a detector's precision (over ``found``) and recall (over ``truth``)."""
    pairs = sorted(((box_iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_found, used_truth = set(), set()
    for score, i, j in pairs:
        if score >= threshold and i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    return len(used_found)
