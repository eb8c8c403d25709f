"""From image files to backbone features: finding the face, and the augmented feature pool PFE trains on.

The backbone is frozen during PFE training, so its features are computed once per augmented copy and
the uncertainty module then trains on that pool at the speed of a small MLP.

Finding and encoding faces is nearly all the time of ``pfe eval`` and ``pfe train`` (LFW's 7701 images,
CelebA's 4800 x copies), and dlib's detectors and network each run on one core, so on a CPU backbone both
spread the images over worker processes (``workers``; 0: one per core). Each image's work depends on
nothing but the image (the pool's augmentation is seeded per image), so the result is the same for any
number of workers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.core.workers import close_pool, worker_pool
from facelab.detect.registry import make_detector, make_landmarker
from facelab.io.images import read_image
from facelab.pfe.augment import augment
from facelab.pfe.backbones import Backbone, load_backbone
from facelab.pfe.cache import EmbeddingCache, FileEmbeddings
from facelab.pfe.data import IdentityFolder

log = logging.getLogger("facelab")


PICKS = ("largest", "centre")


class FaceFinder:
    """68 landmarks of one face in an image, or of the whole image when it is an aligned crop.

    Of several faces it takes the largest (``pick="largest"``) or the one nearest the image centre
    (``"centre"``: LFW-style images are centred on the labelled person, and a larger face beside them
    is somebody else). HOG misses faces under ~80 px, so small images are searched again at twice the
    size; with ``cnn_fallback`` the slower dlib CNN detector then tries the faces HOG missed altogether
    (turned heads, dark photos). :meth:`detect` also says which of these passes found the face.
    """

    def __init__(self, aligned: bool = False, detector: str = "hog", pick: str = "largest", cnn_fallback: bool = False):
        if pick not in PICKS:
            raise FacelabError(f"unknown face pick {pick!r}; use one of {', '.join(PICKS)}")
        self.aligned, self.pick, self.detector_name = aligned, pick, detector
        self.settings = (aligned, detector, pick, cnn_fallback)  # FaceFinder(*settings) is the same finder
        self.detector = None if aligned else make_detector(detector)
        self.fallback = make_detector("dlib-cnn") if cnn_fallback and not aligned else None
        self.landmarker = make_landmarker("dlib68")

    @property
    def fingerprint(self) -> str:
        """What decides the landmarks found (the key of cached embeddings)."""
        if self.aligned:
            return "aligned"
        return f"{self.detector_name}|{self.pick}|{'cnn' if self.fallback else 'no-cnn'}"

    def detect(self, image: np.ndarray) -> tuple[np.ndarray | None, str]:
        """``(landmarks, how)``: how is ``aligned``, the detector's name, ``NAME-2x`` or ``dlib-cnn``;
        ``(None, "none")`` when no pass found a face."""
        h, w = image.shape[:2]
        if self.aligned:
            return self.landmarker.landmarks(image, (0, 0, w - 1, h - 1)), "aligned"
        dets, how = self.detector.detect(image), self.detector_name
        if not dets and min(h, w) < 400:
            dets, how = [d.scaled(0.5) for d in self.detector.detect(cv2.resize(image, (2 * w, 2 * h)))], f"{how}-2x"
        if not dets and self.fallback is not None:
            dets, how = self.fallback.detect(image), self.fallback.name
        if not dets:
            return None, "none"
        if self.pick == "centre":
            def off_centre(d):
                return np.hypot((d.box[0] + d.box[2] - w) / 2, (d.box[1] + d.box[3] - h) / 2)
            best = min(dets, key=off_centre)
        else:
            best = max(dets, key=lambda d: d.size)
        return self.landmarker.landmarks(image, best.box), how

    def find(self, image: np.ndarray) -> np.ndarray | None:
        return self.detect(image)[0]


CHUNK = 32  # images a job: one batched backbone call, one progress step
MIN_PARALLEL = 64  # fewer images than this are done in this process (a worker takes seconds to start)
_WORKER: dict[str, Any] = {}


def _start_worker(backbone_spec: tuple, finder_settings: tuple) -> None:
    torch.set_num_threads(1)  # one core a worker: the workers are the parallelism
    _WORKER["backbone"], _WORKER["finder"] = load_backbone(*backbone_spec), FaceFinder(*finder_settings)


def _in_worker(job: Callable, args: Any) -> Any:
    return job(_WORKER["backbone"], _WORKER["finder"], args)


def worker_count(workers: int, backbone: Backbone, images: int) -> int:
    """Processes to spread ``images`` over: ``workers`` (0: one per CPU core), 1 for a backbone on a GPU
    (it batches there) or a job too small to repay starting the workers."""
    if backbone.spec[1] != "cpu" or images < MIN_PARALLEL:
        return 1
    return max(1, min(workers or os.cpu_count() or 1, images // CHUNK + 1))


def run_jobs(job: Callable, jobs: list, sizes: list[int], backbone: Backbone, finder: FaceFinder, workers: int,
             desc: str) -> list:
    """``[job(backbone, finder, j) for j in jobs]``, in order, spread over worker processes (see
    :func:`worker_count`) that build their own backbone and finder; the bar counts ``sizes`` images a job."""
    procs = worker_count(workers, backbone, sum(sizes))
    pool = worker_pool(procs, _start_worker, (backbone.spec, finder.settings)) if procs > 1 else None
    results: list = []
    try:
        done = (pool.imap(partial(_in_worker, job), jobs) if pool is not None else
                (job(backbone, finder, j) for j in jobs))
        with progress(total=sum(sizes), desc=desc, unit="img") as bar:
            for size, result in zip(sizes, done):
                results.append(result)
                bar.update(size)
    finally:
        if pool is not None:
            close_pool(pool, finished=len(results) == len(jobs))
    return results


def in_chunks(items: list, size: int = CHUNK) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _embed_chunk(backbone: Backbone, finder: FaceFinder, paths: list[Path]) -> FileEmbeddings:
    part = FileEmbeddings.empty(len(paths), backbone.dim, backbone.feature_dim)
    crops = []
    for i, path in enumerate(paths):
        image = read_image(path)
        lms, part.how[i] = finder.detect(image)
        if lms is not None:
            part.found[i] = True
            crops.append(backbone.prepare(image, lms))
    if crops:
        mu, feats = backbone.encode(np.stack(crops))
        part.mu[part.found], part.features[part.found] = mu, feats
    return part


def embed_files(paths: list[Path], backbone: Backbone, finder: FaceFinder, desc: str = "faces",
                cache: bool = False, workers: int = 0) -> FileEmbeddings:
    """Backbone outputs of image files, in order, found and encoded in ``workers`` processes (0: one per
    core). With ``cache`` the rows already in the on-disk :class:`EmbeddingCache` of this backbone and
    finder are reused and the new ones added to it."""
    store = EmbeddingCache(f"{backbone.fingerprint}|{finder.fingerprint}") if cache else None
    cached, hit = store.lookup(paths) if store else (None, np.zeros(len(paths), bool))
    todo = [p for p, h in zip(paths, hit) if not h]
    new = FileEmbeddings.empty(len(todo), backbone.dim, backbone.feature_dim)
    chunks = in_chunks(todo)
    parts = run_jobs(_embed_chunk, chunks, [len(c) for c in chunks], backbone, finder, workers, desc)
    for k, part in enumerate(parts):
        new.put(np.arange(k * CHUNK, k * CHUNK + len(chunks[k])), part)
    if store and todo:
        store.store(todo, new)
    if cached is None:
        return new
    out = FileEmbeddings.empty(len(paths), backbone.dim, backbone.feature_dim)
    out.put(hit, cached)
    out.put(~hit, new)
    return out


@dataclass
class FeaturePool:
    features: np.ndarray  # (N, F) float32 (float16 overflows on sphere feature maps)
    mu: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,)
    degraded: np.ndarray  # (N,) bool: blurred or shrunk copy


def _pool_chunk(backbone: Backbone, finder: FaceFinder, job: tuple) -> list:
    """``(mu, features, degraded)`` of the augmented copies of each image of the job, None for an image
    without a face; image ``i``'s augmentations draw from ``default_rng([seed, i])``."""
    items, copies, degrade_prob, seed = job
    out: list = []
    for index, path in items:
        image = read_image(path)
        lms = finder.find(image)
        if lms is None:
            out.append(None)
            continue
        rng = np.random.default_rng([seed, index])
        crops, degraded = [], []
        for _ in range(copies):
            img, lm, was_degraded = augment(image, lms, rng, degrade_prob)
            crops.append(backbone.prepare(img, lm))
            degraded.append(was_degraded)
        mu, feats = backbone.encode(np.stack(crops))
        out.append((mu, feats.astype(np.float32), degraded))
    return out


