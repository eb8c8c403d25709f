"""Cutting a face out of any photo the way CelebA's aligned images are cut, so the generator sees what it
was trained on.

CelebA's ``img_align_celeba`` images are 178x218 similarity-aligned faces; StarGAN uses their centre
178x178 square. On the 4740 of the 4800 images of ``../shared/data/celeba`` where dlib finds a face, the
mean of dlib's 68 landmarks within that square is facelab's mean face (:data:`facelab.align.face_types.MEAN_FACE`)
scaled by 72.15 px, turned by 0.1 degrees and placed with 0.49 px rms residual: a face type with padding
0.734 and shift 0.334 (wider than facelab's ``head`` type: CelebA keeps hair and background).
:func:`measure_face_type` repeats that measurement (``docs/stargan.md`` has the command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from facelab.align.face_types import ALIGN_POINTS, MEAN_FACE, FaceType
from facelab.align.transform import umeyama
from facelab.detect.base import Detector, Landmarker
from facelab.io.images import read_image

CELEBA_SIZE = (178, 218)  # width, height of CelebA's aligned images
CELEBA_FACE = FaceType("celeba", padding=0.734, shift=0.334)  # in their centre 178x178 square


def crop_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 matrix taking photo pixels to a ``size`` square aligned like CelebA's centre crop."""
    return umeyama(np.asarray(landmarks)[ALIGN_POINTS], CELEBA_FACE.template(size))


def fit_face_type(mean_landmarks: np.ndarray) -> FaceType:
    """The face type whose template best matches mean 68-point landmarks of 178x218 CelebA images."""
    width, height = CELEBA_SIZE
    top = (height - width) // 2  # the centre square starts this many rows down
    mat = umeyama(MEAN_FACE, np.asarray(mean_landmarks)[ALIGN_POINTS] - [0, top])
    scale = float(np.sqrt(np.linalg.det(mat[:, :2])))
    padding = (width / scale - 1) / 2
    return FaceType("celeba", padding=padding, shift=float(mat[1, 2]) / scale - padding)


def measure_face_type(paths: Iterable[Path], detector: Detector, landmarker: Landmarker) -> tuple[FaceType, int]:
    """:func:`fit_face_type` of the mean landmarks of the largest face in each image; also how many had one."""
    found = []
    for path in paths:
        image = read_image(path)
        faces = detector.detect(image)
        if faces:
            found.append(landmarker.landmarks(image, max(faces, key=lambda d: d.size).box))
    return fit_face_type(np.mean(found, axis=0)), len(found)
