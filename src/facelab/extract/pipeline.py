"""The extraction loop: decode -> detect (worker processes) -> landmarks and tracking -> align -> write.

The main process decodes frames and keeps a bounded window of detection jobs in flight in a process
pool (detection on a downscaled grey copy is the expensive step), then finds landmarks at full
resolution, tracks faces across video frames, aligns each face to the face type's template and writes
it with its metadata. Progress is saved as it goes so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from facelab.align.pose import estimate_pose
from facelab.align.transform import align_matrix, transform_points, warp_to_face
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text, ensure_folder, remove_stale_temps
from facelab.core.progress import progress
from facelab.core.workers import close_pool, worker_pool
from facelab.detect.base import Detection
from facelab.detect.registry import DETECTORS, make_detector, make_landmarker
from facelab.extract.config import ExtractConfig
from facelab.extract.tracking import FaceTracker, TrackedFace
from facelab.face.metadata import FaceMeta, write_face
from facelab.faceset.store import PACK_NAME
from facelab.io.frames import frame_stem
from facelab.io.images import is_image_file, list_images, read_image
from facelab.io.video import is_video_file, iter_frames, probe

STATE_NAME = ".extract_state.json"


@dataclass
class Frame:
    key: str  # frame file stem or zero-padded frame number: names the faces "<key>_<n>"
    source_filename: str
    source_frame: int | None
    image: np.ndarray


@dataclass
class ExtractStats:
    frames: int = 0
    faces: int = 0
    resumed: int = 0
    no_face: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = f"{self.frames} frames, {self.faces} faces, {len(self.no_face)} frames without a face"
        return line + (f" ({self.resumed} frames done earlier, skipped)" if self.resumed else "")


def _open_source(path: Path, fps: float | None) -> tuple[Iterator[Frame], int, bool]:
    """Frames of a video, a folder of frames/photos or one photo; also the count and whether they
    form a sequence (video or numbered frames) that tracking may follow."""
    if not path.exists():
        raise FacelabError(f"input {path} not found; give a video, a folder of images or an image")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FacelabError(f"input folder {path} holds no images; give a folder of frames or photos")
        sequence = all(p.stem.isdigit() for p in files)
        frames = (Frame(p.stem, p.name, None, read_image(p)) for p in files)
        return frames, len(files), sequence
    if is_image_file(path):
        return iter([Frame(path.stem, path.name, None, read_image(path))]), 1, False
    if not is_video_file(path):
        raise FacelabError(f"{path} is neither a video nor an image; give a video, a folder of images or an image")
    info = probe(path)
    total = info.frame_count if not fps else int(info.duration * min(fps, float(info.fps)))
    frames = (Frame(frame_stem(i), path.name, i, img) for i, img in iter_frames(path, fps))
    return frames, total, True


# --- detection, run in worker processes -------------------------------------------------------------
_worker_detector = None


def _init_worker(name: str, weights: str | None, device: str, threads: int = 0) -> None:
    """Build this process's detector; ``threads`` caps torch's CPU threads (one a worker: several
    workers of several threads each made MTCNN ten times slower, spinning on each other's cores)."""
    global _worker_detector
    _worker_detector = make_detector(name, weights, device)
    if threads and DETECTORS[name].torch:
        import torch

        torch.set_num_threads(threads)


def _detect_job(small: np.ndarray, scale: float) -> list[Detection]:
    return [d.scaled(scale) for d in _worker_detector.detect(small)]  # type: ignore[union-attr]


def _detection_copy(image: np.ndarray, cfg: ExtractConfig, sequence: bool) -> tuple[np.ndarray, float]:
    """The image the detector sees and the factor back to source pixels.

    Video frames are shrunk to ``detect_size`` for speed (faces in footage are large); photos are
    searched at full size, upscaled (up to 2x) so faces of ``min_face_size`` reach the smallest face the
    detector finds (dlib's 80 px window; MTCNN's 20 px needs no upscaling).
    """
    h, w = image.shape[:2]
    if sequence:
        f = min(1.0, cfg.detect_size / max(h, w)) if cfg.detect_size > 0 else 1.0
    else:
        native = DETECTORS[cfg.detector].min_face
        f = float(np.clip(native / max(cfg.min_face_size, 1), 1.0, 2.0)) if max(h, w) < 2000 else 1.0
    if f == 1.0:
        return image, 1.0
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (round(w * f), round(h * f)), interpolation=interp), 1.0 / f


