"""Putting a face into a region of the frame: alpha overlay or Poisson (seamless) cloning.

Both work on a region of interest around one face and leave every pixel whose mask is exactly 0
bit-identical to the frame, so the merged frame differs from the source only under the face mask.
"""

from __future__ import annotations

import cv2
import numpy as np


def overlay(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``frame`` (uint8) * (1 - mask) + ``face`` (float 0..1) * mask, rounded back to uint8."""
    m = mask[..., None]
    mixed = frame.astype(np.float32) * (1.0 - m) + face * (255.0 * m)
    out = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return np.where(m > 0, out, frame)


# seamlessClone fails or shifts the result when the mask touches the image edge; this much replicated
# border keeps it away from the edge of a face that is cut by the frame border.
_CLONE_PAD = 4


def seamless(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-clone the face into the frame inside the mask's core, then feather with the soft mask.

    The clone keeps the face's gradients but takes its boundary colours from the frame (Perez et al.
    2003), which hides a lighting mismatch; the soft mask then hides the clone's hard edge.
    """
    core = (mask > 0.5).astype(np.uint8) * 255
    if not core.any():
        return overlay(frame, face, mask)
    face8 = np.clip(np.round(face * 255.0), 0, 255).astype(np.uint8)
    p = _CLONE_PAD
    src = cv2.copyMakeBorder(face8, p, p, p, p, cv2.BORDER_REPLICATE)
    dst = cv2.copyMakeBorder(frame, p, p, p, p, cv2.BORDER_REPLICATE)
    core = cv2.copyMakeBorder(core, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(core)
    # OpenCV puts the mask's bounding box at center - size // 2, so this centre keeps it in place.
    cloned = cv2.seamlessClone(src, dst, core, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    cloned = cloned[p:-p, p:-p]
    return overlay(frame, cloned.astype(np.float32) / 255.0, mask)
