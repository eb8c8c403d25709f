"""The merge loop: plan which faces belong to which frame, run the model in batches in this process,
and hand each frame to a pool of compositing processes that write the merged frame and its mask.

The model stays on the main device and sees batches of faces; compositing (decode, colour transfer,
warp, blend, encode) is CPU work per frame and scales with processes. Output files are written
atomically, so an interrupted merge resumes by skipping every frame already on disk (unless the options
it was merged with changed since: the log next to the output folder, :mod:`facelab.merge.frame_settings`).

Each frame is merged with its own options (the interactive merger's per-frame settings, else the
command's), and :class:`FrameMerger` is the one way a frame is merged: the batch merge, ``--preview`` and
the interactive merger's page all call it, so a frame tuned on the page is the frame the batch merge
writes, pixel for pixel. The model sees the frames in fixed groups (:func:`frame_groups`) whichever frames
are left to do, because a network's output can differ in the last bits with the batch it ran in.
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
from typing import TYPE_CHECKING, Callable, Protocol

import cv2
import numpy as np

from facelab.align.transform import align_matrix, compose, covers, invert, warp_to_face
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, atomic_write_bytes
from facelab.core.prefetch import prefetch
from facelab.core.progress import progress
from facelab.core.workers import worker_pool
from facelab.face.metadata import FaceMeta
from facelab.faceset.store import Faceset
from facelab.io.frames import frame_name
from facelab.io.images import encode_image, list_images, read_image, write_image
from facelab.io.video import is_video_file
from facelab.merge import postprocess
from facelab.merge.composite import FaceInput, merge_frame
from facelab.merge.config import MergeConfig
from facelab.merge.frame_settings import FrameSettings, MergeLog, options_digest, settings_path
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
    tuned: int = 0  # frames whose options come from the interactive merger's per-frame settings
    stopped: bool = False  # stopped on request before every frame was done (the page's stop button)

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
    """One frame to merge: where to read and write, its options and its faces' predictions."""

    frame: Path
    output: Path | None  # None: merged to look at, not written (the interactive merger's page)
    mask_output: Path | None
    faces: list[FaceInput]
    sources: list[tuple[str, tuple[int, int]]]  # (aligned face name, size of the frame it was extracted from)
    expected_size: tuple[int, int]  # (width, height) every frame must have
    cfg: MergeConfig  # this frame's options (the per-frame settings, else the command's)


# Set by _init_worker in each compositing process (or thread, when compositing in the main process).
_WORKER: dict = {}


def _init_worker(face_type: str, resolution: int, credentials: Credentials | None) -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend
    if "stamp" not in _WORKER or _WORKER.get("credentials") != credentials:  # threads share one stamp
        _WORKER.update(stamp=Stamp(credentials) if credentials else None, credentials=credentials,
                       sign_lock=threading.Lock())
    _WORKER.update(face_type=face_type, resolution=resolution)


