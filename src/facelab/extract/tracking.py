"""Temporal face tracking for video: keeps a turning head's face when the frontal detector loses it.

dlib's HOG detector and 68-point model are weak on profiles. Between frames a face moves little, so:
- detections are matched to the previous frame's faces by box overlap;
- a face the detector missed is looked for again in the box its previous landmarks span, and kept if
  the new landmarks agree with the old ones in place and size (for up to ``max_missed`` frames);
- landmark jitter smaller than a few percent of the eye distance is smoothed away, while real
  motion passes through undamped, so the aligned faces do not shake and do not lag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelab.detect.base import Detection, Landmarker
from facelab.metrics.iou import box_covered, box_iou


@dataclass
class TrackedFace:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (68, 2) smoothed
    score: float
    redetected: bool  # True when found from the previous frame's box rather than by the detector


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The box dlib's HOG detector would give for these landmarks.

    Measured on the sample clips: the HOG box spans the landmarks' width, starts ~8% of their height
    above the brows and ends ~3.5% above the chin.
    """
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    w, h = x1 - x0, y1 - y0
    return (x0 - 0.023 * w, y0 - 0.08 * h, x1, y1 - 0.035 * h)


NESTED = 0.5  # a face with more than this share of its box inside a larger face's box is not a face of its own


def eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))) or 1.0


class _Track:
    def __init__(self, landmarks: np.ndarray, score: float):
        self.landmarks, self.score, self.missed = landmarks, score, 0


class FaceTracker:
    def __init__(self, landmarker: Landmarker, smooth: bool = True, max_missed: int = 8,
                 jitter: float = 0.06, min_alpha: float = 0.35):
        self.landmarker, self.smooth, self.max_missed = landmarker, smooth, max_missed
        self.jitter, self.min_alpha = jitter, min_alpha
        self.tracks: list[_Track] = []

    def _smoothed(self, track: _Track, raw: np.ndarray) -> np.ndarray:
        if not self.smooth:
            return raw
        motion = float(np.abs(raw - track.landmarks).mean())
        alpha = float(np.clip(motion / (self.jitter * eye_distance(raw)), self.min_alpha, 1.0))
        return track.landmarks + alpha * (raw - track.landmarks)

    def _refind(self, image: np.ndarray, track: _Track, rounds: int = 4) -> np.ndarray | None:
        """Fit landmarks in the previous face's box, re-centre the box on them and fit again until the
        box stops moving; a face that is really there converges, a vanished one does not."""
        first = box = landmark_box(track.landmarks)
        for _ in range(rounds):
            lms = self.landmarker.landmarks(image, box)
            new_box = landmark_box(lms)
            if box_iou(box, new_box) > 0.9:
                size_ratio = (new_box[2] - new_box[0]) / max(1e-6, first[2] - first[0])
                return lms if 0.8 < size_ratio < 1.25 else None
            box = new_box
        return None

    def update(self, image: np.ndarray, detections: list[Detection]) -> list[TrackedFace]:
        """Faces of this frame, in detection order, then faces kept by tracking."""
        raw = [(d, self.landmarker.landmarks(image, d.box)) for d in detections]
        out: list[TrackedFace] = []
        unmatched = list(self.tracks)
        kept: list[_Track] = []
        for det, lms in raw:
            box = landmark_box(lms)
            best = max(unmatched, key=lambda t: box_iou(box, landmark_box(t.landmarks)), default=None)
            if best is not None and box_iou(box, landmark_box(best.landmarks)) > 0.3:
                unmatched.remove(best)
                lms = self._smoothed(best, lms)
            track = _Track(lms, det.score)
            kept.append(track)
            out.append(TrackedFace(det.box, lms, det.score, False))
        for track in unmatched:
            if track.missed >= self.max_missed:
                continue
            lms = self._refind(image, track)
            if lms is None:
                continue
            lms = self._smoothed(track, lms)
            new = _Track(lms, track.score)
            new.missed = track.missed + 1
            kept.append(new)
            out.append(TrackedFace(landmark_box(lms), lms, track.score, True))
        keep = _not_nested([landmark_box(face.landmarks) for face in out])
        self.tracks = [kept[i] for i in keep]
        return [out[i] for i in keep]


def _not_nested(boxes: list[tuple[float, float, float, float]]) -> list[int]:
    """Indices (in their order) of the boxes that are not mostly inside a larger kept box.

    A face inside another face's box is a false detection (HOG finds a "face" in the eyes of a laughing
    face) or a second track of the same face; either would be pasted as a second patch by merge.
    """
    by_size = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    kept: list[int] = []
    for i in by_size:
        if all(box_covered(boxes[i], boxes[j]) <= NESTED for j in kept):
            kept.append(i)
    return sorted(kept)
