"""The segmenter's mask applied to a face (``facelab xseg apply``), stored in the face's own metadata.

The mask is kept as a 1-bit PNG in base64 under ``FaceMeta.extra["xseg_mask"]``, at the segmenter's
resolution. Binary, because a 1-bit PNG has a hard size bound (a 256 px mask is at most ~11 KB of text,
a smooth face outline well under 1 KB), so it always fits a JPEG face's single 64 KB metadata segment;
merge feathers the edge anyway (``--blur``) and training blurs its mask edge itself.
"""

from __future__ import annotations

import base64
import binascii

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.face.metadata import FaceMeta
from facelab.face.masks.labels import label_mask

KEY = "xseg_mask"


def encode_mask(mask: np.ndarray) -> str:
    """A probability (or 0/1) mask ``(R, R)`` -> base64 1-bit PNG of ``mask >= 0.5``."""
    ok, png = cv2.imencode(".png", (np.asarray(mask) >= 0.5).astype(np.uint8) * 255,
                           [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise FacelabError("could not encode an XSeg mask as PNG")
    return base64.b64encode(png.tobytes()).decode("ascii")


def decode_mask(text: str) -> np.ndarray:
    """The stored mask as uint8 0/1 ``(R, R)``."""
    try:
        png = np.frombuffer(base64.b64decode(text, validate=True), np.uint8)
    except (binascii.Error, ValueError, TypeError):
        png = np.zeros(0, np.uint8)
    mask = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) if png.size else None
    if mask is None:
        raise FacelabError("an applied XSeg mask is damaged; run `facelab xseg apply` on the faceset again")
    return (mask > 127).astype(np.uint8)


def has_applied_mask(meta: FaceMeta) -> bool:
    return KEY in meta.extra


def set_applied_mask(meta: FaceMeta, mask: np.ndarray) -> None:
    meta.extra[KEY] = encode_mask(mask)


def remove_applied_mask(meta: FaceMeta) -> bool:
    """Delete the applied mask; whether there was one."""
    return meta.extra.pop(KEY, None) is not None


def _resized(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0/1 mask as float32 at ``size`` (soft at the edge when resampled)."""
    mask = mask.astype(np.float32)
    if mask.shape[0] == size:
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA if size < mask.shape[0] else cv2.INTER_LINEAR)


def applied_mask(meta: FaceMeta, size: int | None = None) -> np.ndarray | None:
    """The applied mask as float32 0..1 at ``size`` (default: the face's size), or None."""
    return _resized(decode_mask(meta.extra[KEY]), size or meta.size) if has_applied_mask(meta) else None


def best_mask(meta: FaceMeta, size: int | None = None) -> np.ndarray | None:
    """The best segmentation of the face, float32 0..1 at ``size``: the applied XSeg mask, else the
    hand-made label, else None (the caller decides between a landmark hull and an error)."""
    mask = applied_mask(meta, size)
    if mask is None:
        label = label_mask(meta)
        mask = None if label is None else _resized(label, size or meta.size)
    return mask
