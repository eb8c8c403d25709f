"""Test-time views of a face chip: the embedding of a face is the mean of its views' embeddings.

dlib's own ``compute_face_descriptor(chip, num_jitters=N)`` averages N randomly jittered copies of the chip
(its published 99.38 % on LFW uses N = 100), but its jitters come out different on every call, so the same
face embeds to another vector each time and no cache or threshold can rely on it. These views are a fixed,
ordered list instead: the chip itself, its mirror image, then small rotations, zooms and shifts of both, within
the range of dlib's ``jitter_image`` (rotation up to 3 degrees, the crop 1-4 % tighter, moved by up to 2 % of
the face, mirrored half the time). ``views=2`` is the chip and
its mirror; every ``views=N`` is the first N, so a larger N only adds views. What each count gives on LFW
is in docs/pfe.md.
"""

from __future__ import annotations

import cv2
import numpy as np

# (rotation in degrees, zoom, shift x, shift y in pixels of a 150 px chip, mirrored first)
VIEWS: tuple[tuple[float, float, float, float, bool], ...] = (
    (0.0, 1.0, 0.0, 0.0, False),
    (0.0, 1.0, 0.0, 0.0, True),
    (3.0, 1.0, 0.0, 0.0, False),
    (-3.0, 1.0, 0.0, 0.0, True),
    (0.0, 1.03, 2.0, 2.0, False),
    (0.0, 1.03, -2.0, 2.0, True),
    (1.5, 1.02, 2.0, -2.0, False),
    (-1.5, 1.02, -2.0, -2.0, True),
    (-3.0, 1.01, 0.0, 0.0, False),
    (3.0, 1.01, 0.0, 0.0, True),
    (0.0, 1.04, 0.0, -3.0, False),
    (0.0, 1.04, 0.0, 3.0, True),
)
MAX_VIEWS = len(VIEWS)


def chip_view(chip: np.ndarray, index: int) -> np.ndarray:
    """View ``index`` of :data:`VIEWS` of one ``(H, W, 3)`` uint8 chip (shifts scale with the chip's size)."""
    degrees, zoom, dx, dy, mirror = VIEWS[index]
    out = chip[:, ::-1] if mirror else chip
    if degrees or zoom != 1.0 or dx or dy:
        h, w = out.shape[:2]
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, zoom)
        m[:, 2] += (dx * w / 150, dy * h / 150)
        out = cv2.warpAffine(np.ascontiguousarray(out), m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(out)


def check_views(views: int) -> int:
    """``views`` as an int in 1..:data:`MAX_VIEWS`, or one clear error."""
    from facelab.core.errors import FacelabError

    if not isinstance(views, (int, np.integer)) or isinstance(views, bool) or not 1 <= views <= MAX_VIEWS:
        raise FacelabError(f"views must be a whole number from 1 to {MAX_VIEWS}, not {views!r}")
    return int(views)
