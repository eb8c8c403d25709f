"""The calibrated same-person rule: one score, one threshold fitted on real pairs, used by every identity figure.

dlib's 128-d embeddings are not centred on the origin (every face sits in one narrow cone, so even two
strangers have cosine ~0.8), and dlib was trained for Euclidean distance with the rule "distance < 0.6".
So the default rule is the L2 distance of the raw embeddings with the threshold ``facelab pfe eval``
fitted on LFW's 6000 pairs (``dlib_lfw_rule.json``, shipped beside this file). A trained PFE model
carries its own ``rule.json`` once ``pfe eval --save-rule`` has calibrated it.

A face is compared with a *person* (several faces: a faceset, a video, held-out training faces) by the
mean of its scores to each of that person's faces. The mean of pair scores has the expected value of a
single pair score, so the threshold fitted on pairs holds for it; the distance to the mean embedding, or
PFE's fused template, would be shorter for everyone and would need a threshold of its own (docs/pfe.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from facelab.core.config import config_from_dict, config_to_dict, option
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text
from facelab.detect.chip_views import MAX_VIEWS
from facelab.pfe.verify import best_threshold, cosine_scores, mls_scores

METRICS = ("l2", "cosine", "mls")
RULE_FILE = "rule.json"
DEFAULT_RULE_PATH = Path(__file__).with_name("dlib_lfw_rule.json")


@dataclass(frozen=True)
class SameRule:
    """Same person when the ``metric`` score of two faces passes ``threshold``: an L2 distance below it, a
    cosine or MLS above it."""

    metric: str = option("l2", "score of two faces: L2 distance of the embeddings, their cosine, or PFE's MLS",
                         choices=METRICS)
    threshold: float = option(0.6, "the decision threshold on that score")
    backbone: str = option("dlib", "the backbone whose embeddings the threshold was fitted on")
    views: int = option(1, "test-time views of each face averaged into its embedding when the threshold was "
                           "fitted (1: the face alone, 2: and its mirror, ...); every command using the rule embeds "
                           "the same way", low=1, high=MAX_VIEWS)
    fitted_on: str = option("", "the pairs it was fitted on")
    accuracy_mean: float | None = option(None, "10-fold accuracy of this score on those pairs (threshold chosen on 9 folds)")
    accuracy_std: float | None = option(None, "standard deviation of the 10 fold accuracies")

    @property
    def lower_is_same(self) -> bool:
        return self.metric == "l2"

    def same(self, scores: np.ndarray | float) -> np.ndarray:
        scores = np.asarray(scores, np.float64)
        return scores < self.threshold if self.lower_is_same else scores > self.threshold

    def describe(self) -> str:
        sign = "<" if self.lower_is_same else ">"
        where = f", fitted on {self.fitted_on}" if self.fitted_on else ""
        return f"{self.metric} {sign} {self.threshold:.4g}{where}"

    def pair_scores(self, mu1: np.ndarray, sigma_sq1: np.ndarray, mu2: np.ndarray, sigma_sq2: np.ndarray) -> np.ndarray:
        """The score of each row pair."""
        return pair_scores(self.metric, mu1, sigma_sq1, mu2, sigma_sq2)

    def score_matrix(self, mu1: np.ndarray, sigma_sq1: np.ndarray, mu2: np.ndarray, sigma_sq2: np.ndarray) -> np.ndarray:
        """The score of every face of the first set with every face of the second, ``(N, M)``."""
        return score_matrix(self.metric, mu1, sigma_sq1, mu2, sigma_sq2)

    def person_scores(self, mu: np.ndarray, sigma_sq: np.ndarray, person_mu: np.ndarray,
                      person_sigma_sq: np.ndarray) -> np.ndarray:
        """Each face's mean score to the faces of one person (``(N, D)`` against ``(M, D)``, returns ``(N,)``)."""
        return self.score_matrix(np.atleast_2d(mu), np.atleast_2d(sigma_sq), person_mu, person_sigma_sq).mean(1)


def pair_scores(metric: str, mu1: np.ndarray, sigma_sq1: np.ndarray, mu2: np.ndarray, sigma_sq2: np.ndarray) -> np.ndarray:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    if metric == "l2":
        return np.linalg.norm(mu1 - mu2, axis=1)
    if metric == "cosine":
        return cosine_scores(mu1, mu2)
    if metric == "mls":
        return mls_scores(mu1, sigma_sq1, mu2, sigma_sq2)
    raise ValueError(f"unknown metric {metric!r}")


def score_matrix(metric: str, mu1: np.ndarray, sigma_sq1: np.ndarray, mu2: np.ndarray, sigma_sq2: np.ndarray,
                 chunk: int = 64) -> np.ndarray:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    if metric == "l2":
        sq = (mu1**2).sum(1)[:, None] + (mu2**2).sum(1)[None] - 2 * mu1 @ mu2.T
        return np.sqrt(np.maximum(sq, 0))
    if metric == "cosine":
        return (mu1 / np.linalg.norm(mu1, axis=1, keepdims=True)) @ (mu2 / np.linalg.norm(mu2, axis=1, keepdims=True)).T
    out = np.empty((len(mu1), len(mu2)))
    m = len(mu2)
    for i in range(0, len(mu1), chunk):
        a, s = mu1[i : i + chunk], sigma_sq1[i : i + chunk]
        rows = np.repeat(np.arange(len(a)), m)
        out[i : i + chunk] = pair_scores(metric, a[rows], s[rows], np.tile(mu2, (len(a), 1)),
                                         np.tile(sigma_sq2, (len(a), 1))).reshape(len(a), m)
    return out


def fit_threshold(metric: str, scores: np.ndarray, same: np.ndarray) -> float:
    """The most accurate threshold on these pairs, in the metric's own direction."""
    sign = -1.0 if metric == "l2" else 1.0
    return sign * best_threshold(sign * np.asarray(scores, np.float64), same)


def load_rule(path: str | Path) -> SameRule:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FacelabError(f"cannot read the same-person rule {path} ({exc}); write it again with "
                           "'facelab pfe eval --save-rule'") from None
    return config_from_dict(SameRule, data, source=str(path))


def save_rule(rule: SameRule, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(config_to_dict(rule), indent=2) + "\n")


@lru_cache(maxsize=1)
def default_rule() -> SameRule:
    """dlib's L2 rule with the threshold fitted on LFW (see the module docstring)."""
    return load_rule(DEFAULT_RULE_PATH)
