"""The three interfaces of the face stack; :mod:`facelab.detect.registry` builds backends by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float

    @property
    def size(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def scaled(self, factor: float) -> "Detection":
        return Detection(tuple(v * factor for v in self.box), self.score)  # type: ignore[arg-type]


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...


class Landmarker(Protocol):
    name: str

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray: ...


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...