def merged_image(task: FrameTask, face_type: str, resolution: int,
                 stamp: Stamp | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """The merged frame of ``task`` as the merge writes it (with the invisible mark when ``stamp`` is given
    and the frame has a face), the mask that was pasted, and whether the frame was worked on (False: it
    has no face and no option changes it, so it is copied as it is)."""
    cfg = task.cfg
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
    needs_work = bool(task.faces or cfg.blend == "raw-predict" or cfg.denoise_power or cfg.bicubic_degrade_power
                      or cfg.color_degrade_power)
    if needs_work:
        out, mask = merge_frame(frame, task.faces, cfg, face_type, resolution)
    else:
        out, mask = frame, np.zeros((height, width), np.uint8)
    if stamp is not None and task.faces:  # a frame without a face is not synthetic
        out = stamp.mark(out)  # the whole frame: on the face alone it does not survive (docs/provenance.md)
    return out, mask, needs_work


def _run_task(task: FrameTask) -> int:
    """Merge one frame and write it (and its mask); returns the number of faces pasted."""
    stamp: Stamp | None = _WORKER["stamp"] if task.faces else None
    out, mask, worked = merged_image(task, _WORKER["face_type"], _WORKER["resolution"], stamp)
    if not worked and task.frame.suffix.lower() == task.output.suffix.lower():
        with atomic_path(task.output) as tmp:  # a frame without a face: copy its bytes, no re-encode
            shutil.copyfile(task.frame, tmp)
    else:
        data = encode_image(out, task.output.suffix, task.cfg.jpeg_quality)
        if stamp is not None:
            with _WORKER["sign_lock"]:
                data = stamp.signed(data, task.output)
        atomic_write_bytes(task.output, data)
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


def prd_segmenter_for(cfg: MergeConfig, predictor: Predictor,
                      mask_modes: set[str] | None = None) -> PredictedFaceSegmenter | None:
    """The XSeg model that ``cfg.mask_mode`` (or any of ``mask_modes``, the frames' own) runs on the swapped
    faces, loaded once per merge on the predictor's device; None for the modes that run none (they need no
    torch import for it)."""
    if not any("segmenter-prd" in mask_inputs(mode) for mode in (mask_modes or {cfg.mask_mode})):
        return None
    from facelab.merge.segmenter_prd import load_prd_segmenter

    return load_prd_segmenter(cfg.segmenter_dir, getattr(predictor, "device", "cpu"), getattr(predictor, "precision", "fp32"))


FacesFn = Callable[[np.ndarray], np.ndarray]  # predicted faces (N, R, R, 3) float BGR -> the same, changed


def super_resolution_for(cfg: MergeConfig, predictor: Predictor) -> FacesFn | None:
    """What ``cfg.super_resolution`` does to the predicted faces: the enhancer of ``cfg.enhancer_dir``, loaded
    once per merge on the predictor's device, blended in at that power; None at power 0 (no torch import)."""
    cfg.check()
    if not cfg.super_resolution:
        if cfg.enhancer_dir:
            log.warning("--enhancer-dir %s is not used: --super-resolution is 0", cfg.enhancer_dir)
        return None
    from facelab.enhance.apply import load_enhancer

    try:
        enhancer = load_enhancer(cfg.enhancer_dir, getattr(predictor, "device", "cpu"),
                                 getattr(predictor, "precision", "fp32"), cfg.batch_size)
    except FacelabError as exc:
        raise FacelabError(f"--enhancer-dir: {exc}") from None
    return lambda faces: postprocess.super_resolution(faces, np.stack(enhancer.enhance(faces)), cfg.super_resolution)


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
                 segmenter: PredictedFaceSegmenter | None = None,
                 super_resolution: FacesFn | None = None) -> dict[int, list[FaceInput]]:
    """Run the model on the faces ``items`` = [(frame index, face index)] in one batch; only the masks that
    ``mask_mode`` uses are made: the learned ones predicted, the dst XSeg masks read, and ``segmenter``
    (from :func:`prd_segmenter_for`) run on the predicted faces, after ``super_resolution`` (from
    :func:`super_resolution_for`) enhanced them."""
    size, face_type = predictor.resolution, predictor.face_type
    uses = mask_inputs(mask_mode)
    metas = [plan.faceset.metas[i] for _, i in items]
    landmarks = [np.asarray(meta.source_landmarks, np.float64) for meta in metas]
    mats = [align_matrix(lm, size, face_type) for lm in landmarks]
    crops = np.stack([model_input(plan.faceset, i, plan.frames[k], m, size) for (k, i), m in zip(items, mats)])
    faces, src_masks, dst_masks = predictor.predict(crops, src_mask="learned-src" in uses,
                                                    dst_mask="learned-dst" in uses)
    if super_resolution is not None:
        faces = super_resolution(np.asarray(faces, np.float32))
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


def frame_groups(plan: MergePlan, batch_size: int) -> list[list[int]]:
    """Every frame of ``plan`` in the groups the model sees together (consecutive frames, at most
    ``batch_size`` faces a group). They are fixed for a plan: a resumed merge, a re-merge of a few frames
    and the interactive merger's view of one frame run each face in the same batch as a full merge does."""
    return list(_chunks(list(range(len(plan.frames))), plan, batch_size))


def output_paths(plan: MergePlan, k: int, output_dir: Path, mask_dir: Path | None, cfg: MergeConfig) -> tuple[Path, Path | None]:
    stem = plan.frames[k].stem
    return output_dir / f"{stem}.{cfg.output_format}", (mask_dir / f"{stem}.png" if mask_dir else None)


