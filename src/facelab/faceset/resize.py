"""``faceset resize``: a faceset at another size or a tighter face type, without the source frames.

DeepFaceLab users extract once at a large whole-face size and later need, say, 256 px full faces for a
model (its "faceset resize" util). Every aligned face keeps its source landmarks, so the new alignment is
the one extraction would compute for the new face type and size; the pixels, hand-drawn XSeg labels and
applied masks are resampled from the saved face through saved face -> source frame -> new face. A crop
that needs pixels the saved face does not hold (a larger face type, e.g. whole -> head) is refused before
anything is written: that needs the source frames, i.e. a new ``facelab extract``. Training uses the same
re-cropping in memory (:func:`recropped`), so a whole-face faceset trains full-face models as it is.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np

from facelab.align.face_types import face_type as face_type_of
from facelab.align.transform import align_matrix, compose, covers, invert, pixel_scale, transform_points, warp_to_face
from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes
from facelab.core.progress import progress
from facelab.face.metadata import FaceMeta, encode_face
from facelab.faceset.store import Faceset
from facelab.face.masks.applied import KEY as APPLIED_KEY, decode_mask, set_applied_mask
from facelab.face.masks.labels import has_label, label_mask, set_label

log = logging.getLogger("facelab")


def resize_matrix(meta: FaceMeta, size: int, face_type: str) -> np.ndarray:
    """The 2x3 map from the saved aligned face to the same face aligned at ``size`` and ``face_type``."""
    return compose(align_matrix(meta.source_landmarks, size, face_type), invert(meta.image_to_face))


def _warp_mask(mask: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(mask.astype(np.float32), mat, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT) >= 0.5


def resized_meta(meta: FaceMeta, old_to_new: np.ndarray, size: int, face_type: str) -> FaceMeta:
    """The metadata of the resized face: new alignment, landmarks, face type and size; XSeg labels and the
    applied mask carried into the new crop (the applied mask keeps the resolution it was stored at)."""
    new = dataclasses.replace(meta, image_to_face=compose(old_to_new, meta.image_to_face),
                              landmarks=transform_points(meta.landmarks, old_to_new), face_type=face_type,
                              size=size, extra=dict(meta.extra))
    if has_label(meta):
        set_label(new, _warp_mask(label_mask(meta), old_to_new, size).astype(np.uint8))
    if APPLIED_KEY in meta.extra:
        stored = decode_mask(meta.extra[APPLIED_KEY])
        res = stored.shape[0]
        mask_to_mask = compose(pixel_scale(res / size), compose(old_to_new, pixel_scale(meta.size / res)))
        set_applied_mask(new, _warp_mask(stored, mask_to_mask, res))
    return new


def _plans(faceset: Faceset, face_type: str | None, size: int) -> list[tuple[np.ndarray, str]]:
    """Per face: the map from the saved face to the new crop, and the new face type (default: its own).
    A crop that needs pixels the saved face does not hold is refused, naming the face."""
    plans = []
    for name, meta in zip(faceset.names, faceset.metas):
        target = face_type or meta.face_type
        old_to_new = resize_matrix(meta, size, target)
        if not covers(old_to_new, meta.size, meta.size, size):
            raise FacelabError(f"{faceset.root / name}: a {target} face reaches outside the saved {meta.face_type} "
                               f"face; re-extract from the source frames with `facelab extract --face-type {target}`")
        plans.append((old_to_new, target))
    return plans


def recropped(faceset: Faceset, face_type: str, size: int) -> Faceset:
    """``faceset`` as ``face_type`` faces of ``size`` pixels, in memory (lossless PNG), for a model of that
    face type: DeepFaceLab trains full, mid and half face models on whole-face facesets by cropping them as
    they load. A faceset already of that face type is returned as it is."""
    if all(meta.face_type == face_type for meta in faceset.metas):
        return faceset
    log.info(f"{faceset.root}: cropping the faces to {face_type} faces of {size} px for training")
    blobs, metas = [], []
    for i, (meta, (old_to_new, _)) in enumerate(zip(faceset.metas, _plans(faceset, face_type, size))):
        metas.append(resized_meta(meta, old_to_new, size, face_type))
        blobs.append(encode_face(warp_to_face(faceset.image(i), old_to_new, size), metas[-1], ".png"))
    return Faceset(list(faceset.names), blobs, metas, faceset.root, faceset.packed, derived=True)


def resize_faceset(folder: str | Path, out: str | Path, size: int, face_type: str | None = None,
                   jpeg_quality: int = 95) -> int:
    """Write every face of ``folder`` (loose or packed) into ``out`` at ``size`` and ``face_type`` (default:
    each face's own); the input is left as it is. Returns the number of faces written."""
    check_range(size, "size", "faceset resize", low=16, high=2048)
    check_range(jpeg_quality, "jpeg_quality", "faceset resize", low=1, high=100)
    faceset = Faceset.open(folder)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FacelabError(f"{out} already exists and is not an empty folder; choose a new output folder with -o")
    if face_type is not None:
        face_type_of(face_type)  # an unknown name is a one-line error
    plans = _plans(faceset, face_type, size)
    out.mkdir(parents=True, exist_ok=True)
    items = enumerate(zip(faceset.names, faceset.metas, plans))
    for i, (name, meta, (old_to_new, target)) in progress(items, total=len(plans), desc="resize", unit="face"):
        face = warp_to_face(faceset.image(i), old_to_new, size)
        new = resized_meta(meta, old_to_new, size, target)
        atomic_write_bytes(out / name, encode_face(face, new, Path(name).suffix, jpeg_quality))
    return len(plans)
