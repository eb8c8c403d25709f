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
from facelab.pfe.cache import EmbeddingCache, FileEmbeddings
from facelab.pfe.data import IdentityFolder

log = logging.getLogger("facelab")


PICKS = ("largest", "centre")


class FaceFinder:
    """68 landmarks of one face in an image, or of the whole image when it is an aligned crop.

    Of several faces it takes the largest (``pick="largest"``) or the one nearest the image centre
    (``"centre"``: LFW-style images are centred on the labelled person, and a larger face beside them
    is somebody else). HOG misses faces under ~80 px, so small images are searched again at twice the
    size; with ``cnn_fallback`` the slower dlib CNN detector then tries the faces HOG missed altogether
    (turned heads, dark photos). :meth:`detect` also says which of these passes found the face.
    """

    def __init__(self, aligned: bool = False, detector: str = "hog", pick: str = "largest", cnn_fallback: bool = False):
        if pick not in PICKS:
            raise FacelabError(f"unknown face pick {pick!r}; use one of {', '.join(PICKS)}")
        self.aligned, self.pick, self.detector_name = aligned, pick, detector
        self.detector = None if aligned else make_detector(detector)
        self.fallback = make_detector("dlib-cnn") if cnn_fallback and not aligned else None
        self.landmarker = make_landmarker("dlib68")

    @property
    def fingerprint(self) -> str:
        """What decides the landmarks found (the key of cached embeddings)."""
        if self.aligned:
            return "aligned"
        return f"{self.detector_name}|{self.pick}|{'cnn' if self.fallback else 'no-cnn'}"

    def detect(self, image: np.ndarray) -> tuple[np.ndarray | None, str]:
        """``(landmarks, how)``: how is ``aligned``, the detector's name, ``NAME-2x`` or ``dlib-cnn``;
        ``(None, "none")`` when no pass found a face."""
        h, w = image.shape[:2]
        if self.aligned:
            return self.landmarker.landmarks(image, (0, 0, w - 1, h - 1)), "aligned"
        dets, how = self.detector.detect(image), self.detector_name
        if not dets and min(h, w) < 400:
            dets, how = [d.scaled(0.5) for d in self.detector.detect(cv2.resize(image, (2 * w, 2 * h)))], f"{how}-2x"
        if not dets and self.fallback is not None:
            dets, how = self.fallback.detect(image), self.fallback.name
        if not dets:
            return None, "none"
        if self.pick == "centre":
            def off_centre(d):
                return np.hypot((d.box[0] + d.box[2] - w) / 2, (d.box[1] + d.box[3] - h) / 2)
            best = min(dets, key=off_centre)
        else:
            best = max(dets, key=lambda d: d.size)
        return self.landmarker.landmarks(image, best.box), how

    def find(self, image: np.ndarray) -> np.ndarray | None:
        return self.detect(image)[0]


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


def embed_files(paths: list[Path], backbone: Backbone, finder: FaceFinder, desc: str = "faces",
                cache: bool = False) -> FileEmbeddings:
    """Backbone outputs of image files, in order. With ``cache`` the rows already in the on-disk
    :class:`EmbeddingCache` of this backbone and finder are reused and the new ones added to it."""
    store = EmbeddingCache(f"{backbone.fingerprint}|{finder.fingerprint}") if cache else None
    cached, hit = store.lookup(paths) if store else (None, np.zeros(len(paths), bool))
    todo = [p for p, h in zip(paths, hit) if not h]
    new = FileEmbeddings.empty(len(todo), backbone.dim, backbone.feature_dim)

    def crops():
        for i, path in enumerate(progress(todo, desc=desc, unit="img")):
            image = read_image(path)
            lms, new.how[i] = finder.detect(image)
            if lms is not None:
                new.found[i] = True
                yield backbone.prepare(image, lms)

    mu, feats = encode_in_chunks(backbone, crops())
    new.mu[new.found], new.features[new.found] = mu, feats
    if store and todo:
        store.store(todo, new)
    if cached is None:
        return new
    out = FileEmbeddings.empty(len(paths), backbone.dim, backbone.feature_dim)
    out.put(hit, cached)
    out.put(~hit, new)
    return out


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
