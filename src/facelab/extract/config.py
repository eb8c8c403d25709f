"""Every option of ``facelab extract``, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from facelab.align.face_types import FACE_TYPE_ALIASES, FACE_TYPES
from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES
from facelab.detect.registry import DETECTORS, LANDMARKERS, choices_help


@dataclass
class ExtractConfig(Validated):
    face_type: str = option("whole", "Crop of the aligned face: half, mid (mid-half), full, whole (whole face "
                            "with forehead) or head.", choices=FACE_TYPES, value_aliases=FACE_TYPE_ALIASES)
    size: int = option(256, "Side in pixels of each aligned face image.", low=16, high=2048)
    detector: str = option("hog", "Face detector: " + choices_help(DETECTORS) + ".", choices=tuple(DETECTORS))
    detector_weights: str | None = option(None, "Weights file for the s3fd detector.")
    landmarker: str = option("dlib68", "68-point landmarker: " + choices_help(LANDMARKERS) + ".",
                             choices=tuple(LANDMARKERS))
    landmarker_weights: str | None = option(None, "Weights file for the fan landmarker.")
    max_faces: int = option(0, "Keep at most this many faces per frame, largest first (0 = all).", low=0)
    min_face_size: int = option(40, "Ignore faces smaller than this many pixels (detector box side, in the source).",
                                low=0)
    detect_size: int = option(640, "Detect on a copy of each frame downscaled so its longer side is this many "
                              "pixels (landmarks are still found at full size); 0 = full size.", low=0)
    fps: float | None = option(None, "For video input: extract only this many frames per second (default: all).",
                               above=0)
    format: str = option("jpg", "Image format of the aligned faces.", choices=("jpg", "png"))
    jpeg_quality: int = option(95, "JPEG quality of the aligned faces (1-100).", low=1, high=100)
    track: bool = option(True, "For video input: smooth landmarks over time and re-find a face in the previous "
                         "frame's box when the detector misses it (keeps turning heads).")
    debug_dir: str | None = option(None, "Also write every frame with boxes and landmarks drawn into this folder.")
    workers: int = option(0, "Detection worker processes (0 = one per CPU core).", low=0)
    device: str = option("auto", f"Device for torch-based detectors and landmarkers: {DEVICE_HELP}.", choices=DEVICES)