def build_pool(ident: IdentityFolder, backbone: Backbone, finder: FaceFinder, copies: int, degrade_prob: float,
               seed: int, workers: int = 0) -> FeaturePool:
    """``copies`` augmented versions of every image with a face, encoded by the frozen backbone in
    ``workers`` processes (0: one per core); the same pool for any number of workers."""
    per_job = max(1, CHUNK // copies)
    items = in_chunks(list(enumerate(ident.paths)), per_job)
    jobs = [(chunk, copies, degrade_prob, seed) for chunk in items]
    results = [r for part in run_jobs(_pool_chunk, jobs, [len(c) for c in items], backbone, finder, workers,
                                      "feature pool") for r in part]
    kept = [k for k, r in enumerate(results) if r is not None]
    missing = [ident.paths[k] for k, r in enumerate(results) if r is None]
    if missing:
        log.warning("no face found in %d image(s), skipped (first: %s)", len(missing), missing[0])
    if not kept:
        raise FacelabError(f"no face found in any image under {ident.paths[0].parent.parent}; "
                           "check the images, or pass --aligned if they are aligned face crops")
    return FeaturePool(np.concatenate([results[k][1] for k in kept]), np.concatenate([results[k][0] for k in kept]),
                       np.repeat(np.asarray(ident.labels, np.int64)[kept], copies),
                       np.concatenate([results[k][2] for k in kept]).astype(bool))