class FrameMerger:
    """One merge: its frames and their faces, the model, each frame's options, and the one way a frame is
    merged (:meth:`predict` a group, then :meth:`frame` or the batch :meth:`run`).

    ``output_dir`` is where merged frames go; next to it are the per-frame settings (``OUTPUT_settings.yaml``)
    and the merge log; without it (``--preview`` of a frame alone) every frame has the command's
    options. With ``cfg.provenance`` every frame with a swapped face is watermarked and signed with
    ``credentials`` (default: "face swap" without a model hash).
    """

    def __init__(self, predictor: Predictor, cfg: MergeConfig, input_dir: Path, aligned_dir: Path | None = None,
                 output_dir: Path | None = None, mask_dir: Path | None = None, credentials: Credentials | None = None):
        self.predictor, self.cfg = predictor, cfg
        self.input_dir = Path(input_dir)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        if self.output_dir is not None:
            check_output_dirs(self.input_dir, self.output_dir, self.mask_dir)
        self.plan = plan_merge(self.input_dir, Path(aligned_dir) if aligned_dir else self.input_dir / "aligned")
        stems = [p.stem for p in self.plan.frames]
        self.settings = FrameSettings.load(settings_path(self.output_dir), cfg, stems) if self.output_dir \
            else FrameSettings(cfg, stems)
        self.groups = frame_groups(self.plan, cfg.batch_size)
        self.group_of = {k: g for g, group in enumerate(self.groups) for k in group}
        first = read_image(self.plan.frames[0])
        self.expected = (first.shape[1], first.shape[0])
        self.credentials = (credentials or Credentials("face swap")) if cfg.provenance else None
        self._segmenter: PredictedFaceSegmenter | None = None
        self._super_resolution = super_resolution_for(cfg, predictor)  # refused here, before any frame
        self._model_lock = threading.Lock()  # the page's view and its background merge share the model

    def _segmenter_for(self, modes: set[str]) -> PredictedFaceSegmenter | None:
        if self._segmenter is None:
            self._segmenter = prd_segmenter_for(self.cfg, self.predictor, modes)
        return self._segmenter

    def stamp(self) -> Stamp | None:
        """What marks the merged frames (None with provenance off)."""
        return Stamp(self.credentials) if self.credentials else None

    def predict(self, group: list[int], settings: FrameSettings) -> dict[int, list[FaceInput]]:
        """The model's output for the faces of the frames of ``group`` (one of :attr:`groups`): one model
        call per mask mode the frames have in ``settings``, making only the masks each mode uses."""
        by_mode: dict[str, list[tuple[int, int]]] = {}
        for k in group:
            for i in self.plan.faces_of.get(k, ()):
                by_mode.setdefault(settings.values(k)["mask_mode"], []).append((k, i))
        out: dict[int, list[FaceInput]] = {}
        with self._model_lock:
            segmenter = self._segmenter_for(set(by_mode)) if any("segmenter-prd" in mask_inputs(m) for m in by_mode) \
                else None
            for mode, items in by_mode.items():  # a frame's faces all have its mode: each lands in one call
                out.update(_face_inputs(self.plan, items, self.predictor, mode, segmenter, self._super_resolution))
        return out

    def task(self, k: int, inputs: dict[int, list[FaceInput]], settings: FrameSettings, output: Path | None = None,
             mask_output: Path | None = None) -> FrameTask:
        faces = self.plan.faces_of.get(k, [])
        return FrameTask(self.plan.frames[k], output, mask_output, inputs.get(k, []),
                         [(self.plan.faceset.names[i], tuple(self.plan.faceset.metas[i].source_size)) for i in faces],
                         self.expected, settings.config(k))

    def frame(self, k: int, inputs: dict[int, list[FaceInput]], settings: FrameSettings,
              stamp: Stamp | None) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``k`` merged with its options in ``settings`` (``inputs``: :meth:`predict` of its group),
        as the batch merge writes it when ``stamp`` is :meth:`stamp`; and its pasted mask."""
        out, mask, _ = merged_image(self.task(k, inputs, settings), self.predictor.face_type,
                                    self.predictor.resolution, stamp)
        return out, mask

    def todo(self, settings: FrameSettings, overwrite: bool = False) -> tuple[set[int], list[str], MergeLog]:
        """The frames a merge with ``settings`` has to write: all with ``overwrite``, else those whose output
        (or mask) is missing or was written with other options; with each frame's options digest and the log."""
        merge_log = MergeLog(self.output_dir)
        digests = [options_digest(settings.values(k)) for k in range(len(self.plan.frames))]
        todo = set()
        for k in range(len(self.plan.frames)):
            out, mask = output_paths(self.plan, k, self.output_dir, self.mask_dir, self.cfg)
            if overwrite or not out.exists() or (mask is not None and not mask.exists()) \
                    or merge_log.stale(out.name, digests[k]):
                todo.add(k)
        return todo, digests, merge_log

    def run(self, overwrite: bool = False, stop: threading.Event | None = None,
            on_frame: Callable[[int], None] | None = None) -> MergeStats:
        """Merge every frame not already done with its current options into :attr:`output_dir` (frames
        without a face are copied through); until done or ``stop`` is set (the frames handed over are
        finished first). ``on_frame(k)`` follows each frame written."""
        cfg, plan, output_dir = self.cfg, self.plan, self.output_dir
        if output_dir is None:
            raise FacelabError("a merge needs an output folder")
        settings = self.settings.snapshot()  # the page may change the live settings meanwhile
        modes = settings.mask_modes()
        if any("segmenter-prd" in mask_inputs(m) for m in modes):
            self._segmenter_for(modes)  # a missing or unusable --segmenter-dir is refused before any frame
        for folder in (output_dir, self.mask_dir):
            if folder is not None:
                _check_writable(Path(folder))
        todo, digests, merge_log = self.todo(settings, overwrite)
        groups = [g for g in self.groups if any(k in todo for k in g)]
        workers = _worker_count(cfg, str(getattr(self.predictor, "device", "cpu")).startswith("cpu"))
        if cfg.provenance:
            identity()  # the signing identity is made (or refused) once, before the workers start
        init_args = (self.predictor.face_type, self.predictor.resolution, self.credentials)

        def predicted():
            for group in groups:
                if stop is not None and stop.is_set():
                    return
                yield group, self.predict(group, settings)

        cv2_threads = cv2.getNumThreads()
        pool, size = _compositing_pool(workers, init_args)
        pending: deque = deque()
        max_pending = 4 * size
        merged = merged_faces = 0
        start = time.perf_counter()

        def finish(bar) -> None:
            nonlocal merged, merged_faces
            k, out, result = pending.popleft()
            merged_faces += result.get()
            merge_log.record(out.name, digests[k])
            merged += 1
            bar.update()
            if on_frame is not None:
                on_frame(k)

        try:
            with progress(total=len(plan.frames), initial=len(plan.frames) - len(todo), desc="merge", unit="frame") as bar:
                for group, inputs in prefetch(predicted()):
                    if stop is not None and stop.is_set():
                        break
                    for k in (k for k in group if k in todo):
                        out, mask = output_paths(plan, k, output_dir, self.mask_dir, cfg)
                        pending.append((k, out, pool.apply_async(_run_task, (self.task(k, inputs, settings, out, mask),))))
                        while pending and (len(pending) > max_pending or pending[0][2].ready()):
                            finish(bar)  # frames done are counted (and logged) as they come
                while pending:
                    finish(bar)
        except Exception:
            pool.close()  # finish the frames already handed over (their faces are predicted) before reporting
            pool.join()
            raise
        finally:
            pool.terminate()
            pool.join()
            cv2.setNumThreads(cv2_threads)
        tuned = sum(settings.owner(k) is not None for k in range(len(plan.frames)))
        return MergeStats(len(plan.frames), merged, len(plan.frames) - len(todo), merged_faces,
                          time.perf_counter() - start, cfg.provenance, tuned, merged < len(todo))


