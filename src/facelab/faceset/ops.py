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
from typing import Callable

import cv2
import numpy as np

from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text, disk_errors, remove_stale_temps
from facelab.align.transform import invert, transform_points
from facelab.core.progress import progress
from facelab.faceset.store import PACK_NAME, SORT_JOURNAL, Faceset
from facelab.face.masks.applied import has_applied_mask
from facelab.face.masks.hull import hull_mask
from facelab.face.masks.labels import has_label

log = logging.getLogger("facelab")
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


def _by_blur(faceset: Faceset) -> list[int]:
    return _descending(sharpness(faceset))


def _face_masks(faceset: Faceset):
    """(face image, its landmark hull as a bool mask) of each face, decoded once."""
    for i, meta in enumerate(faceset.metas):
        img = faceset.image(i)
        yield img, hull_mask(meta.landmarks, *img.shape[:2], "full") > 0


def _gradient_tensor(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The 2x2 mean outer product of the image gradient inside ``mask``: its quadratic form is the gradient
    energy in each direction."""
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)[mask], cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)[mask]
    return np.array([[np.mean(gx * gx), np.mean(gx * gy)], [np.mean(gx * gy), np.mean(gy * gy)]], np.float64)


def directional_detail(gray: np.ndarray, mask: np.ndarray, coarse_sigma: float = 2.0) -> float:
    """The fine detail left in the face's most smeared direction: the smallest ratio, over directions, of the
    gradient energy at pixel scale to that after a ``coarse_sigma`` px blur (a generalised eigenvalue of the
    two gradient tensors). Motion blur removes fine detail along its direction only, so it shows here even
    when the sharp cross direction keeps the overall sharpness up; as a ratio it ignores contrast, and the
    face's own structure (edges running one way) cancels because it is there at both scales."""
    if not mask.any():
        return 0.0
    gray = gray.astype(np.float32)
    fine, coarse = _gradient_tensor(gray, mask), _gradient_tensor(cv2.GaussianBlur(gray, (0, 0), coarse_sigma), mask)
    if np.linalg.det(coarse) <= 1e-12:  # a flat face has no detail in any direction
        return 0.0
    return float(np.linalg.eigvals(np.linalg.solve(coarse, fine)).real.min())


def _by_motion_blur(faceset: Faceset) -> list[int]:
    return _descending([directional_detail(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), m) for img, m in _face_masks(faceset)])


def _by_brightness(faceset: Faceset) -> list[int]:
    """Mean HSV value of the face inside its hull (the background of a whole-face crop would otherwise decide)."""
    return _descending([cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 2][m].mean() if m.any() else 0.0
                        for img, m in _face_masks(faceset)])


def _by_hue(faceset: Faceset) -> list[int]:
    """Each face's mean hue inside its hull, as an angle weighted by saturation (hue is circular: reds sit
    both sides of 0), sorted by its signed offset from the faceset's mean, largest first: the faces with the
    strongest colour cast one way come first, those cast the other way last."""
    vectors = []
    for img, m in _face_masks(faceset):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[m].astype(np.float64)
        angle, weight = hsv[:, 0] * (np.pi / 90.0), hsv[:, 1] + 1e-6  # OpenCV hue 0..180 is half degrees
        vectors.append((weight * np.cos(angle)).sum() + 1j * (weight * np.sin(angle)).sum())
    vectors = np.array(vectors)
    mean = vectors.sum()
    return _descending(np.angle(vectors * np.conj(mean)))


def _by_black_pixels(faceset: Faceset) -> list[int]:
    """Fewest missing pixels first: black ones (every channel at most 10, black bars and JPEG noise on them) and
    those outside the source frame, which extraction fills by repeating the frame's edge."""
    share = []
    for i, meta in enumerate(faceset.metas):
        img = faceset.image(i)
        black = img.max(2) <= 10
        ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
        src = transform_points(np.stack([xs, ys], -1).reshape(-1, 2), invert(meta.image_to_face)).reshape(*xs.shape, 2)
        width, height = meta.source_size
        outside = (src[..., 0] < -0.5) | (src[..., 1] < -0.5) | (src[..., 0] > width - 0.5) | (src[..., 1] > height - 0.5)
        share.append(float((black | outside).mean()))
    return list(np.argsort(share, kind="stable"))


def _by_histogram(faceset: Faceset) -> list[int]:
    hists = _histograms(faceset)
    return _chain_order(np.abs(hists[:, None, :] - hists[None, :, :]).sum(-1))


def _by_histogram_dissimilarity(faceset: Faceset, block: int = 1024) -> list[int]:
    """Most unlike the rest first: each face's Bhattacharyya distances (OpenCV's HISTCMP_BHATTACHARYYA) from its
    grey-level histogram inside the hull to every other face's, summed, so odd lighting or another person leads."""
    roots = []
    for img, m in _face_masks(faceset):
        hist = np.bincount(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[m], minlength=256).astype(np.float64)
        roots.append(np.sqrt(hist / max(hist.sum(), 1.0)))
    roots = np.stack(roots)
    totals = np.zeros(len(roots))
    for start in range(0, len(roots), block):  # the distance matrix a block of rows at a time
        distance = np.sqrt(np.clip(1.0 - roots[start:start + block] @ roots.T, 0.0, None))
        totals[start:start + block] = distance.sum(1)
    return _descending(totals)


