"""Similarity transforms between a source image and an aligned face, and the warps both ways."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.align.face_types import ALIGN_POINTS, face_type


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` points to ``dst``.

    Umeyama (1991): the rotation comes from the SVD of the cross-covariance, with a reflection fix;
    returns a 2x3 matrix.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (sc**2).sum() / len(src)
    scale = (s * d).sum() / var_s if var_s > 0 else 1.0
    mat = np.zeros((2, 3))
    mat[:, :2] = scale * rot
    mat[:, 2] = mu_d - mat[:, :2] @ mu_s
    return mat


def align_matrix(landmarks: np.ndarray, size: int, face_type_name: str) -> np.ndarray:
    """The 2x3 matrix taking source-image pixels to an aligned face of ``size`` and ``face_type_name``."""
    return umeyama(np.asarray(landmarks)[ALIGN_POINTS], face_type(face_type_name).template(size))


def transform_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return pts @ mat[:, :2].T + mat[:, 2]


def invert(mat: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(mat, np.float64))


def compose(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The 2x3 matrix that applies ``first``, then ``second``."""
    second, first = np.asarray(second, np.float64), np.asarray(first, np.float64)
    return np.hstack([second[:, :2] @ first[:, :2], (second[:, :2] @ first[:, 2] + second[:, 2])[:, None]])


def warp_to_face(image: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned face out of ``image`` (borders replicate so edges carry no black bars)."""
    return cv2.warpAffine(image, mat, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def warp_to_image(face: np.ndarray, mat: np.ndarray, width: int, height: int,
                  interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Map an aligned face (or its mask) back into source-image coordinates; outside is zero."""
    return cv2.warpAffine(face, mat, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