def run_merge(predictor: Predictor, cfg: MergeConfig, input_dir: Path, output_dir: Path,
              mask_dir: Path | None = None, aligned_dir: Path | None = None, overwrite: bool = False,
              credentials: Credentials | None = None) -> MergeStats:
    """Merge every frame of ``input_dir`` into ``output_dir`` (frames without a face are copied through),
    each with its options (the interactive merger's, saved next to ``output_dir``, else ``cfg``'s).
    With ``cfg.provenance`` every frame with a swapped face is watermarked and signed with ``credentials``
    (default: "face swap" without a model hash)."""
    return FrameMerger(predictor, cfg, input_dir, aligned_dir, output_dir, mask_dir, credentials).run(overwrite)


def find_frame(plan: MergePlan, frame: str) -> int:
    """The index of the frame a user names: a file name (``00042.png``) or its number (``42``)."""
    for k, path in enumerate(plan.frames):
        if frame in (path.name, path.stem) or (frame.isdigit() and path.stem.isdigit() and int(path.stem) == int(frame)):
            return k
    raise FacelabError(f"no frame {frame!r} in {plan.frames[0].parent} (frames run from {plan.frames[0].name} to "
                       f"{plan.frames[-1].name}); give a frame number or file name from that folder")


def preview(predictor: Predictor, cfg: MergeConfig, input_dir: Path, frame: str,
            aligned_dir: Path | None = None, output_dir: Path | None = None) -> np.ndarray:
    """Original frame, merged frame and mask side by side, for tuning options on one frame (with its
    per-frame options in ``output_dir``, if any)."""
    merger = FrameMerger(predictor, cfg, input_dir, aligned_dir, output_dir)
    k = find_frame(merger.plan, frame)
    if not merger.plan.faces_of.get(k):
        log.warning("frame %s has no extracted face; the preview shows it unchanged", merger.plan.frames[k].name)
    inputs = merger.predict(merger.groups[merger.group_of[k]], merger.settings)
    merged, mask = merger.frame(k, inputs, merger.settings, stamp=None)
    original = read_image(merger.plan.frames[k])
    height = original.shape[0]
    panels = [original, merged, cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)]
    panels = [p if p.shape[0] == height else cv2.resize(p, (p.shape[1] * height // p.shape[0], height)) for p in panels]
    return np.concatenate(panels, axis=1)
