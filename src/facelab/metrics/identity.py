"""Identity similarity: which person does a face show? Cosine of dlib's 128-d face embeddings (offline).

Swap training reports it on held-out faces: each dst face swapped to src is compared with the src
person and with the dst person (the mean embedding of their held-out faces). A swap that carries the
source identity moves towards src as training goes on; SSIM alone cannot tell, since a model that
returns the dst face unchanged reconstructs perfectly. Faces are aligned crops; the chip dlib expects is
cut from their 68 landmarks, so no detection runs.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import numpy as np

# Cosine on dlib's 128-d embedding matching its published same-person rule, distance < 0.6: its vectors
# have norm ~1.45, so 1 - 0.6^2 / (2 * 1.45^2) = 0.91. Another backbone needs its own value (pfe eval
# prints the thresholds it picks).
SAME_PERSON_COSINE = 0.91


class IdentityProbe:
    def __init__(self):
        from facelab.detect.dlib_models import DlibEmbedder

        self._embedder = DlibEmbedder()

    def embed(self, faces: Iterable[np.ndarray], landmarks: Iterable[np.ndarray], chunk: int = 64) -> np.ndarray:
        """Unit embeddings ``(N, 128)`` of aligned BGR faces (uint8, or float in 0..1; sizes may differ) with
        their landmarks in their own pixels. ``faces`` may be a generator: ``chunk`` faces at a time are
        cut into chips and embedded in one network call, so a large faceset is never all in memory."""
        pairs, parts = zip(faces, landmarks), []
        while batch := list(islice(pairs, chunk)):
            parts.append(self._embedder.embed_chips([self._embedder.chip(_uint8(f), lm) for f, lm in batch]))
        if not parts:
            return np.zeros((0, 128), np.float32)
        vectors = np.concatenate(parts)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def template(self, faces: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One person: the normalised mean of the unit embeddings of their faces."""
        mean = self.embed(faces, landmarks).mean(0)
        return mean / np.linalg.norm(mean)


def _uint8(face: np.ndarray) -> np.ndarray:
    return face if face.dtype == np.uint8 else (np.clip(face, 0, 1) * 255).round().astype(np.uint8)
