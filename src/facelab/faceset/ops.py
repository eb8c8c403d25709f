"""Faceset housekeeping: the orderings of DeepFaceLab's sort tool, near-duplicate removal, keeping one
person's faces, and a summary.

Sorting renames files to ``NNNNN__<original name>`` so the folder lists in the chosen order and the
original name (which names the source frame) is kept; sorting again replaces the prefix. The renames are
journaled (``.sort_journal.json``), so a sort killed halfway is finished by the next ``faceset sort``
before it does anything else, and no face keeps a hidden temporary name. Faces that
``best`` leaves out, the duplicates ``dedupe`` finds and the other people ``keep`` finds are moved aside,
never deleted.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text, disk_errors, remove_stale_temps
from facelab.core.progress import progress
from facelab.faceset.store import PACK_NAME, SORT_JOURNAL, Faceset
from facelab.face.masks.applied import has_applied_mask
from facelab.face.masks.hull import hull_mask
from facelab.face.masks.labels import has_label

log = logging.getLogger("facelab")
SORT_KEYS = ("blur", "yaw", "pitch", "histogram", "identity", "size", "source", "best")
_PREFIX = re.compile(r"^\d{5}__")


def _open_loose(folder: Path) -> Faceset:
    if (Path(folder) / PACK_NAME).is_file():
        raise FacelabError(f"{folder} is packed; run `facelab faceset unpack {folder}` first")
    return Faceset.open(folder)


def _gray_faces(faceset: Faceset):
    """Each face decoded once, in grey."""
    for i in range(len(faceset)):
        yield cv2.cvtColor(faceset.image(i), cv2.COLOR_BGR2GRAY)


def _face_sharpness(gray: np.ndarray, landmarks) -> float:
    """Variance of the Laplacian inside the face's landmark hull (higher = sharper)."""
    mask = hull_mask(landmarks, *gray.shape, "full") > 0
    return float(cv2.Laplacian(gray, cv2.CV_32F)[mask].var()) if mask.any() else 0.0


def sharpness(faceset: Faceset) -> np.ndarray:
    return np.array([_face_sharpness(g, m.landmarks) for g, m in zip(_gray_faces(faceset), faceset.metas)], float)


def _histograms(faceset: Faceset) -> np.ndarray:
    hists = []
    for i in range(len(faceset)):
        img = faceset.image(i)
        h = [cv2.calcHist([img], [c], None, [32], [0, 256]).ravel() for c in range(3)]
        v = np.concatenate(h)
        hists.append(v / max(v.sum(), 1))
    return np.stack(hists)


def identity_vectors(faceset: Faceset, probe) -> np.ndarray:
    """Face-recognition embeddings (:class:`~facelab.metrics.identity.IdentityProbe`) of every face, from its
    stored landmarks."""
    faces = progress((faceset.image(i) for i in range(len(faceset))), total=len(faceset), desc="identity", unit="face")
    return probe.embed(faces, [m.landmarks for m in faceset.metas])


def _chain_order(dist: np.ndarray) -> list[int]:
    """Greedy nearest-neighbour chain over a distance matrix, so similar faces end up next to each other."""
    order, left = [0], set(range(1, len(dist)))
    while left:
        rest = np.fromiter(left, int)
        nxt = int(rest[np.argmin(dist[order[-1], rest])])
        order.append(nxt)
        left.remove(nxt)
    return order


def source_face_size(faceset: Faceset) -> np.ndarray:
    """How many source pixels the face spanned: the aligned size divided by the transform's scale."""
    return np.array([m.size / np.sqrt(abs(np.linalg.det(np.asarray(m.image_to_face)[:, :2]))) for m in faceset.metas])


def best_subset(faceset: Faceset, count: int, bins: int = 64) -> list[int]:
    """Up to ``count`` faces spread over head poses: yaw/pitch bins filled round-robin, sharpest first."""
    sharp = sharpness(faceset)
    yaw = np.array([m.yaw for m in faceset.metas])
    pitch = np.array([m.pitch for m in faceset.metas])
    ybin = np.digitize(yaw, np.linspace(yaw.min(), yaw.max() + 1e-6, int(np.sqrt(bins)) + 1))
    pbin = np.digitize(pitch, np.linspace(pitch.min(), pitch.max() + 1e-6, int(np.sqrt(bins)) + 1))
    groups: dict[tuple[int, int], list[int]] = {}
    for i in np.argsort(-sharp):
        groups.setdefault((int(ybin[i]), int(pbin[i])), []).append(int(i))
    chosen: list[int] = []
    queues = list(groups.values())
    while len(chosen) < count and queues:
        queues = [q for q in queues if q]
        for q in queues:
            if len(chosen) < count:
                chosen.append(q.pop(0))
    return chosen


