"""Which person does an aligned face show? dlib's 128-d embedding judged by the calibrated same-person rule.

Swap training reports it on held-out faces (each dst face swapped to src against the src person and the
dst person), ``faceset keep --like`` and ``faceset sort --by identity`` use it on facesets. Faces are
aligned crops; the chip dlib expects is cut from their stored 68 landmarks, so no detection runs. The
rule is :func:`facelab.pfe.rule.default_rule`: the L2 distance of the raw embeddings (dlib's are not
centred, so cosine is the wrong score) with the threshold fitted on LFW, the same rule as
``facelab identity``. A face is compared with a person by its mean distance to that person's faces.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import numpy as np

from facelab.core.errors import FacelabError
from facelab.metrics.sharpness import BLOB_BELOW
from facelab.pfe.rule import SameRule, default_rule


class IdentityProbe:
    def __init__(self, rule: SameRule | None = None):
        from facelab.detect.dlib_models import DlibEmbedder

        self.rule = rule or default_rule()
        if self.rule.metric == "mls" or self.rule.backbone != "dlib":
            raise FacelabError(f"the identity probe embeds with dlib and has no uncertainty; its rule must be an L2 or "
                               f"cosine rule for the dlib backbone, not {self.rule.describe()}")
        self._embedder = DlibEmbedder()
        self._finder = None

    def embed(self, faces: Iterable[np.ndarray], landmarks: Iterable[np.ndarray], chunk: int = 64) -> np.ndarray:
        """dlib embeddings ``(N, 128)`` as the network gives them (not normalised) of aligned BGR faces (uint8,
        or float in 0..1; sizes may differ) with their landmarks in their own pixels. ``faces`` may be a
        generator: ``chunk`` faces at a time are cut into chips and embedded in one network call, so a large
        faceset is never all in memory."""
        pairs, parts = zip(faces, landmarks), []
        while batch := list(islice(pairs, chunk)):
            chips = [self._embedder.chip(_uint8(f), lm) for f, lm in batch]
            parts.append(self._embedder.embed_chips(chips, self.rule.views))
        return np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)

    def detectable(self, faces: Iterable[np.ndarray]) -> np.ndarray:
        """Whether HOG (searched again at twice the size, as ``facelab identity`` does) finds a face in each
        aligned crop. A face that has lost its features is found by nothing, while its embedding, taken
        at the stored landmarks, can still land near a real person's."""
        if self._finder is None:
            from facelab.pfe.features import FaceFinder

            self._finder = FaceFinder()
        return np.array([self._finder.detect(_uint8(f))[0] is not None for f in faces], bool)

    def judge(self, faces: np.ndarray, landmarks: np.ndarray, people: dict[str, np.ndarray],
              detail: np.ndarray) -> dict[str, float]:
        """Who generated aligned faces are: for each person (name -> embeddings of real faces) the mean score
        to them (``<metric>_<name>``) and the share the rule calls them (``is_<name>``), with ``found``, the
        share of faces a detector finds. A face is judged only when it is found and holds at least
        :data:`~facelab.metrics.sharpness.BLOB_BELOW` of a real face's detail (``detail``, per face, from
        :func:`~facelab.metrics.sharpness.sharpness_ratio`): dlib's embedding of a featureless blob, taken
        at the real face's landmarks, lands near the src person's faces (docs/training.md), so an unjudged
        face is nobody."""
        found = self.detectable(faces)
        judged = found & (np.asarray(detail) >= BLOB_BELOW)
        vectors = self.embed(faces, landmarks)
        out = {"found": float(found.mean())}
        for name, person in people.items():
            scores = self.scores(vectors, person)
            out[f"{self.rule.metric}_{name}"] = float(scores.mean())
            out[f"is_{name}"] = float((self.same(scores) & judged).mean())
        return out

    def scores(self, vectors: np.ndarray, person: np.ndarray) -> np.ndarray:
        """Each embedding's mean score (by default L2 distance) to the embeddings of one person's faces."""
        ones = np.ones_like
        return self.rule.person_scores(vectors, ones(vectors), person, ones(person))

    def same(self, scores: np.ndarray) -> np.ndarray:
        return self.rule.same(scores)

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """All pair scores of a set of embeddings as a matrix, turned so that lower means more alike."""
        ones = np.ones_like(vectors)
        s = self.rule.score_matrix(vectors, ones, vectors, ones)
        return s if self.rule.lower_is_same else -s


def _uint8(face: np.ndarray) -> np.ndarray:
    return face if face.dtype == np.uint8 else (np.clip(face, 0, 1) * 255).round().astype(np.uint8)
