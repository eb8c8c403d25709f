"""Training and evaluation data: identity folders, identity-balanced batches, LFW ``pairs.txt``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.core.errors import FacelabError
from facelab.io.images import IMAGE_EXTENSIONS, list_images


@dataclass
class IdentityFolder:
    """Images of a CASIA-WebFace-layout folder: ``root/<person>/<image>``, labels numbered by sorted name."""

    paths: list[Path]
    labels: np.ndarray
    names: list[str]


CELEBA_IDENTITIES = "identity_CelebA.txt"


def _celeba_people(root: Path) -> dict[str, list[Path]]:
    """CelebA's layout: ``images/`` and ``identity_CelebA.txt`` (``FILE IDENTITY`` lines)."""
    people: dict[str, list[Path]] = {}
    for lineno, line in enumerate((root / CELEBA_IDENTITIES).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise FacelabError(f"{root / CELEBA_IDENTITIES}:{lineno}: expected 'FILE IDENTITY', got {line.strip()!r}")
        path = root / "images" / parts[0]
        if not path.is_file():
            raise FacelabError(f"{root / CELEBA_IDENTITIES}:{lineno}: {path} not found; keep the images in {root / 'images'}")
        people.setdefault(parts[1], []).append(path)
    return {name: sorted(paths) for name, paths in people.items()}


def scan_identities(root: str | Path, max_per_class: int = 0, min_per_class: int = 1) -> IdentityFolder:
    """One sub-folder of images per person (CASIA-WebFace layout), or CelebA's ``images/`` with
    ``identity_CelebA.txt``."""
    root = Path(root)
    if not root.is_dir():
        raise FacelabError(f"{root} is not a folder; give a folder with one sub-folder of face images per person")
    if (root / CELEBA_IDENTITIES).is_file():
        people = _celeba_people(root)
    else:
        people = {p.name: list_images(p) for p in sorted(root.iterdir()) if p.is_dir()}
    paths, labels, names = [], [], []
    for person in sorted(people):
        images = people[person]
        if max_per_class:
            images = images[:max_per_class]
        if len(images) < min_per_class:
            continue
        paths += images
        labels += [len(names)] * len(images)
        names.append(person)
    if len(names) < 1:
        raise FacelabError(f"{root} has no sub-folder with at least {min_per_class} image(s); "
                           "put each person's faces in their own sub-folder (CASIA-WebFace layout)")
    return IdentityFolder(paths, np.array(labels, np.int64), names)


class BalancedBatchSampler:
    """Batches of ``classes`` identities x ``samples`` faces each, as PFE's training config draws them.

    Identities are drawn without replacement; faces of an identity without replacement when it has
    enough, else with replacement (small identities still give genuine pairs).
    """

    def __init__(self, labels: np.ndarray, classes: int, samples: int):
        if samples < 2:
            raise FacelabError("samples_per_class must be at least 2: the MLS loss needs genuine pairs")
        self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.classes = min(classes, len(self.by_class))
        self.samples = samples

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        chosen = rng.choice(len(self.by_class), self.classes, replace=False)
        return np.concatenate([rng.choice(self.by_class[c], self.samples, replace=len(self.by_class[c]) < self.samples)
                               for c in chosen])


@dataclass
class Pairs:
    """Verification pairs: two image paths each, whether they show one person (None: not known), and the fold."""

    first: list[Path]
    second: list[Path]
    same: np.ndarray | None
    folds: np.ndarray


def lfw_image(data_dir: Path, name: str, number: str, where: str) -> Path:
    """``DIR/<name>/<name>_<0001>.jpg`` (another image extension is accepted too)."""
    try:
        stem = f"{name}_{int(number):04d}"
    except ValueError:
        raise FacelabError(f"{where}: image number {number!r} is not an integer; "
                           "lines are 'name n1 n2' (same) or 'name1 n1 name2 n2' (different)") from None
    for ext in IMAGE_EXTENSIONS:
        path = data_dir / name / (stem + ext)
        if path.is_file():
            return path
    raise FacelabError(f"{where}: {data_dir / name / (stem + '.jpg')} not found; give --data the LFW image folder "
                       "(one sub-folder per person)")


def parse_pairs(pairs_file: str | Path, data_dir: str | Path) -> Pairs:
    """Read LFW's ``pairs.txt``: a ``folds pairs_per_fold`` header, then per fold that many matched lines
    (``name n1 n2``) followed by as many mismatched lines (``name1 n1 name2 n2``)."""
    pairs_file, data_dir = Path(pairs_file), Path(data_dir)
    if not pairs_file.is_file():
        raise FacelabError(f"pairs file {pairs_file} not found; check the path")
    lines = [(i + 1, ln.split()) for i, ln in enumerate(pairs_file.read_text().splitlines()) if ln.strip()]
    header = lines[0][1] if lines else []
    if len(header) != 2 or not all(h.isdigit() for h in header):
        raise FacelabError(f"{pairs_file}:1: expected the header 'FOLDS PAIRS_PER_FOLD' (LFW: '10 300'), got {' '.join(header)!r}")
    n_folds, per_fold = int(header[0]), int(header[1])
    if n_folds < 2 or per_fold < 1:
        raise FacelabError(f"{pairs_file}:1: the header promises {n_folds} fold(s) of {per_fold} pairs; the protocol "
                           "picks each fold's threshold on the other folds, so it needs at least 2 folds (LFW: '10 300')")
    body = lines[1:]
    if len(body) != 2 * n_folds * per_fold:
        raise FacelabError(f"{pairs_file}: header promises {n_folds} folds x 2 x {per_fold} pairs = "
                           f"{2 * n_folds * per_fold} lines, found {len(body)}; fix the header or the file")
    first, second, same, folds = [], [], [], []
    for k, (lineno, parts) in enumerate(body):
        where = f"{pairs_file}:{lineno}"
        matched = (k % (2 * per_fold)) < per_fold
        if matched and len(parts) == 3:
            a, b = lfw_image(data_dir, parts[0], parts[1], where), lfw_image(data_dir, parts[0], parts[2], where)
        elif not matched and len(parts) == 4:
            a, b = lfw_image(data_dir, parts[0], parts[1], where), lfw_image(data_dir, parts[2], parts[3], where)
        else:
            kind = "matched 'name n1 n2'" if matched else "mismatched 'name1 n1 name2 n2'"
            raise FacelabError(f"{where}: expected a {kind} line here, got {len(parts)} fields")
        first.append(a)
        second.append(b)
        same.append(matched)
        folds.append(k // (2 * per_fold))
    return Pairs(first, second, np.array(same), np.array(folds))


LABELS = {"yes": True, "1": True, "true": True, "same": True, "no": False, "0": False, "false": False, "different": False}


def parse_pair_csv(csv_file: str | Path, root: str | Path | None = None) -> Pairs:
    """A pair list ``file_x,file_y[,label]`` (a header row of those names is optional; label Yes/No or 1/0).
    Relative paths are taken from ``root``, by default the CSV's folder. Either every row has a label or none."""
    import csv

    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise FacelabError(f"pair list {csv_file} not found; check the path")
    base = Path(root) if root else csv_file.parent
    with open(csv_file, newline="") as fh:
        rows = [(i + 1, [c.strip() for c in r]) for i, r in enumerate(csv.reader(fh)) if any(c.strip() for c in r)]
    if rows and [c.lower() for c in rows[0][1][:2]] == ["file_x", "file_y"]:
        rows = rows[1:]
    if not rows:
        raise FacelabError(f"{csv_file} lists no pairs; write one 'file_x,file_y[,label]' line per pair")
    first, second, labels = [], [], []
    for lineno, cells in rows:
        where = f"{csv_file}:{lineno}"
        if len(cells) not in (2, 3):
            raise FacelabError(f"{where}: expected 'file_x,file_y[,label]', got {len(cells)} fields")
        if (len(cells) == 3) != (len(rows[0][1]) == 3):
            raise FacelabError(f"{where}: give a label on every line or on none")
        for name, out in zip(cells[:2], (first, second)):
            path = base / name
            if not path.is_file():
                raise FacelabError(f"{where}: {path} not found; fix the path or give --root the folder the paths start in")
            out.append(path)
        if len(cells) == 3:
            if cells[2].lower() not in LABELS:
                raise FacelabError(f"{where}: label {cells[2]!r} is not Yes/No or 1/0")
            labels.append(LABELS[cells[2].lower()])
    same = np.array(labels, bool) if labels else None
    return Pairs(first, second, same, np.zeros(len(first), int))