def sort_order(faceset: Faceset, by: str, best_count: int | None = None) -> list[int]:
    if by not in SORT_KEYS:
        raise FacelabError(f"unknown sort key {by!r}; use one of {', '.join(SORT_KEYS)}")
    metas = faceset.metas
    if by == "blur":
        return list(np.argsort(-sharpness(faceset), kind="stable"))
    if by == "yaw":
        return list(np.argsort([m.yaw for m in metas], kind="stable"))
    if by == "pitch":
        return list(np.argsort([m.pitch for m in metas], kind="stable"))
    if by == "size":
        return list(np.argsort(-source_face_size(faceset), kind="stable"))
    if by == "source":
        return sorted(range(len(metas)), key=lambda i: (metas[i].source_filename, metas[i].source_frame or 0,
                                                      metas[i].face_index))
    if by == "histogram":
        hists = _histograms(faceset)
        return _chain_order(np.abs(hists[:, None, :] - hists[None, :, :]).sum(-1))
    if by == "identity":  # neighbours by the same-person rule's score (dlib's L2 distance)
        from facelab.metrics.identity import IdentityProbe

        probe = IdentityProbe()
        return _chain_order(probe.distances(identity_vectors(faceset, probe)))
    return best_subset(faceset, best_count or len(faceset))


def _move_aside(folder: Path, names: list[str], suffix: str) -> Path:
    aside = folder.with_name(folder.name + suffix)
    with disk_errors(aside):
        aside.mkdir(exist_ok=True)
        for name in names:
            shutil.move(str(folder / name), str(aside / name))
    return aside


def _write_journal(folder: Path, phase: str, renames: list[list[str]]) -> None:
    atomic_write_text(folder / SORT_JOURNAL, json.dumps({"phase": phase, "renames": renames}))


def finish_interrupted_sort(folder: str | Path) -> int:
    """Complete the renames a killed ``faceset sort`` journaled; returns how many faces it covered (0: none).

    A sort renames in two phases so that a new name never collides with an old one: "hide" moves every
    face to a hidden temporary name, "name" moves each temporary name to the new name. The journal
    says which phase was under way, so each rename is done exactly once however often it is resumed.
    """
    folder = Path(folder)
    journal = folder / SORT_JOURNAL
    if not journal.is_file():
        return 0
    try:
        data = json.loads(journal.read_text())
        phase, renames = data["phase"], [(str(a), str(b), str(c)) for a, b, c in data["renames"]]
    except (ValueError, KeyError, TypeError):
        raise FacelabError(f"{journal} is damaged; the faces named .sortingNNNNN.* in {folder} keep their order in "
                           "that number: rename them by hand, then delete the journal") from None
    with disk_errors(folder):
        if phase == "hide":
            for old, tmp, _ in renames:
                if not (folder / tmp).exists():
                    (folder / old).rename(folder / tmp)
            _write_journal(folder, "name", [list(r) for r in renames])
        for _, tmp, new in renames:
            if (folder / tmp).exists():
                (folder / tmp).rename(folder / new)
        journal.unlink()
    return len(renames)


def sort_faceset(folder: str | Path, by: str, best_count: int | None = None) -> tuple[int, Path | None]:
    """Rename faces into the chosen order; with ``best``, move the faces not chosen to ``<folder>_trash``.
    An earlier sort of the folder that was killed is finished first."""
    if best_count is not None:
        check_range(best_count, "best_count", "faceset sort", low=1)
    folder = Path(folder)
    if finish_interrupted_sort(folder):
        log.info(f"finished the renames of an interrupted sort of {folder}")
    remove_stale_temps(folder)
    faceset = _open_loose(folder)
    order = sort_order(faceset, by, best_count)
    aside = None
    left_out = sorted(set(range(len(faceset))) - set(order))
    if left_out:
        aside = _move_aside(folder, [faceset.names[i] for i in left_out], "_trash")
    renames = [[faceset.names[i], f".sorting{rank:05d}{Path(faceset.names[i]).suffix}",
                f"{rank:05d}__{_PREFIX.sub('', faceset.names[i])}"] for rank, i in enumerate(order)]
    _write_journal(folder, "hide", renames)
    finish_interrupted_sort(folder)
    return len(order), aside


