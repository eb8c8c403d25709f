"""Intersection over union of binary masks: how well a segmenter's masks match the labels."""

from __future__ import annotations

import numpy as np


def mask_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of each pair of masks ``(..., H, W)`` (non-zero = face); two empty masks agree fully (1.0)."""
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    inter = (pred & target).sum((-2, -1))
    union = (pred | target).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
