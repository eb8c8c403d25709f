"""The three interfaces of the face stack and the registry that builds them by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facelab.core.errors import FacelabError

DETECTORS = ("hog", "dlib-cnn", "s3fd")
LANDMARKERS = ("dlib68", "fan")


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


def make_detector(name: str, weights: str | None = None, device: str = "auto") -> Detector:
    if name == "hog":
        from facelab.detect.dlib_models import HogDetector

        return HogDetector()
    if name == "dlib-cnn":
        from facelab.detect.dlib_models import CnnDetector

        return CnnDetector()
    if name == "s3fd":
        if not weights:
            raise FacelabError("--detector s3fd needs --detector-weights PATH (S3FD weights are not bundled)")
        from facelab.detect.s3fd import S3FDDetector

        return S3FDDetector(weights, device=device)
    raise FacelabError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}")


def make_landmarker(name: str, weights: str | None = None, device: str = "auto") -> Landmarker:
    if name == "dlib68":
        from facelab.detect.dlib_models import DlibLandmarker

        return DlibLandmarker()
    if name == "fan":
        if not weights:
            raise FacelabError("--landmarker fan needs --landmarker-weights PATH (2D-FAN weights are not bundled)")
        from facelab.detect.fan import FANLandmarker

        return FANLandmarker(weights, device=device)
    raise FacelabError(f"unknown landmarker {name!r}; use one of {', '.join(LANDMARKERS)}")