def dhash(gray: np.ndarray) -> np.ndarray:
    """64-bit difference hash: robust to re-encoding and small shifts, cheap to compare."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    return (small[:, 1:] > small[:, :-1]).ravel()


def find_duplicates(faceset: Faceset, max_distance: int = 4) -> list[int]:
    """Indices of faces that are near-copies of a sharper face (hash distance <= ``max_distance`` bits)."""
    hashes = np.zeros((len(faceset), 64), bool)
    sharp = np.zeros(len(faceset))
    for i, (gray, meta) in enumerate(zip(_gray_faces(faceset), faceset.metas)):
        hashes[i], sharp[i] = dhash(gray), _face_sharpness(gray, meta.landmarks)
    dist = (hashes[:, None, :] != hashes[None, :, :]).sum(-1)
    dupes: set[int] = set()
    for i in np.argsort(-sharp):
        if i in dupes:
            continue
        close = np.nonzero(dist[i] <= max_distance)[0]
        dupes.update(int(j) for j in close if j != i)
    return sorted(dupes)


def dedupe_faceset(folder: str | Path, max_distance: int = 4) -> tuple[int, Path | None]:
    check_range(max_distance, "max_distance", "faceset dedupe", low=0, high=64)
    folder = Path(folder)
    faceset = _open_loose(folder)
    dupes = find_duplicates(faceset, max_distance)
    if not dupes:
        return 0, None
    return len(dupes), _move_aside(folder, [faceset.names[i] for i in dupes], "_duplicates")


def keep_person(folder: str | Path, like: str | Path, threshold: float | None = None) -> tuple[int, int, Path | None]:
    """Keep the faces of ``folder`` that show the person of the aligned faceset ``like``; move the others to
    ``<folder>_others``. A face is that person when the calibrated same-person rule accepts its mean score to
    ``like``'s faces (default: dlib's L2 distance below the threshold fitted on LFW; ``threshold`` replaces
    that threshold). Returns (kept, moved, aside)."""
    from dataclasses import replace

    from facelab.metrics.identity import IdentityProbe

    if threshold is not None:
        check_range(threshold, "threshold", "faceset keep", low=-1, high=1)
    folder = Path(folder)
    probe = IdentityProbe()
    if threshold is not None:
        probe.rule = replace(probe.rule, threshold=threshold)
    faceset, reference = _open_loose(folder), Faceset.open(like)
    scores = probe.scores(identity_vectors(faceset, probe), identity_vectors(reference, probe))
    same = probe.same(scores)
    if not same.any():  # moving every face aside would only leave an empty faceset
        best = scores.min() if probe.rule.lower_is_same else scores.max()
        raise FacelabError(f"no face of {folder} looks like the person of {like} (closest {probe.rule.metric} "
                           f"{best:.3f}, same person when {probe.rule.describe()}); check --like, or pass --threshold")
    others = [faceset.names[i] for i in np.nonzero(~same)[0]]
    aside = _move_aside(folder, others, "_others") if others else None
    return len(faceset) - len(others), len(others), aside


def describe(faceset: Faceset) -> dict:
    metas = faceset.metas
    yaw = [m.yaw for m in metas]
    pitch = [m.pitch for m in metas]
    return {
        "folder": str(faceset.root),
        "faces": len(faceset),
        "packed": faceset.packed,
        "face_types": dict(Counter(m.face_type for m in metas)),
        "sizes": dict(Counter(m.size for m in metas)),
        "detectors": dict(Counter(m.detector for m in metas)),
        "sources": len({m.source_filename for m in metas}),
        "yaw_range": [round(min(yaw), 1), round(max(yaw), 1)],
        "pitch_range": [round(min(pitch), 1), round(max(pitch), 1)],
        "xseg_labelled": sum(has_label(m) for m in metas),
        "xseg_masks_applied": sum(has_applied_mask(m) for m in metas),
    }
