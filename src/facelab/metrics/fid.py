"""Frechet Inception Distance between two image sets, with a choice of feature extractor.

FID is only comparable between numbers made with the same extractor, so every result carries the
extractor's name (``fid[dlib-resnet128]``, ``fid[inception-v3]``). The standard Inception-v3 weights
cannot be downloaded at run time here; :mod:`facelab.metrics.inception` loads them from a path, and the
offline default is dlib's face-recognition ResNet, whose weights ship in a pip package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from facelab.core.errors import FacelabError

EXTRACTORS = ("dlib-resnet128", "inception-v3")


class FeatureExtractor(Protocol):
    name: str

    def __call__(self, images_bgr: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) BGR uint8 -> (N, D) float64 features."""


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2) (same eigenvalues as S1 S2). Unlike a general matrix square root this
    stays real and exact for the rank-deficient covariances that small sets give.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise FacelabError(f"FID statistics do not match: means {mu1.shape} / {mu2.shape}, "
                           f"covariances {sigma1.shape} / {sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean))


def _centred(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise FacelabError(f"FID needs at least 2 images per set, got {features.shape[0] if features.ndim else 0}")
    mean = features.mean(axis=0)
    return mean, features - mean


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, centred = _centred(features)
    return mean, centred.T @ centred / (len(centred) - 1)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets (N, D).

    Sets smaller than the feature dimension (Inception's 2048 against a few hundred test images) take a
    shortcut with the same value: with centred features A and B, the nonzero eigenvalues of S1 S2 are the
    squared singular values of A B^T / sqrt((n1 - 1)(n2 - 1)), so tr((S1 S2)^(1/2)) needs one n1 x n2 SVD
    instead of D x D covariances and eigendecompositions (seconds instead of minutes at D = 2048).
    """
    (mu1, ca), (mu2, cb) = _centred(a), _centred(b)
    if min(len(ca), len(cb)) >= mu1.size or mu1.shape != mu2.shape:
        return frechet_distance(mu1, ca.T @ ca / (len(ca) - 1), mu2, cb.T @ cb / (len(cb) - 1))
    n1, n2 = len(ca) - 1, len(cb) - 1
    tr_covmean = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + (ca**2).sum() / n1 + (cb**2).sum() / n2 - 2 * tr_covmean))


def make_extractor(name: str = "dlib-resnet128", weights: str | Path | None = None, device: str = "cpu",
                   batch_size: int = 32) -> FeatureExtractor:
    """The named extractor; ``inception-v3`` needs ``weights`` (pytorch-fid's pt_inception file)."""
    if name == "dlib-resnet128":
        from facelab.metrics.dlib_features import DlibFaceFeatures

        return DlibFaceFeatures()
    if name == "inception-v3":
        if weights is None:
            raise FacelabError("the inception-v3 extractor needs --inception-weights PATH (pytorch-fid's "
                               "pt_inception-2015-12-05 weights, .pth or .safetensors); or use dlib-resnet128")
        from facelab.metrics.inception import InceptionFeatures

        return InceptionFeatures(weights, device=device, batch_size=batch_size)
    raise FacelabError(f"unknown FID feature extractor {name!r}; use one of {', '.join(EXTRACTORS)}")
