"""Head pose (yaw, pitch, roll in degrees) from 68 landmarks, by solvePnP against a generic 3D face."""

from __future__ import annotations

import cv2
import numpy as np

# Approximate 3D positions (mm, nose tip at the origin, +y up, +z toward the camera) of six landmarks:
# nose tip 30, chin 8, left/right outer eye corners 36/45, left/right mouth corners 48/54.
_MODEL_POINTS = np.array([
    [0.0, 0.0, 0.0],
    [0.0, -63.6, -12.5],
    [-43.3, 32.7, -26.0],
    [43.3, 32.7, -26.0],
    [-28.9, -28.9, -24.1],
    [28.9, -28.9, -24.1],
])
_LANDMARK_IDS = [30, 8, 36, 45, 48, 54]


def estimate_pose(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """Yaw (positive: face turned to the image's right), pitch (positive: looking up), roll, in degrees."""
    pts = np.asarray(landmarks, np.float64)[_LANDMARK_IDS]
    focal = float(max(width, height))
    cam = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    model = _MODEL_POINTS * np.array([1, -1, -1])  # to OpenCV's camera frame: y down, z away
    ok, rvec, _ = cv2.solvePnP(model, pts, cam, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return 0.0, 0.0, 0.0
    rot, _ = cv2.Rodrigues(rvec)
    sy = np.hypot(rot[0, 0], rot[1, 0])
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    yaw = np.degrees(np.arctan2(-rot[2, 0], sy))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    pitch = (pitch + 180) % 360 - 180
    if pitch > 90:
        pitch -= 180
    elif pitch < -90:
        pitch += 180
    return float(yaw), float(-pitch), float(roll)
