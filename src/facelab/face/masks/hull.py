"""The landmark-hull mask: the convex hull of the 68 points, with the forehead added for larger crops.

dlib's points stop at the eyebrows, so for ``whole`` and ``head`` the eyebrow points are pushed up
along the face's vertical axis (chin -> brows) to cover the forehead, as DeepFaceLab's hull masks do.
"""

from __future__ import annotations

import cv2
import numpy as np

FOREHEAD_LIFT = {"half": 0.0, "mid": 0.0, "full": 0.0, "whole": 0.35, "head": 0.75}


def hull_points(landmarks: np.ndarray, face_type_name: str) -> np.ndarray:
    pts = np.asarray(landmarks, np.float64)
    lift = FOREHEAD_LIFT.get(face_type_name, 0.0)
    if lift > 0:
        brows = pts[17:27]
        chin = pts[8]
        brow_mid = brows.mean(0)
        up = brow_mid - chin  # chin -> brows, as long as the lower face
        forehead = brows + up * lift
        pts = np.concatenate([pts, forehead])
    return pts


def hull_mask(landmarks: np.ndarray, height: int, width: int, face_type_name: str = "full") -> np.ndarray:
    """A float32 mask (0/1) of the face hull in an image of the given size."""
    mask = np.zeros((height, width), np.float32)
    hull = cv2.convexHull(np.round(hull_points(landmarks, face_type_name)).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1.0)
    return mask
