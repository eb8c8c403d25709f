"""The face mask in crop space: which pixels of the swapped face go into the frame, and how softly.

All masks here are float32 (R, R) in [0, 1] on the aligned crop the model saw, so erode and blur amounts
mean the same whatever the face's size in the frame.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from facelab.align.transform import align_matrix, compose, invert, transform_points
from facelab.core.errors import FacelabError
from facelab.face.metadata import FaceMeta
from facelab.face.masks.applied import best_mask
from facelab.face.masks.hull import hull_mask

# Mask values below one 8-bit step are treated as zero so faint noise from a learned mask never leaks a
# faint copy of the face into the frame.
FLOOR = 1.0 / 255.0


# Every mask mode: how its masks combine and which masks it is made of. The merger computes only the masks
# a mode names (a model branch, a metadata read or an XSeg run each cost time), so this table is the one
# place that says what each mode needs. The mask names: "learned-src" / "learned-dst" the model's learned
# masks of the swapped / dst face, "hull" the dst landmark hull, "segmenter" the dst face's applied XSeg mask
# (DeepFaceLab's XSeg-dst), "segmenter-prd" an XSeg model run on the swapped face (XSeg-prd).
MODE_MASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "hull": ("*", ("hull",)),
    "learned-src": ("*", ("learned-src",)),
    "learned-dst": ("*", ("learned-dst",)),
    "learned-src*dst": ("*", ("learned-src", "learned-dst")),
    "learned-src+dst": ("+", ("learned-src", "learned-dst")),
    "learned-src*dst*hull": ("*", ("learned-src", "learned-dst", "hull")),
    "segmenter": ("*", ("segmenter",)),
    "learned-src*segmenter": ("*", ("learned-src", "segmenter")),
    "segmenter-prd": ("*", ("segmenter-prd",)),
    "segmenter-prd*segmenter": ("*", ("segmenter-prd", "segmenter")),
    # DeepFaceLab's learned-prd*learned-dst*XSeg-prd*XSeg-dst: face only where all four masks see face
    "learned-src*dst*segmenter-prd*segmenter": ("*", ("learned-src", "learned-dst", "segmenter-prd", "segmenter")),
}


# DeepFaceLab's names of the same modes (its merger's mask_mode menu), accepted by --mask-mode
MASK_MODE_ALIASES = {"dst": "hull", "learned-prd": "learned-src", "learned-prd*learned-dst": "learned-src*dst",
                     "learned-prd+learned-dst": "learned-src+dst", "XSeg-prd": "segmenter-prd", "XSeg-dst": "segmenter",
                     "XSeg-prd*XSeg-dst": "segmenter-prd*segmenter",
                     "learned-prd*learned-dst*XSeg-prd*XSeg-dst": "learned-src*dst*segmenter-prd*segmenter"}


def mask_inputs(mode: str) -> tuple[str, ...]:
    """The masks ``mode`` is made of (names as in :data:`MODE_MASKS`)."""
    if mode not in MODE_MASKS:
        raise FacelabError(f"unknown mask mode {mode!r}; use one of {', '.join(MODE_MASKS)}")
    return MODE_MASKS[mode][1]


def face_mask(mode: str, size: int, landmarks: np.ndarray, face_type: str, src_mask: np.ndarray | None,
              dst_mask: np.ndarray | None, seg_mask: np.ndarray | None, prd_seg_mask: np.ndarray | None = None,
              face_name: str = "face") -> np.ndarray:
    """The mask for ``mode``; ``landmarks`` are in crop pixels, ``seg_mask`` is the dst face's XSeg mask
    in the crop (see :func:`segmenter_mask_in_crop`), ``prd_seg_mask`` the XSeg mask of the swapped face
    (see :mod:`facelab.merge.segmenter_prd`). Only the masks the mode uses need to be given."""
    names = mask_inputs(mode)
    if "segmenter" in names and seg_mask is None:
        raise FacelabError(f"{face_name} has no XSeg mask; run `facelab xseg apply DST_FACESET --model-dir XSEG_MODEL` "
                           "(or label it with `facelab xseg import-masks`), or use --mask-mode hull or a learned mask")
    given = {"learned-src": src_mask, "learned-dst": dst_mask, "segmenter": seg_mask, "segmenter-prd": prd_seg_mask}
    parts = [hull_mask(landmarks, size, size, face_type) if name == "hull" else given[name] for name in names]
    mask = functools.reduce(np.add if MODE_MASKS[mode][0] == "+" else np.multiply, parts)
    mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    mask[mask < FLOOR] = 0.0
    return mask


def segmenter_mask_in_crop(meta: FaceMeta, crop_mat: np.ndarray, size: int) -> np.ndarray | None:
    """The face's XSeg mask (applied, else its label) warped from the aligned face to the model crop;
    None when it has neither. Outside the aligned face the mask is 0: nothing was segmented there."""
    mask = best_mask(meta)
    if mask is None:
        return None
    return cv2.warpAffine(mask, compose(crop_mat, invert(meta.image_to_face)), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def face_type_region(landmarks_src: np.ndarray, crop_mat: np.ndarray, size: int, face_type: str) -> np.ndarray:
    """A (size, size) mask of the square that ``face_type``'s crop covers, drawn in the model's crop."""
    inner = align_matrix(landmarks_src, size, face_type)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    quad = transform_points(transform_points(corners, invert(inner)), crop_mat)
    region = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(region, np.round(quad).astype(np.int32), 1.0)
    return region


def erode_blur(mask: np.ndarray, erode: int, blur: int) -> np.ndarray:
    """Shrink (``erode`` > 0) or grow (< 0) the mask, then feather its edge over ``blur`` pixels.

    The feather is centred on the eroded edge: half the ramp lies inside, half outside, so ``blur``
    alone keeps the mask's 50% contour where it was. Where the mask reaches the crop's border (a whole
    face's chin and neck, a face cut by the frame), it is first cleared within half the feather of the
    border, as DeepFaceLab's merger does, so the feathered mask has fallen to 0 at the crop's edge: pasted
    back, a mask still high there ended in a straight cut across the neck, the box seam of issue 15.
    """
    out = mask
    if erode:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(erode) + 1, 2 * abs(erode) + 1))
        out = cv2.erode(out, k) if erode > 0 else cv2.dilate(out, k)
    if blur > 0:
        half = (blur | 1) // 2 + 1
        out = out.copy()
        out[:half], out[-half:], out[:, :half], out[:, -half:] = 0, 0, 0, 0
        pad = blur + 1  # pad so the blur sees zeros, not a replicated border, beyond the crop
        padded = cv2.copyMakeBorder(out, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        padded = cv2.blur(padded, (blur | 1, blur | 1))
        out = padded[pad:-pad, pad:-pad]
    out = np.clip(out, 0.0, 1.0)
    out[out < FLOOR] = 0.0
    return out