def _by_one_face_per_frame(faceset: Faceset) -> list[int]:
    """Only the faces whose source frame (or photo) has no other face in the faceset, in their present order;
    the faces of frames with several go to FOLDER_trash, where whose face is whose is easy to get wrong."""
    frames = Counter((m.source_filename, m.source_frame) for m in faceset.metas)
    return [i for i, m in enumerate(faceset.metas) if frames[(m.source_filename, m.source_frame)] == 1]


PIXEL_DIFFERENCE_SIZE = 64  # faces are compared at this size: the sum over 256 px faces costs 16x more, orders alike


def _by_pixel_difference(faceset: Faceset, block: int = 256) -> list[int]:
    """Similar faces next to each other by the sum of absolute pixel differences (the L1 distance of the faces
    at 64 px: near-identical frames of a still scene, then the next scene)."""
    import torch

    faces = torch.from_numpy(faceset.images(PIXEL_DIFFERENCE_SIZE).reshape(len(faceset), -1).astype(np.float32))
    dist = torch.cat([torch.cdist(faces[start:start + block], faces, p=1) for start in range(0, len(faces), block)])
    return _chain_order(dist.numpy())


def _by_identity(faceset: Faceset) -> list[int]:
    """Neighbours by the same-person rule's score (dlib's L2 distance)."""
    from facelab.metrics.identity import IdentityProbe

    probe = IdentityProbe()
    return _chain_order(probe.distances(identity_vectors(faceset, probe)))


def _by_source(faceset: Faceset) -> list[int]:
    metas = faceset.metas
    return sorted(range(len(metas)), key=lambda i: (metas[i].source_filename, metas[i].source_frame or 0,
                                                  metas[i].face_index))


def _descending(values) -> list[int]:
    return list(np.argsort(-np.asarray(values, np.float64), kind="stable"))


# Every ordering of `faceset sort --by`: key -> (faces in their new order, the help sentence). A new sort is one
# function here and one line; faces an ordering leaves out go to FOLDER_trash. `best` (a pose-spread subset of
# --best-count faces) is the one that takes an option.
SORTS: dict[str, tuple[Callable[[Faceset], list[int]], str]] = {
    "blur": (_by_blur, "sharpest first"),
    "motion-blur": (_by_motion_blur, "least smeared first, by the fine detail left in the face's most smeared "
                                     "direction (motion blur keeps the cross direction sharp)"),
    "yaw": (lambda fs: list(np.argsort([m.yaw for m in fs.metas], kind="stable")), "head yaw, turned one way to the other"),
    "pitch": (lambda fs: list(np.argsort([m.pitch for m in fs.metas], kind="stable")), "head pitch, one way to the other"),
    "size": (lambda fs: _descending(source_face_size(fs)), "largest source face first"),
    "source": (_by_source, "source frame order"),
    "brightness": (_by_brightness, "brightest face first"),
    "hue": (_by_hue, "by the face's hue, the strongest colour cast one way first, the other way last"),
    "black-pixels": (_by_black_pixels, "fewest black pixels or pixels outside the source frame first"),
    "histogram": (_by_histogram, "similar colours together"),
    "histogram-dissimilarity": (_by_histogram_dissimilarity, "faces most unlike the rest (lighting, another "
                                                             "person) first"),
    "pixel-difference": (_by_pixel_difference, "similar images together by absolute pixel difference"),
    "identity": (_by_identity, "faces of one person together (dlib's L2 distance, the same-person rule's score)"),
    "one-face-per-frame": (_by_one_face_per_frame, "keep the faces of frames with one face, move the faces of "
                                                   "frames with several to FOLDER_trash"),
}
BEST = "best"
SORT_KEYS = (*SORTS, BEST)
# DeepFaceLab's names for the same orderings (its sort tool's menu)
SORT_ALIASES = {"face-yaw": "yaw", "face-pitch": "pitch", "face-source-rect-size": "size", "origname": "source",
                "hist": "histogram", "hist-dissim": "histogram-dissimilarity", "black": "black-pixels",
                "oneface": "one-face-per-frame", "absdiff": "pixel-difference", "best-faster": BEST}


def sort_key(name: str) -> str:
    """The key of SORT_KEYS for any accepted spelling (an argparse ``type`` for ``--by``)."""
    return SORT_ALIASES.get(name, name)


def sort_order(faceset: Faceset, by: str, best_count: int | None = None) -> list[int]:
    by = sort_key(by)
    if by == BEST:
        return best_subset(faceset, best_count or len(faceset))
    if by not in SORTS:
        raise FacelabError(f"unknown sort key {by!r}; use one of {', '.join(SORT_KEYS)}")
    return SORTS[by][0](faceset)


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
