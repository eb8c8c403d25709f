"""Backbone outputs of image files kept on disk, so a second evaluation of LFW takes seconds instead of ~20 min.

One ``.npz`` per backbone and face finder under ``$FACELAB_CACHE/embeddings``. Each image's row is keyed
by its absolute path and remembered with the file's size and modification time: a changed file is
embedded again, a subset of a cached set (a few LFW folds in a test) is served from the same file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.core.files import atomic_path, cache_root


@dataclass
class FileEmbeddings:
    """Backbone outputs of image files; rows of files without a face are zero and ``found`` is False."""

    mu: np.ndarray  # (N, D)
    features: np.ndarray  # (N, F): what the uncertainty module reads
    found: np.ndarray  # (N,) bool
    how: np.ndarray  # (N,) str: which detector pass found the face (FaceFinder.detect), "none" if none

    @classmethod
    def empty(cls, n: int, dim: int, feature_dim: int) -> "FileEmbeddings":
        return cls(np.zeros((n, dim), np.float32), np.zeros((n, feature_dim), np.float32), np.zeros(n, bool),
                   np.full(n, "none", dtype="<U16"))

    def put(self, rows: np.ndarray, part: "FileEmbeddings") -> None:
        self.mu[rows], self.features[rows], self.found[rows], self.how[rows] = part.mu, part.features, part.found, part.how

    def take(self, rows: np.ndarray) -> "FileEmbeddings":
        return FileEmbeddings(self.mu[rows], self.features[rows], self.found[rows], self.how[rows])


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class EmbeddingCache:
    def __init__(self, fingerprint: str, folder: Path | None = None):
        digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:16]
        self.path = (folder or cache_root() / "embeddings") / f"{digest}.npz"
        self.fingerprint = fingerprint

    def load(self) -> dict[str, tuple[str, int]]:
        """``absolute path -> (stamp, row)`` of what is cached, and the arrays in ``self.rows``."""
        self.rows: FileEmbeddings | None = None
        if not self.path.is_file():
            return {}
        with np.load(self.path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != self.fingerprint:
                return {}
            self.rows = FileEmbeddings(z["mu"], z["features"], z["found"], z["how"])
            return {p: (s, i) for i, (p, s) in enumerate(zip(z["paths"].tolist(), z["stamps"].tolist()))}

    def lookup(self, paths: list[Path]) -> tuple[FileEmbeddings | None, np.ndarray]:
        """Cached rows for ``paths`` (None where nothing is cached) and a mask of the paths that are."""
        index = self.load()
        keys = [str(p.resolve()) for p in paths]
        hit = np.array([k in index and index[k][0] == _stamp(p) for k, p in zip(keys, paths)], bool)
        if not hit.any():
            return None, hit
        return self.rows.take(np.array([index[k][1] for k, h in zip(keys, hit) if h])), hit

    def store(self, paths: list[Path], new: FileEmbeddings) -> None:
        """Add (or replace) the rows of ``paths``; everything else cached stays."""
        index = self.load()
        fresh = [str(p.resolve()) for p in paths]
        old = [(k, stamp, row) for k, (stamp, row) in index.items() if k not in set(fresh)]
        keys = [k for k, _, _ in old] + fresh
        stamps = [stamp for _, stamp, _ in old] + [_stamp(p) for p in paths]
        rows = _concat(self.rows.take(np.array([row for *_, row in old])), new) if old else new
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, fingerprint=np.array(self.fingerprint), paths=np.array(keys), stamps=np.array(stamps),
                     mu=rows.mu, features=rows.features, found=rows.found, how=rows.how)


def _concat(a: FileEmbeddings, b: FileEmbeddings) -> FileEmbeddings:
    return FileEmbeddings(*(np.concatenate([x, y]) for x, y in
                            zip((a.mu, a.features, a.found, a.how), (b.mu, b.features, b.found, b.how))))