def _resolve_device(name: str):
    from facelab.core.device import resolve_device  # imports torch: only for the torch detectors

    return resolve_device(name)


class _Detections:
    """Runs detection in a pool of worker processes, one a core, or in this process, with at most
    ``window`` frames in flight so memory stays bounded on long videos.

    dlib holds the GIL and a small torch net on the CPU uses its threads badly, so on the CPU every
    detector gets worker processes; a detector on the GPU runs here, and one image is detected here (a pool
    would only add its start-up time)."""

    def __init__(self, cfg: ExtractConfig, sequence: bool, total: int):
        self.cfg, self.sequence = cfg, sequence
        workers = cfg.workers or os.cpu_count() or 1
        on_gpu = DETECTORS[cfg.detector].torch and _resolve_device(cfg.device).type == "cuda"
        self.pool = None
        # built here first in any case: a missing or wrong weight file is reported in one line, where a
        # worker failing to start would only be restarted by the pool, for ever
        _init_worker(cfg.detector, cfg.detector_weights, cfg.device)
        if workers > 1 and total > 1 and not on_gpu:
            self.pool = worker_pool(workers, _init_worker, (cfg.detector, cfg.detector_weights, cfg.device, 1))
        self.window = 3 * workers

    def run(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, list[Detection]]]:
        pending: deque = deque()
        for frame in frames:
            small, scale = _detection_copy(frame.image, self.cfg, self.sequence)
            if small.ndim == 3 and self.cfg.detector == "hog":
                small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
            if self.pool is None:
                yield frame, _detect_job(small, scale)
                continue
            pending.append((frame, self.pool.apply_async(_detect_job, (small, scale))))
            if len(pending) >= self.window:
                done, job = pending.popleft()
                yield done, job.get()
        while pending:
            done, job = pending.popleft()
            yield done, job.get()

    def close(self, finished: bool) -> None:
        if self.pool is not None:
            close_pool(self.pool, finished)


# --- alignment and output ----------------------------------------------------------------------------
def align_face(image: np.ndarray, face: TrackedFace, frame: Frame, index: int, cfg: ExtractConfig,
               detector: str, landmarker: str) -> tuple[np.ndarray, FaceMeta]:
    """Cut the aligned face out of ``image`` and describe it."""
    h, w = image.shape[:2]
    mat = align_matrix(face.landmarks, cfg.size, cfg.face_type)
    yaw, pitch, roll = estimate_pose(face.landmarks, w, h)
    meta = FaceMeta(
        source_filename=frame.source_filename, source_frame=frame.source_frame, source_size=(w, h),
        face_index=index, source_rect=[float(v) for v in face.box], source_landmarks=face.landmarks,
        landmarks=transform_points(face.landmarks, mat), image_to_face=mat, face_type=cfg.face_type,
        size=cfg.size, detector=detector + ("+track" if face.redetected else ""), landmarker=landmarker,
        yaw=yaw, pitch=pitch, roll=roll,
    )
    return warp_to_face(image, mat, cfg.size), meta


