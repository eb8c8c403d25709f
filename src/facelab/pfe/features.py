"""From image files to backbone features: finding the face, and the augmented feature pool PFE trains on.

The backbone is frozen during PFE training, so its features are computed once per augmented copy and
the uncertainty module then trains on that pool at the speed of a small MLP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.detect.registry import make_detector, make_landmarker
from facelab.io.images import read_image
from facelab.pfe.augment import augment
from facelab.pfe.backbones import Backbone
from facelab.pfe.data import IdentityFolder

log = logging.getLogger("facelab")


class FaceFinder:
    """68 landmarks of the largest face in an image, or of the whole image when it is an aligned crop."""

    def __init__(self, aligned: bool = False, detector: str = "hog"):
        self.aligned = aligned
        self.detector = None if aligned else make_detector(detector)
        self.landmarker = make_landmarker("dlib68")

    def find(self, image: np.ndarray) -> np.ndarray | None:
        h, w = image.shape[:2]
        if self.aligned:
            return self.landmarker.landmarks(image, (0, 0, w - 1, h - 1))
        dets = self.detector.detect(image)
        if not dets and min(h, w) < 400:  # HOG misses faces under ~80 px: retry at twice the size
            dets = [d.scaled(0.5) for d in self.detector.detect(cv2.resize(image, (2 * w, 2 * h)))]
        if not dets:
            return None
        return self.landmarker.landmarks(image, max(dets, key=lambda d: d.size).box)


def encode_in_chunks(backbone: Backbone, crops: Iterable[np.ndarray], chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Run the backbone over crops ``chunk`` at a time (bounded memory, batched calls)."""
    mus, feats, batch = [], [], []

    def flush():
        mu, feat = backbone.encode(np.stack(batch))
        mus.append(mu)
        feats.append(feat.astype(np.float32))
        batch.clear()

    for crop in crops:
        batch.append(crop)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    if not mus:
        return np.zeros((0, backbone.dim), np.float32), np.zeros((0, backbone.feature_dim), np.float32)
    return np.concatenate(mus), np.concatenate(feats)


def embed_files(paths: list[Path], backbone: Backbone, finder: FaceFinder, desc: str = "faces"):
    """``(mu, features, found)`` for image files; rows of files without a face are zero, ``found`` False."""
    found = np.zeros(len(paths), bool)

    def crops():
        for i, path in enumerate(progress(paths, desc=desc, unit="img")):
            image = read_image(path)
            lms = finder.find(image)
            if lms is not None:
                found[i] = True
                yield backbone.prepare(image, lms)

    mu_found, feat_found = encode_in_chunks(backbone, crops())
    mu = np.zeros((len(paths), backbone.dim), np.float32)
    feats = np.zeros((len(paths), backbone.feature_dim), np.float32)
    mu[found], feats[found] = mu_found, feat_found
    return mu, feats, found


@dataclass
class FeaturePool:
    features: np.ndarray  # (N, F) float32 (float16 overflows on sphere feature maps)
    mu: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,)
    degraded: np.ndarray  # (N,) bool: blurred or shrunk copy


def build_pool(ident: IdentityFolder, backbone: Backbone, finder: FaceFinder, copies: int, degrade_prob: float,
               rng: np.random.Generator) -> FeaturePool:
    """``copies`` augmented versions of every image with a face, encoded by the frozen backbone."""
    labels, degraded, missing = [], [], []

    def crops():
        for path, label in progress(list(zip(ident.paths, ident.labels)), desc="feature pool", unit="img"):
            image = read_image(path)
            lms = finder.find(image)
            if lms is None:
                missing.append(path)
                continue
            for _ in range(copies):
                img, lm, was_degraded = augment(image, lms, rng, degrade_prob)
                labels.append(label)
                degraded.append(was_degraded)
                yield backbone.prepare(img, lm)

    mu, feats = encode_in_chunks(backbone, crops())
    if missing:
        log.warning("no face found in %d image(s), skipped (first: %s)", len(missing), missing[0])
    if len(mu) == 0:
        raise FacelabError(f"no face found in any image under {ident.paths[0].parent.parent}; "
                           "check the images, or pass --aligned if they are aligned face crops")
    return FeaturePool(feats, mu, np.array(labels, np.int64), np.array(degraded, bool))
