"""The offline default FID feature extractor: dlib's 128-d face-recognition ResNet.

Its weights ship in the ``face-recognition-models`` pip package, so FID works without a download. The
network expects a 150x150 face chip aligned like ``dlib.get_face_chip``; for CelebA-style centre crops
we resize the whole (already face-centred) image to 150x150 instead of detecting and aligning, which is
close enough for comparing two sets preprocessed the same way, but these numbers are not comparable
with Inception FIDs from papers.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.core.errors import FacelabError

CHIP_SIZE = 150
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DlibFaceFeatures:
    name = "dlib-resnet128"

    def __init__(self):
        try:
            import dlib  # noqa: F401 - here only for the install hint
        except ImportError:
            raise FacelabError("the dlib-resnet128 extractor needs dlib; run: pip install dlib-bin") from None
        from facelab.detect.dlib_models import loaded

        self._net = loaded("face_recognition_model_v1", MODEL_FILE)

    def __call__(self, images_bgr: np.ndarray) -> np.ndarray:
        chips = [np.ascontiguousarray(cv2.resize(img, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA
                                                 if img.shape[0] > CHIP_SIZE else cv2.INTER_LINEAR)[:, :, ::-1])
                 for img in images_bgr]
        if not chips:
            return np.zeros((0, 128))
        return np.asarray([np.asarray(d) for d in self._net.compute_face_descriptor(chips)], np.float64)
