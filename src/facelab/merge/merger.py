"""The merge loop: plan which faces belong to which frame, run the model in batches in this process,
and hand each frame to a pool of compositing processes that write the merged frame and its mask.

The model stays on the main device and sees batches of faces; compositing (decode, colour transfer,
warp, blend, encode) is CPU work per frame and scales with processes. Output files are written
atomically, so an interrupted merge resumes by skipping every frame already on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.pool import Pool, ThreadPool
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from facelab.align.transform import align_matrix, compose, covers, invert, warp_to_face
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path
from facelab.core.prefetch import prefetch
from facelab.core.progress import progress
from facelab.core.workers import worker_pool
from facelab.face.metadata import FaceMeta
from facelab.faceset.store import Faceset
from facelab.io.frames import frame_name
from facelab.io.images import list_images, read_image, write_image
from facelab.io.video import is_video_file
from facelab.merge.composite import FaceInput, merge_frame
from facelab.merge.config import MergeConfig
from facelab.merge.masks import mask_inputs, segmenter_mask_in_crop
from facelab.provenance.signing import Credentials, identity
from facelab.provenance.stamp import Stamp

if TYPE_CHECKING:  # torch is imported only when a mask mode runs the segmenter
    from facelab.merge.segmenter_prd import PredictedFaceSegmenter

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What merge needs from a trained model (``facelab.swap.predictor.SwapPredictor`` provides it)."""

    resolution: int
    face_type: str

    def predict(self, faces: np.ndarray, src_mask: bool = True,
                dst_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]: ...


@dataclass
class MergePlan:
    """The dst frames in order and, for each, the indices of its faces in the faceset."""

    frames: list[Path]
    faceset: Faceset
    faces_of: dict[int, list[int]] = field(default_factory=dict)

    @property
    def face_count(self) -> int:
        return sum(len(v) for v in self.faces_of.values())


@dataclass
class MergeStats:
    frames: int  # frames in the input folder
    merged: int  # frames written by this run
    skipped: int  # frames already done (resume)
    faces: int  # faces swapped by this run
    seconds: float
    marked: bool = False  # the frames with a swapped face carry the watermark and a signed manifest

    @property
    def fps(self) -> float:
        return self.merged / self.seconds if self.seconds > 0 else 0.0


def _frame_key(meta: FaceMeta) -> str:
    """The stem of the frame file a face came from (faces extracted from a video name the frame number)."""
    if meta.source_frame is not None and is_video_file(Path(meta.source_filename)):
        return Path(frame_name(meta.source_frame, "png")).stem
    return Path(meta.source_filename).stem


def plan_merge(input_dir: Path, aligned_dir: Path) -> MergePlan:
    frames = list_images(input_dir)
    if not frames:
        raise FacelabError(f"{input_dir} holds no frame images; run `facelab frames VIDEO -o {input_dir}` first")
    if not aligned_dir.is_dir():
        raise FacelabError(f"{input_dir} has no extracted faces ({aligned_dir} is missing); run "
                           f"`facelab extract {input_dir} -o {aligned_dir}` first")
    faceset = Faceset.open(aligned_dir)
    index = {p.stem: k for k, p in enumerate(frames)}
    plan = MergePlan(frames, faceset)
    orphans = 0
    for i, meta in enumerate(faceset.metas):
        k = index.get(_frame_key(meta))
        if k is None:
            orphans += 1
            continue
        plan.faces_of.setdefault(k, []).append(i)
    if orphans == len(faceset):
        raise FacelabError(f"none of the faces in {aligned_dir} comes from a frame in {input_dir} (first one names "
                           f"{faceset.metas[0].source_filename}); extract faces from these frames")
    if orphans:
        log.warning("%d faces in %s name frames that are not in %s; they are ignored", orphans, aligned_dir, input_dir)
    for faces in plan.faces_of.values():
        faces.sort(key=lambda i: faceset.metas[i].face_index)
    return plan


def model_input(faceset: Faceset, i: int, frame: Path, crop_mat: np.ndarray, size: int) -> np.ndarray:
    """The model's (size, size) crop of face ``i``: cut from its aligned image when that image covers
    the crop (no frame decode in the main process), else from the frame."""
    meta = faceset.metas[i]
    aligned_to_crop = compose(crop_mat, invert(meta.image_to_face))
    if not covers(aligned_to_crop, meta.size, meta.size, size):
        return warp_to_face(read_image(frame), crop_mat, size)
    img = faceset.image(i)
    if img.shape[0] != meta.size:
        raise FacelabError(f"{faceset.root / faceset.names[i]} is {img.shape[0]} px but its metadata says "
                           f"{meta.size}; re-extract this face")
    return warp_to_face(img, aligned_to_crop, size)


