"""Verification scores and the LFW protocol: 10-fold accuracy with thresholds chosen on the other folds, TAR@FAR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facelab.core.config import check_range
from facelab.pfe.losses import mutual_likelihood_score


def cosine_scores(mu1: np.ndarray, mu2: np.ndarray) -> np.ndarray:
    a = mu1 / np.linalg.norm(mu1, axis=1, keepdims=True)
    b = mu2 / np.linalg.norm(mu2, axis=1, keepdims=True)
    return (a * b).sum(1)


def mls_scores(mu1: np.ndarray, sigma_sq1: np.ndarray, mu2: np.ndarray, sigma_sq2: np.ndarray) -> np.ndarray:
    """MLS of row pairs, means L2-normalised (the same function the loss uses)."""
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    n1 = mu1 / np.linalg.norm(mu1, axis=1, keepdims=True)
    n2 = mu2 / np.linalg.norm(mu2, axis=1, keepdims=True)
    return mutual_likelihood_score(t(n1), t(np.log(sigma_sq1)), t(n2), t(np.log(sigma_sq2))).numpy()


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (``score > t`` means same person) with the highest accuracy on these pairs.

    All cut points are scored at once: with scores sorted, cutting before position k gets right the
    impostors among the first k and the genuine pairs after them. Ties in score are never split.
    """
    order = np.argsort(scores, kind="stable")
    s, y = np.asarray(scores, np.float64)[order], np.asarray(same, bool)[order]
    n = len(s)
    correct = np.concatenate([[0], np.cumsum(~y)]) + np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    allowed = np.ones(n + 1, bool)
    allowed[1:n] = s[1:] > s[:-1]
    k = int(np.argmax(np.where(allowed, correct, -1)))
    if k == 0:
        return float(s[0] - 1.0)
    if k == n:
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


@dataclass
class FoldResult:
    accuracies: np.ndarray  # one per fold
    thresholds: np.ndarray  # chosen on the other folds

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> FoldResult:
    """LFW's protocol: for each fold, pick the threshold on all other folds and measure accuracy on it."""
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(folds)
    accs, thrs = [], []
    for k in np.unique(folds):
        test = folds == k
        thr = best_threshold(scores[~test], same[~test])
        accs.append(float(((scores[test] > thr) == same[test]).mean()))
        thrs.append(thr)
    return FoldResult(np.array(accs), np.array(thrs))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float, float]:
    """True-accept rate at the threshold that accepts at most ``far`` of the impostor pairs.

    Returns ``(tar, threshold, achieved_far)``. With fewer than ``1/far`` impostor pairs (LFW has 3000,
    so FAR 1e-3 allows 3) the threshold is the highest impostor score and the achieved FAR is 0.
    """
    check_range(far, "far", "TAR@FAR", above=0, high=1)
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    impostor = np.sort(scores[~same])[::-1]
    if len(impostor) == 0 or not same.any():
        raise ValueError("TAR@FAR needs both genuine and impostor pairs")
    k = int(np.floor(far * len(impostor)))
    thr = float(impostor[min(k, len(impostor) - 1)])
    return float((scores[same] > thr).mean()), thr, float((impostor > thr).mean())
