"""Template fusion: several faces of one person combined into one Gaussian (PFE, Sec. 3.4)."""

from __future__ import annotations

import numpy as np


def fuse(mu: np.ndarray, sigma_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision-weighted mean and combined variance of ``N`` Gaussians, per dimension.

    ``1/sigma^2 = sum_i 1/sigma_i^2`` and ``mu = sigma^2 * sum_i mu_i / sigma_i^2``: the posterior of one
    latent feature seen ``N`` times, so sharp faces count more and the template is surer than any member.
    Means are L2-normalised first, as everywhere in PFE scoring.
    """
    mu = np.asarray(mu, np.float64)
    sigma_sq = np.asarray(sigma_sq, np.float64)
    if mu.ndim != 2 or mu.shape != sigma_sq.shape or len(mu) == 0:
        raise ValueError(f"fuse needs matching (N, D) arrays with N >= 1, got {mu.shape} and {sigma_sq.shape}")
    mu = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    precision = (1.0 / sigma_sq).sum(0)
    fused_sq = 1.0 / precision
    return fused_sq * (mu / sigma_sq).sum(0), fused_sq