@dataclass
class FrameTask:
    """One frame for a compositing process: where to read and write, and its faces' predictions."""

    frame: Path
    output: Path
    mask_output: Path | None
    faces: list[FaceInput]
    sources: list[tuple[str, tuple[int, int]]]  # (aligned face name, size of the frame it was extracted from)
    expected_size: tuple[int, int]  # (width, height) every frame must have


# Set by _init_worker in each compositing process (or thread, when compositing in the main process).
_WORKER: dict = {}


def _init_worker(cfg: MergeConfig, face_type: str, resolution: int, credentials: Credentials | None) -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend
    if "stamp" not in _WORKER or _WORKER.get("credentials") != credentials:  # threads share one stamp
        _WORKER.update(stamp=Stamp(credentials) if credentials else None, credentials=credentials,
                       sign_lock=threading.Lock())
    _WORKER.update(cfg=cfg, face_type=face_type, resolution=resolution)


def _run_task(task: FrameTask) -> int:
    """Merge one frame and write it (and its mask); returns the number of faces pasted."""
    cfg: MergeConfig = _WORKER["cfg"]
    frame = read_image(task.frame)
    height, width = frame.shape[:2]
    if (width, height) != task.expected_size:
        ew, eh = task.expected_size
        raise FacelabError(f"{task.frame} is {width}x{height} but the other frames are {ew}x{eh}; all frames of "
                           "a video must have one size (re-export the frames)")
    for name, (sw, sh) in task.sources:
        if (sw, sh) != (width, height):
            raise FacelabError(f"face {name} was extracted from a {sw}x{sh} image but {task.frame} is "
                               f"{width}x{height}; re-extract the faces from these frames")
    needs_work = task.faces or cfg.blend == "raw-predict" or cfg.denoise_power or cfg.bicubic_degrade_power \
        or cfg.color_degrade_power
    if needs_work:
        out, mask = merge_frame(frame, task.faces, cfg, _WORKER["face_type"], _WORKER["resolution"])
    else:
        out, mask = frame, np.zeros((height, width), np.uint8)
    stamp: Stamp | None = _WORKER["stamp"] if task.faces else None  # a frame without a face is not synthetic
    if stamp is not None:
        out = stamp.mark(out)  # the whole frame: on the face alone it does not survive (docs/provenance.md)
    if not needs_work and task.frame.suffix.lower() == task.output.suffix.lower():
        with atomic_path(task.output) as tmp:  # a frame without a face: copy its bytes, no re-encode
            shutil.copyfile(task.frame, tmp)
    else:
        write_image(task.output, out, cfg.jpeg_quality)
    if stamp is not None:
        with _WORKER["sign_lock"]:
            stamp.sign(task.output)
    if task.mask_output is not None:
        write_image(task.mask_output, mask)
    return len(task.faces)


