"""Every face detector and landmarker facelab can build, by name.

Adding a backend is one file (a class with ``detect`` or ``landmarks``) and one line here; the CLI's
choices and help, the extraction config and the worker-process decision all read these tables.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from facelab.core.errors import FacelabError
from facelab.detect.base import Detector, Landmarker


@dataclass(frozen=True)
class Backend:
    target: str  # "module:Class"
    summary: str  # one phrase for --help
    torch: bool  # a torch network: takes ``device=``, releases the GIL (dlib code does not: worker processes)
    weights: str | None = None  # what the user must supply with --detector-weights/--landmarker-weights, or bundled
    min_face: int = 0  # detectors: the smallest face side (pixels) found without upscaling the image

    def build(self, name: str, weights: str | None, device: str, option: str):
        module, cls = self.target.split(":")
        factory = getattr(importlib.import_module(module), cls)
        if self.weights:
            if not weights:
                raise FacelabError(f"{option} {name} needs {option}-weights PATH ({self.weights} are not bundled)")
            return factory(weights, device=device)
        return factory(device=device) if self.torch else factory()


DETECTORS: dict[str, Backend] = {
    "hog": Backend("facelab.detect.dlib_models:HogDetector", "dlib's HOG, fast, frontal faces of 80 px and up",
                   torch=False, min_face=80),
    "mtcnn": Backend("facelab.detect.mtcnn:MtcnnDetector", "MTCNN, turned and small faces; weights from the "
                     "facenet-pytorch wheel", torch=True, min_face=20),
    "dlib-cnn": Backend("facelab.detect.dlib_models:CnnDetector", "dlib's MMOD CNN, turned faces, slow",
                        torch=False, min_face=80),
    "s3fd": Backend("facelab.detect.s3fd:S3FDDetector", "DeepFaceLab's S3FD, needs --detector-weights",
                    torch=True, weights="S3FD weights", min_face=16),
}
LANDMARKERS: dict[str, Backend] = {
    "dlib68": Backend("facelab.detect.dlib_models:DlibLandmarker", "dlib's 68 points, bundled", torch=False),
    "fan": Backend("facelab.detect.fan:FANLandmarker", "2D-FAN, needs --landmarker-weights", torch=True,
                   weights="2D-FAN weights"),
}


def _backend(table: dict[str, Backend], name: str, what: str) -> Backend:
    if name not in table:
        raise FacelabError(f"unknown {what} {name!r}; use one of {', '.join(table)}")
    return table[name]


def make_detector(name: str, weights: str | None = None, device: str = "auto") -> Detector:
    return _backend(DETECTORS, name, "detector").build(name, weights, device, "--detector")


def make_landmarker(name: str, weights: str | None = None, device: str = "auto") -> Landmarker:
    return _backend(LANDMARKERS, name, "landmarker").build(name, weights, device, "--landmarker")


def choices_help(table: dict[str, Backend]) -> str:
    """``name (summary), ...`` for an option's help text."""
    return ", ".join(f"{name} ({b.summary})" for name, b in table.items())
