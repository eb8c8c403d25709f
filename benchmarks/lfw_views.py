"""LFW accuracy of dlib's L2 rule for every count of test-time views (``pfe eval --views N``), in one run.

``facelab pfe eval --views N`` embeds every face N times; measuring N = 1..6 that way would embed LFW 21
times over. This script finds each face once (the same ``FaceFinder`` as ``pfe eval``: centre pick, HOG,
HOG at 2x, dlib's CNN), embeds each view once, and scores every count from the running means, which are
the embeddings ``--views N`` gives. Faces are processed in ``--workers`` processes (0: one per core), as
``pfe eval`` does. Every view's embeddings are kept in ``$FACELAB_CACHE/lfw_views`` (keyed by the images, their
sizes and times, and the finder; each view by its entry in ``VIEWS``), so a re-run, or one with more views,
embeds only the views not yet there (``--no-cache``: embed everything again). Prints one JSON record: per
count the 10-fold accuracy (mean, std), TAR at FAR 1e-3 and the threshold on all pairs.

    python3 benchmarks/lfw_views.py                  # all 6000 pairs, 12 views: ~70 min on 2 cores
    python3 benchmarks/lfw_views.py --per-fold 2     # 2 matched + 2 mismatched pairs per fold (a check)
    python3 benchmarks/lfw_views.py --spread 0 1 4 16  # also: each face's spread over its views as its variance

``--spread C ...`` scores, at the largest count, the mutual likelihood score with each face's per-dimension
variance over its views plus C times the mean of those variances as its sigma^2 (an uncertainty that needs
no trained module); C large tends to the L2 distance of the means.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from facelab.core.device import device_name
from facelab.core.files import atomic_path, cache_root
from facelab.detect.chip_views import MAX_VIEWS, VIEWS
from facelab.io.images import read_image
from facelab.pfe.backbones import DlibBackbone
from facelab.pfe.data import Pairs, parse_pairs
from facelab.pfe.features import FaceFinder, in_chunks, run_jobs
from facelab.pfe.losses import mutual_likelihood_score
from facelab.pfe.rule import fit_threshold
from facelab.pfe.verify import kfold_accuracy, tar_at_far

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def _views_of(backbone: DlibBackbone, finder: FaceFinder, job: tuple[list[str], int, int]) -> list[np.ndarray | None]:
    """``(stop - start, 128)`` embeddings (views ``start`` .. ``stop - 1``) of the face in each image of the
    job, None where no pass finds one."""
    paths, start, stop = job
    chips, out = [], []
    for path in paths:
        image = read_image(path)
        landmarks = finder.find(image)
        out.append(None if landmarks is None else len(chips))
        if landmarks is not None:
            chips.append(backbone.prepare(image, landmarks))
    emb = backbone.view_embeddings(chips, stop, start) if chips else None
    return [None if k is None else emb[:, k] for k in out]


def cache_file(files: list[str], finder: FaceFinder) -> Path:
    """Where the view embeddings of exactly these images, found by this finder, are kept."""
    key = hashlib.sha256(repr(finder.settings).encode())
    for f in files:
        st = os.stat(f)
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return cache_root() / "lfw_views" / f"{key.hexdigest()[:24]}.npz"


def no_views(files: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(files, bool), np.zeros((files, 0, 128))


def cached_views(path: Path, files: int) -> tuple[np.ndarray, np.ndarray]:
    """``found (files,)`` and ``views (files, n, 128)`` from the cache: the leading views whose entry in
    ``VIEWS`` is still the same; none (n = 0) without a usable cache."""
    try:
        with np.load(path) as z:
            found, views, made_with = z["found"], z["views"].astype(np.float64), z["view_list"]
    except (OSError, KeyError, ValueError):
        return no_views(files)
    same = 0
    while same < min(len(made_with), MAX_VIEWS) and np.array_equal(made_with[same], np.array(VIEWS[same], float)):
        same += 1
    return found, views[:, :same]


def embed_views(files: list[str], views: int, workers: int, cache: bool) -> tuple[np.ndarray, np.ndarray]:
    """``found`` and ``(files, views, 128)``, embedding only the views the cache lacks (and keeping them)."""
    finder = FaceFinder(pick="centre", cnn_fallback=True)
    path = cache_file(files, finder)
    found, have = cached_views(path, len(files)) if cache else no_views(len(files))
    start = have.shape[1]
    if start >= views:
        return found, have[:, :views]
    todo = files if start == 0 else [f for f, ok in zip(files, found) if ok]
    chunks = in_chunks(todo)
    new = [e for part in run_jobs(_views_of, [(c, start, views) for c in chunks], [len(c) for c in chunks],
                                  DlibBackbone(), finder, workers, f"LFW faces, views {start + 1}-{views}")
           for e in part]
    if start == 0:
        found = np.array([e is not None for e in new])
    elif any(e is None for e in new):
        raise RuntimeError(f"a face of the cache was not found again; run with --no-cache ({path})")
    extra = np.zeros((len(files), views - start, 128))
    extra[found] = np.stack([e for e in new if e is not None])
    out = np.concatenate([have, extra], axis=1)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, found=found, views=out.astype(np.float32), view_list=np.array(VIEWS[:views], float))
    return found, out


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
    parser.add_argument("--no-cache", action="store_true", help="embed every view again (and replace the cache)")
    parser.add_argument("--spread", type=float, nargs="*", default=[], metavar="C",
                        help="also score MLS with the views' spread + C x its mean as each face's variance")
    args = parser.parse_args()
    pairs = parse_pairs(args.pairs, args.data)
    if args.per_fold:
        pairs = subset(pairs, args.per_fold)
    files = sorted(set(map(str, pairs.first + pairs.second)))
    start = time.perf_counter()
    ok, views = embed_views(files, args.views, args.workers, not args.no_cache)  # (files,), (files, views, 128)
    seconds = time.perf_counter() - start
    row = {path: i for i, path in enumerate(files)}
    a = np.array([row[str(p)] for p in pairs.first])
    b = np.array([row[str(p)] for p in pairs.second])
    scored = ok[a] & ok[b]
    same, folds = pairs.same[scored], pairs.folds[scored]
    a, b = a[scored], b[scored]

    def scored_by(score: np.ndarray) -> dict:
        folds_result = kfold_accuracy(score, same, folds)
        return {"accuracy_mean": round(folds_result.mean, 5), "accuracy_std": round(folds_result.std, 5),
                "tar@far=0.001": round(tar_at_far(score, same, 1e-3)[0], 4)}

    counts = {}
    for n in range(1, args.views + 1):
        mu = views[:, :n].mean(1).astype(np.float32)  # what embed_chips(chips, views=n) returns
        dist = np.linalg.norm(mu[a].astype(np.float64) - mu[b], axis=1)
        counts[str(n)] = {**scored_by(-dist), "threshold": round(fit_threshold("l2", dist, same), 4)}
    spread = {}
    if args.spread and args.views > 1:
        mu, var = torch.from_numpy(views.mean(1)), views.var(1, ddof=1)  # (files, 128) each
        for c in args.spread:
            log_var = torch.from_numpy(np.log(var + c / 2 * var[ok].mean()))  # the pair's sum: + c x the mean
            spread[str(c)] = scored_by(mutual_likelihood_score(mu[a], log_var[a], mu[b], log_var[b]).numpy())
    print(json.dumps({"benchmark": "lfw_views", "pairs": len(pairs.same), "pairs_scored": int(scored.sum()),
                      "images": len(files), "images_without_face": int((~ok).sum()), "workers": args.workers,
                      "seconds": round(seconds, 1), "views": counts, **({"spread_mls": spread} if spread else {}),
                      "device_name": device_name(torch.device("cpu")), "date": time.strftime("%Y-%m-%d %H:%M")}))


if __name__ == "__main__":
    main()
