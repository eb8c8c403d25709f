"""LFW accuracy of dlib's L2 rule for every count of test-time views (``pfe eval --views N``), in one run.

``facelab pfe eval --views N`` embeds every face N times; measuring N = 1..6 that way would embed LFW 21
times over. This script finds each face once (the same ``FaceFinder`` as ``pfe eval``: centre pick, HOG,
HOG at 2x, dlib's CNN), embeds each view once, and scores every count from the running means, which are
the embeddings ``--views N`` gives. Faces are processed in ``--workers`` processes (0: one per core), as
``pfe eval`` does. Prints one JSON record: per count the 10-fold accuracy (mean, std), TAR at FAR 1e-3 and
the threshold on all pairs.

    python3 benchmarks/lfw_views.py                  # all 6000 pairs, 6 views: ~40 min on 2 cores
    python3 benchmarks/lfw_views.py --per-fold 2     # 2 matched + 2 mismatched pairs per fold (a check)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facelab.core.device import device_name
from facelab.detect.chip_views import MAX_VIEWS
from facelab.io.images import read_image
from facelab.pfe.backbones import DlibBackbone
from facelab.pfe.data import Pairs, parse_pairs
from facelab.pfe.features import FaceFinder, in_chunks, run_jobs
from facelab.pfe.rule import fit_threshold
from facelab.pfe.verify import kfold_accuracy, tar_at_far

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def _views_of(backbone: DlibBackbone, finder: FaceFinder, job: tuple[list[str], int]) -> list[np.ndarray | None]:
    """``(views, 128)`` embeddings of the face in each image of the job, None where no pass finds one."""
    paths, views = job
    chips, out = [], []
    for path in paths:
        image = read_image(path)
        landmarks = finder.find(image)
        out.append(None if landmarks is None else len(chips))
        if landmarks is not None:
            chips.append(backbone.prepare(image, landmarks))
    emb = backbone.view_embeddings(chips, views) if chips else None
    return [None if k is None else emb[:, k] for k in out]


def subset(pairs: Pairs, per_fold: int) -> Pairs:
    """The first ``per_fold`` matched and mismatched pairs of each fold."""
    keep = np.zeros(len(pairs.same), bool)
    for k in np.unique(pairs.folds):
        for same in (True, False):
            keep[np.flatnonzero((pairs.folds == k) & (pairs.same == same))[:per_fold]] = True
    pick = np.flatnonzero(keep)
    return Pairs([pairs.first[i] for i in pick], [pairs.second[i] for i in pick], pairs.same[pick], pairs.folds[pick])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=str(LFW / "pairs.txt"))
    parser.add_argument("--data", default=str(LFW / "images"))
    parser.add_argument("--views", type=int, default=MAX_VIEWS, help=f"largest count (default: {MAX_VIEWS})")
    parser.add_argument("--per-fold", type=int, default=0, help="only this many pairs of each kind per fold (0: all)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: 0, one per CPU core)")
    args = parser.parse_args()
    pairs = parse_pairs(args.pairs, args.data)
    if args.per_fold:
        pairs = subset(pairs, args.per_fold)
    files = sorted(set(map(str, pairs.first + pairs.second)))
    start = time.perf_counter()
    chunks = in_chunks(files)
    found = [e for part in run_jobs(_views_of, [(c, args.views) for c in chunks], [len(c) for c in chunks],
                                    DlibBackbone(), FaceFinder(pick="centre", cnn_fallback=True), args.workers,
                                    "LFW faces") for e in part]
    seconds = time.perf_counter() - start
    row = {path: i for i, path in enumerate(files)}
    a = np.array([row[str(p)] for p in pairs.first])
    b = np.array([row[str(p)] for p in pairs.second])
    ok = np.array([e is not None for e in found])
    views = np.stack([e if e is not None else np.zeros((args.views, 128)) for e in found])  # (files, views, 128)
    scored = ok[a] & ok[b]
    same, folds = pairs.same[scored], pairs.folds[scored]
    counts = {}
    for n in range(1, args.views + 1):
        mu = views[:, :n].mean(1).astype(np.float32)  # what embed_chips(chips, views=n) returns
        dist = np.linalg.norm(mu[a[scored]].astype(np.float64) - mu[b[scored]], axis=1)
        folds_result = kfold_accuracy(-dist, same, folds)
        counts[str(n)] = {"accuracy_mean": round(folds_result.mean, 5), "accuracy_std": round(folds_result.std, 5),
                          "tar@far=0.001": round(tar_at_far(-dist, same, 1e-3)[0], 4),
                          "threshold": round(fit_threshold("l2", dist, same), 4)}
    print(json.dumps({"benchmark": "lfw_views", "pairs": len(pairs.same), "pairs_scored": int(scored.sum()),
                      "images": len(files), "images_without_face": int((~ok).sum()), "workers": args.workers,
                      "seconds": round(seconds, 1), "views": counts, "device_name": device_name(torch.device("cpu")),
                      "date": time.strftime("%Y-%m-%d %H:%M")}))


if __name__ == "__main__":
    main()
