"""Simulated low-resolution faces: what a face from a small swap network or a far-away camera looks like.

A sharp face is blurred a little, shrunk 2-4x with a random interpolation, given a little noise and
JPEG-compressed, then enlarged back to its size with bicubic interpolation. That enlarged face is both
the enhancer's input and the bicubic baseline every figure is compared with, so "enhanced vs bicubic"
measures exactly what the network adds. Training draws every degradation at random
(:func:`random_degradation`); the held-out report uses the three fixed :data:`LEVELS`, so the figures
of different runs and models compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


@dataclass(frozen=True)
class Degradation:
    scale: float  # the face is shrunk by this factor
    blur: float  # Gaussian blur sigma in pixels of the sharp face, before shrinking (0 = none)
    jpeg: int  # JPEG quality of the small face (100 = not compressed)
    noise: float  # standard deviation of Gaussian noise added to the small face, in 8-bit steps
    interpolation: int = cv2.INTER_AREA  # how the face is shrunk


# The held-out report's levels: each shrinks further and degrades a little more.
LEVELS: dict[str, Degradation] = {
    "x2": Degradation(2.0, 0.5, 85, 1.0),
    "x3": Degradation(3.0, 0.7, 70, 2.0),
    "x4": Degradation(4.0, 0.9, 55, 3.0),
}


def random_degradation(rng: np.random.Generator) -> Degradation:
    """A training degradation: shrink 2-4x by area, bilinear or bicubic interpolation, blur sigma 0-1 px,
    JPEG quality 40-95, noise 0-4 steps."""
    return Degradation(scale=float(rng.uniform(2.0, 4.0)), blur=float(rng.uniform(0.0, 1.0)),
                       jpeg=int(rng.integers(40, 96)), noise=float(rng.uniform(0.0, 4.0)),
                       interpolation=INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))])


def degrade(face: np.ndarray, d: Degradation, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the small face, the small face enlarged back to ``face``'s size with bicubic interpolation), both
    uint8 BGR; ``rng`` draws the noise."""
    h, w = face.shape[:2]
    img = cv2.GaussianBlur(face, (0, 0), d.blur) if d.blur > 0 else face
    small = cv2.resize(img, (max(1, round(w / d.scale)), max(1, round(h / d.scale))), interpolation=d.interpolation)
    if d.noise > 0:
        small = np.clip(small + rng.normal(0.0, d.noise, small.shape), 0, 255).round().astype(np.uint8)
    if d.jpeg < 100:
        ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, d.jpeg])
        small = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return small, cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
