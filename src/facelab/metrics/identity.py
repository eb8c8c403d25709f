"""Identity similarity: which person does a face show? Cosine of dlib's 128-d face embeddings (offline).

Swap training reports it on held-out faces: each dst face swapped to src is compared with the src
person and with the dst person (the mean embedding of their held-out faces). A swap that carries the
source identity moves towards src as training goes on; SSIM alone cannot tell, since a model that
returns the dst face unchanged reconstructs perfectly. Faces are aligned crops; the chip dlib expects is
cut from their 68 landmarks, so no detection runs.
"""

from __future__ import annotations

import numpy as np

NAME = "dlib-resnet128"


class IdentityProbe:
    def __init__(self):
        from facelab.detect.dlib_models import DlibEmbedder

        self._embedder = DlibEmbedder()

    def embed(self, faces: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Unit embeddings ``(N, 128)`` of aligned BGR faces (uint8, or float in 0..1) with their landmarks."""
        if faces.dtype != np.uint8:
            faces = (np.clip(faces, 0, 1) * 255).round().astype(np.uint8)
        vectors = self._embedder.embed_chips([self._embedder.chip(f, lm) for f, lm in zip(faces, landmarks)])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def template(self, faces: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One person: the normalised mean of the unit embeddings of their faces."""
        mean = self.embed(faces, landmarks).mean(0)
        return mean / np.linalg.norm(mean)
