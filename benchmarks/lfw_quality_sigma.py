"""Can a per-face quality signal, as PFE's variance, lift dlib's LFW pairs above plain L2? Prints JSON.

PFE beats its backbone only if the uncertainty it gives each face says which pairs to trust. For dlib the
module reads the chip's detail (``chip_detail``); the other per-face signal dlib gives is the length of its
raw embedding. This scores MLS on the raw embeddings with one scalar variance per face,
sigma^2 = exp(alpha + beta * z), z the signal standardised over LFW's faces, for a grid of (alpha, beta),
beta = 0 being L2 itself. Two figures per signal: the best grid point's 10-fold accuracy with the test
folds in view (an upper bound no trained module could exceed with this family), and the nested figure
(alpha, beta and the threshold chosen on the nine other folds), against L2's. It reads the embeddings
``facelab pfe eval`` caches (run that first; otherwise this embeds LFW, about 6 min on 2 cores).

    python3 benchmarks/lfw_quality_sigma.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facelab.core.device import device_name
from facelab.pfe.data import parse_pairs
from facelab.pfe.evaluate import embed_pairs
from facelab.pfe.features import FaceFinder
from facelab.pfe.losses import mutual_likelihood_score
from facelab.pfe.model import PFEModel
from facelab.pfe.verify import best_threshold, kfold_accuracy

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"
ALPHAS = np.log([3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
_STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]  # accuracy collapses by |beta| = 0.25
BETAS = np.array([*(-x for x in reversed(_STEPS)), 0.0, *_STEPS])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=str(LFW / "pairs.txt"))
    parser.add_argument("--data", default=str(LFW / "images"))
    args = parser.parse_args()
    pairs = parse_pairs(args.pairs, args.data)
    model = PFEModel.deterministic("dlib", "cpu")
    pe = embed_pairs(model, pairs, FaceFinder(pick="centre", cnn_fallback=True))
    keep = pe.both_found
    a, b, same, folds = pe.a[keep], pe.b[keep], pairs.same[keep], pairs.folds[keep]
    mu = pe.emb.mu.astype(np.float64)
    d2 = ((mu[a] - mu[b]) ** 2).sum(1)
    mu_a, mu_b = torch.from_numpy(mu[a]), torch.from_numpy(mu[b])
    signals = {"embedding_norm": np.linalg.norm(mu, axis=1), "chip_detail_mean": pe.emb.features.mean(1)}
    report = {"benchmark": "lfw_quality_sigma", "pairs_scored": int(keep.sum()),
              "l2_accuracy": round(kfold_accuracy(-d2, same, folds).mean, 5)}
    grid = [(al, be) for al in ALPHAS for be in BETAS]
    found = pe.emb.found
    for name, signal in signals.items():
        z = (signal - signal[found].mean()) / signal[found].std()

        def mls(point):  # the same log sigma^2 in every dimension of a face
            log_var = torch.from_numpy(point[0] + point[1] * z)[:, None].expand(-1, mu.shape[1])
            return mutual_likelihood_score(mu_a, log_var[a], mu_b, log_var[b]).numpy()

        scores = {p: mls(p) for p in grid}
        in_view = {p: kfold_accuracy(scores[p], same, folds).mean for p in grid}
        best = max(grid, key=lambda p: (in_view[p], -abs(p[1])))
        correct = 0
        for k in np.unique(folds):
            train, test = folds != k, folds == k
            point = max(grid, key=lambda p: (kfold_accuracy(scores[p][train], same[train], folds[train]).mean, -abs(p[1])))
            s = scores[point]
            correct += int(((s[test] > best_threshold(s[train], same[train])) == same[test]).sum())
        report[name] = {"best_in_view": {"accuracy": round(in_view[best], 5), "sigma_sq_level": float(np.exp(best[0])),
                                         "beta": float(best[1])},
                        "nested_accuracy": round(correct / len(same), 5)}
    report.update(device_name=device_name(torch.device("cpu")), date=time.strftime("%Y-%m-%d %H:%M"))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