def draw_debug(image: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
    out = image.copy()
    for face in faces:
        color = (0, 200, 255) if face.redetected else (0, 255, 0)
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
        for x, y in face.landmarks:
            cv2.circle(out, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1)
    return out


class _State:
    """Which frames are done, saved atomically every few seconds so a killed run resumes.

    Saving by time, not by frame count, keeps the cost of rewriting the list bounded on long videos.
    """

    SAVE_EVERY_S = 5.0

    def __init__(self, out_dir: Path, source: Path):
        self.saved_at = time.monotonic()
        self.path = out_dir / STATE_NAME
        self.source = str(source.resolve())
        self.done: set[str] = set()
        self.stats = ExtractStats()
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except ValueError:
                data = {}
            if data.get("source") == self.source:
                self.done = set(data.get("done", []))
                self.stats = ExtractStats(data.get("frames", 0), data.get("faces", 0), 0, data.get("no_face", []))

    def save(self) -> None:
        self.saved_at = time.monotonic()
        s = self.stats
        atomic_write_text(self.path, json.dumps({"source": self.source, "done": sorted(self.done),
                                                 "frames": s.frames, "faces": s.faces, "no_face": s.no_face}))


def extract(source: str | Path, out_dir: str | Path, cfg: ExtractConfig | None = None) -> ExtractStats:
    """Extract aligned faces from ``source`` into ``out_dir``; returns counts for the whole job."""
    cfg = cfg or ExtractConfig()
    source, out_dir = Path(source), Path(out_dir)
    frames, total, sequence = _open_source(source, cfg.fps)
    if (out_dir / PACK_NAME).is_file():
        raise FacelabError(f"output folder {out_dir} is a packed faceset; run `facelab faceset unpack {out_dir}` "
                           "first or extract into another folder")
    for folder in (out_dir, cfg.debug_dir):
        if folder:
            ensure_folder(folder, "output folder")
    remove_stale_temps(out_dir)  # left by a killed run: never faces, and 1-30 MB each
    landmarker = make_landmarker(cfg.landmarker, cfg.landmarker_weights, cfg.device)
    tracker = FaceTracker(landmarker, smooth=cfg.track and sequence, max_missed=8 if cfg.track and sequence else 0)
    state = _State(out_dir, source)
    stats = state.stats
    detections = _Detections(cfg, sequence, total)
    ext = "." + cfg.format
    finished = False
    try:
        with progress(total=total, desc="extract", unit="frame") as bar:
            for frame, found in detections.run(_skip_done(frames, state, stats, bar)):
                found = sorted((d for d in found if d.size >= cfg.min_face_size), key=lambda d: -d.size)
                faces = tracker.update(frame.image, found)
                if cfg.max_faces:
                    faces = faces[: cfg.max_faces]
                for k, face in enumerate(faces):
                    img, meta = align_face(frame.image, face, frame, k, cfg, cfg.detector, landmarker.name)
                    write_face(out_dir / f"{frame.key}_{k}{ext}", img, meta, cfg.jpeg_quality)
                if cfg.debug_dir:
                    cv2.imwrite(str(Path(cfg.debug_dir) / f"{frame.key}.jpg"), draw_debug(frame.image, faces))
                stats.frames += 1
                stats.faces += len(faces)
                if not faces:
                    stats.no_face.append(frame.source_filename if frame.source_frame is None else frame.key)
                state.done.add(frame.key)
                if time.monotonic() - state.saved_at >= state.SAVE_EVERY_S:
                    state.save()
                bar.update()
                bar.set_postfix(faces=stats.faces, refresh=False)
        finished = True
    finally:
        detections.close(finished)
        state.save()
    return stats


def faceset_of(source: str | Path, out: str | Path, face_type: str | None = None) -> Path:
    """A folder of aligned faces as it is; a video, photo or folder of frames/photos extracted into ``out``.

    With ``face_type`` an aligned folder must hold that face type (a model needs it), and extraction uses
    it; without, any aligned folder will do and extraction uses the default.
    """
    from facelab.face.metadata import read_meta

    source, out = Path(source), Path(out)
    if source.is_dir():
        images = list_images(source)
        meta = read_meta(images[0]) if images else None
        if meta is not None:
            if face_type and meta.face_type != face_type:
                raise FacelabError(f"{source} holds {meta.face_type} faces but the model needs {face_type}; give "
                                   "the video instead (it is extracted for you) or re-extract with that face type")
            return source
    elif not source.is_file():
        raise FacelabError(f"{source} not found; give a video, photos, a folder of frames or a faceset folder")
    extract(source, out, ExtractConfig(face_type=face_type) if face_type else ExtractConfig())
    return out


def _skip_done(frames: Iterator[Frame], state: _State, stats: ExtractStats, bar) -> Iterator[Frame]:
    """Pass on the frames a previous run did not finish; count the others as resumed."""
    for frame in frames:
        if frame.key in state.done:
            stats.resumed += 1
            bar.update()
            continue
        yield frame