def check_output_dirs(input_dir: Path, output_dir: Path, mask_dir: Path | None = None) -> None:
    """Refuse writing merged frames or masks into the frames' own folder: each would replace the frame of
    the same name (or, resuming, count it as already merged and merge nothing)."""
    for folder, flag in ((output_dir, "--output-dir"), (mask_dir, "--output-mask-dir")):
        if folder is not None and Path(folder).resolve() == Path(input_dir).resolve():
            raise FacelabError(f"{flag} {folder} is the input folder itself; merged frames would replace the "
                               f"frames: give another folder, e.g. {Path(input_dir) / 'merged'}")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / ".facelab-write-test") as tmp:
            tmp.write_bytes(b"")
        (folder / ".facelab-write-test").unlink()
    except OSError as exc:
        raise FacelabError(f"cannot write to {folder} ({exc.strerror or exc}); choose a writable output folder") from None


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _worker_count(cfg: MergeConfig, model_on_cpu: bool) -> int:
    """Explicit ``workers``, else one per core; when the model runs on the CPU it keeps half the cores,
    because compositing processes competing with its threads made merging slower (2 cores, fp32, PNG:
    13.3 frames/s compositing in-process against 10.3 with two worker processes, benchmarks/merge_speed.py)."""
    if cfg.workers:
        return cfg.workers
    return max(1, _cores() // 2) if model_on_cpu else _cores()


def _compositing_pool(workers: int, init_args: tuple) -> tuple[Pool, int]:
    """Several workers: processes. One: threads in this process, one per core; OpenCV and numpy release
    the GIL, so they fill the time the model thread leaves idle (2 cores, bf16, PNG: 16.3 frames/s with one
    compositing thread, 18.6 with two; benchmarks/merge_speed.py --threads 1 0). Returns (pool, its size)."""
    if workers > 1:
        return worker_pool(workers, _init_worker, init_args), workers
    return ThreadPool(_cores(), _init_worker, init_args), _cores()


def prd_segmenter_for(cfg: MergeConfig, predictor: Predictor) -> PredictedFaceSegmenter | None:
    """The XSeg model that ``cfg.mask_mode`` runs on the swapped faces, loaded once per merge on the
    predictor's device; None for the modes that run none (they need no torch import for it)."""
    if "segmenter-prd" not in mask_inputs(cfg.mask_mode):
        return None
    from facelab.merge.segmenter_prd import load_prd_segmenter

    return load_prd_segmenter(cfg.segmenter_dir, getattr(predictor, "device", "cpu"), getattr(predictor, "precision", "fp32"))


def face_motion(plan: MergePlan, k: int, i: int) -> np.ndarray:
    """How far face ``i`` of frame ``k`` moves from the previous frame to the next, in frame pixels (the
    centre of its landmarks; DeepFaceLab measures the same span). A neighbouring frame's face is the one
    nearest to it, and only within the face's own width: farther away it is another face, a cut or a lost
    track, and that side counts as missing. With one side missing the other side's step counts twice, with
    both the face is taken as still."""
    here = np.asarray(plan.faceset.metas[i].source_landmarks, np.float64)
    centre, width = here.mean(0), float(np.ptp(here[:, 0]))

    def nearest(frame: int) -> np.ndarray | None:
        centres = [np.asarray(plan.faceset.metas[n].source_landmarks, np.float64).mean(0)
                   for n in plan.faces_of.get(frame, ())]
        best = min(centres, key=lambda c: float(np.linalg.norm(c - centre)), default=None)
        return best if best is not None and np.linalg.norm(best - centre) <= width else None

    before, after = nearest(k - 1), nearest(k + 1)
    if before is not None and after is not None:
        return after - before
    if before is None and after is None:
        return np.zeros(2)
    return 2 * (after - centre) if after is not None else 2 * (centre - before)


def _face_inputs(plan: MergePlan, items: list[tuple[int, int]], predictor: Predictor, mask_mode: str,
                 segmenter: PredictedFaceSegmenter | None = None) -> dict[int, list[FaceInput]]:
    """Run the model on the faces ``items`` = [(frame index, face index)] in one batch; only the masks that
    ``mask_mode`` uses are made: the learned ones predicted, the dst XSeg masks read, and ``segmenter``
    (from :func:`prd_segmenter_for`) run on the predicted faces."""
    size, face_type = predictor.resolution, predictor.face_type
    uses = mask_inputs(mask_mode)
    metas = [plan.faceset.metas[i] for _, i in items]
    landmarks = [np.asarray(meta.source_landmarks, np.float64) for meta in metas]
    mats = [align_matrix(lm, size, face_type) for lm in landmarks]
    crops = np.stack([model_input(plan.faceset, i, plan.frames[k], m, size) for (k, i), m in zip(items, mats)])
    faces, src_masks, dst_masks = predictor.predict(crops, src_mask="learned-src" in uses,
                                                    dst_mask="learned-dst" in uses)
    prd_masks = segmenter.masks(np.asarray(faces, np.float32), landmarks, mats) if "segmenter-prd" in uses else None
    out: dict[int, list[FaceInput]] = {}
    for j, ((k, i), meta, mat) in enumerate(zip(items, metas, mats)):
        out.setdefault(k, []).append(FaceInput(
            name=plan.faceset.names[i], crop_mat=mat, source_landmarks=landmarks[j],
            face=np.asarray(faces[j], np.float32),
            src_mask=None if src_masks is None else np.asarray(src_masks[j], np.float32),
            dst_mask=None if dst_masks is None else np.asarray(dst_masks[j], np.float32),
            seg_mask=segmenter_mask_in_crop(meta, mat, size) if "segmenter" in uses else None,
            prd_seg_mask=None if prd_masks is None else prd_masks[j],
            motion=mat[:, :2] @ face_motion(plan, k, i)))
    return out


def _chunks(frames: list[int], plan: MergePlan, batch_size: int):
    """Consecutive frames grouped so each group holds at most ``batch_size`` faces (or one frame)."""
    group: list[int] = []
    faces = 0
    for k in frames:
        n = len(plan.faces_of.get(k, ()))
        if group and faces + n > batch_size:
            yield group
            group, faces = [], 0
        group.append(k)
        faces += n
    if group:
        yield group


def _predicted_groups(plan: MergePlan, todo: list[int], predictor: Predictor, cfg: MergeConfig,
                      segmenter: PredictedFaceSegmenter | None):
    """(frame indices, their faces' model outputs) for each batch of ``todo``."""
    for group in _chunks(todo, plan, cfg.batch_size):
        items = [(k, i) for k in group for i in plan.faces_of.get(k, ())]
        yield group, (_face_inputs(plan, items, predictor, cfg.mask_mode, segmenter) if items else {})


def output_paths(plan: MergePlan, k: int, output_dir: Path, mask_dir: Path | None, cfg: MergeConfig) -> tuple[Path, Path | None]:
    stem = plan.frames[k].stem
    return output_dir / f"{stem}.{cfg.output_format}", (mask_dir / f"{stem}.png" if mask_dir else None)


def run_merge(predictor: Predictor, cfg: MergeConfig, input_dir: Path, output_dir: Path,
              mask_dir: Path | None = None, aligned_dir: Path | None = None, overwrite: bool = False,
              credentials: Credentials | None = None) -> MergeStats:
    """Merge every frame of ``input_dir`` into ``output_dir`` (frames without a face are copied through).
    With ``cfg.provenance`` every frame with a swapped face is watermarked and signed with ``credentials``
    (default: "face swap" without a model hash)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_output_dirs(input_dir, output_dir, mask_dir)
    plan = plan_merge(input_dir, Path(aligned_dir) if aligned_dir else input_dir / "aligned")
    segmenter = prd_segmenter_for(cfg, predictor)
    for folder in (output_dir, mask_dir):
        if folder is not None:
            _check_writable(Path(folder))
    first = read_image(plan.frames[0])
    expected = (first.shape[1], first.shape[0])
    todo = []
    for k in range(len(plan.frames)):
        out, mask = output_paths(plan, k, output_dir, mask_dir, cfg)
        if overwrite or not out.exists() or (mask is not None and not mask.exists()):
            todo.append(k)
    workers = _worker_count(cfg, str(getattr(predictor, "device", "cpu")).startswith("cpu"))
    if cfg.provenance:
        credentials = credentials or Credentials("face swap")
        identity()  # the signing identity is made (or refused) once, before the workers start
    init_args = (cfg, predictor.face_type, predictor.resolution, credentials if cfg.provenance else None)
    cv2_threads = cv2.getNumThreads()
    pool, size = _compositing_pool(workers, init_args)
    pending: deque = deque()
    max_pending = 4 * size
    merged_faces = 0
    start = time.perf_counter()
    try:
        with progress(total=len(plan.frames), initial=len(plan.frames) - len(todo), desc="merge", unit="frame") as bar:
            for group, inputs in prefetch(_predicted_groups(plan, todo, predictor, cfg, segmenter)):
                for k in group:
                    out, mask = output_paths(plan, k, output_dir, mask_dir, cfg)
                    faces = plan.faces_of.get(k, [])
                    task = FrameTask(plan.frames[k], out, mask, inputs.get(k, []),
                                     [(plan.faceset.names[i], tuple(plan.faceset.metas[i].source_size)) for i in faces],
                                     expected)
                    pending.append(pool.apply_async(_run_task, (task,)))
                    while len(pending) > max_pending:
                        merged_faces += pending.popleft().get()
                        bar.update()
            while pending:
                merged_faces += pending.popleft().get()
                bar.update()
    except Exception:
        pool.close()  # finish the frames already handed over (their faces are predicted) before reporting
        pool.join()
        raise
    finally:
        pool.terminate()
        pool.join()
        cv2.setNumThreads(cv2_threads)
    return MergeStats(len(plan.frames), len(todo), len(plan.frames) - len(todo), merged_faces,
                      time.perf_counter() - start, cfg.provenance)


def find_frame(plan: MergePlan, frame: str) -> int:
    """The index of the frame a user names: a file name (``00042.png``) or its number (``42``)."""
    for k, path in enumerate(plan.frames):
        if frame in (path.name, path.stem) or (frame.isdigit() and path.stem.isdigit() and int(path.stem) == int(frame)):
            return k
    raise FacelabError(f"no frame {frame!r} in {plan.frames[0].parent} (frames run from {plan.frames[0].name} to "
                       f"{plan.frames[-1].name}); give a frame number or file name from that folder")


def preview(predictor: Predictor, cfg: MergeConfig, input_dir: Path, frame: str,
            aligned_dir: Path | None = None) -> np.ndarray:
    """Original frame, merged frame and mask side by side, for tuning options on one frame."""
    input_dir = Path(input_dir)
    plan = plan_merge(input_dir, Path(aligned_dir) if aligned_dir else input_dir / "aligned")
    k = find_frame(plan, frame)
    items = [(k, i) for i in plan.faces_of.get(k, ())]
    if not items:
        log.warning("frame %s has no extracted face; the preview shows it unchanged", plan.frames[k].name)
    segmenter = prd_segmenter_for(cfg, predictor)
    faces = _face_inputs(plan, items, predictor, cfg.mask_mode, segmenter).get(k, []) if items else []
    original = read_image(plan.frames[k])
    merged, mask = merge_frame(original, faces, cfg, predictor.face_type, predictor.resolution)
    height = original.shape[0]
    panels = [original, merged, cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)]
    panels = [p if p.shape[0] == height else cv2.resize(p, (p.shape[1] * height // p.shape[0], height)) for p in panels]
    return np.concatenate(panels, axis=1)
