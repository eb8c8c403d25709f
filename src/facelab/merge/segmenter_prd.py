"""XSeg on the swapped face at merge time (DeepFaceLab's XSeg-prd).

The dst face's applied XSeg mask outlines the dst face; when the src face has another shape (a beard, a
longer jaw, a different hairline) the swapped face's own outline is what should be pasted. So the segmenter
runs on each predicted face in the main process, batched, on the swap model's device. It was trained on its
own resolution and face type, so each predicted face is warped into the segmenter's frame (both crops are
similarity transforms of the same source landmarks) and the probability is warped back into the model crop.

Imported only by the segmenter-prd modes, so `facelab video` keeps working without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facelab.align.transform import align_matrix, compose, invert
from facelab.core.device import autocast, memory_format
from facelab.core.errors import FacelabError
from facelab.xseg.network import Segmenter
from facelab.xseg.config import XSegConfig
from facelab.xseg.data import faces_to_tensor
from facelab.xseg.model_dir import load_segmenter


@dataclass
class PredictedFaceSegmenter:
    """Runs in the swap model's precision (bf16 autocast where the merge asks for it) and channels-last
    layout, as the swap model does: the 256 px U-Net costs more per face than a 128 px swap network."""

    model: Segmenter
    cfg: XSegConfig
    device: torch.device
    precision: str = "fp32"

    def __post_init__(self):
        self.memory_format = memory_format(None, self.device)  # channels_last where it is faster
        self.model = self.model.to(memory_format=self.memory_format)

    def crop_to_segmenter(self, landmarks: np.ndarray, crop_mat: np.ndarray) -> np.ndarray:
        """Model-crop pixels -> segmenter-frame pixels for a face with source ``landmarks``."""
        return compose(align_matrix(landmarks, self.cfg.resolution, self.cfg.face_type), invert(crop_mat))

    @torch.inference_mode()
    def masks(self, faces: np.ndarray, landmarks: list[np.ndarray], crop_mats: list[np.ndarray]) -> np.ndarray:
        """Face probabilities ``(N, R, R)`` in the model crop for predicted faces ``(N, R, R, 3)`` (BGR, 0..1).

        Where the model crop reaches beyond the segmenter's square the mask is 0: nothing was segmented there.
        """
        size, res = faces.shape[1], self.cfg.resolution
        mats = [self.crop_to_segmenter(lm, m) for lm, m in zip(landmarks, crop_mats)]
        # The border replicates so the segmenter does not see black bars where its frame exceeds the crop.
        seg_faces = np.stack([cv2.warpAffine(face, mat, (res, res), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE) for face, mat in zip(faces, mats)])
        x = faces_to_tensor(seg_faces).to(self.device).contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.precision):
            logits = self.model(x)
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        back = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return np.stack([cv2.warpAffine(prob, mat, (size, size), flags=back, borderMode=cv2.BORDER_CONSTANT,
                                        borderValue=0) for prob, mat in zip(probs, mats)])


def load_prd_segmenter(segmenter_dir: str, device: torch.device | str, precision: str = "fp32") -> PredictedFaceSegmenter:
    """The segmenter of ``segmenter_dir`` on ``device``; a missing or unusable folder is one line that names
    the option and how to make one."""
    if not segmenter_dir:
        raise FacelabError("the segmenter-prd mask modes run an XSeg model on the swapped face; give its folder "
                           "with --segmenter-dir (train one with `facelab xseg train`)")
    try:
        model, cfg = load_segmenter(segmenter_dir, device)
    except FacelabError as exc:
        raise FacelabError(f"--segmenter-dir: {exc}") from None
    return PredictedFaceSegmenter(model, cfg, torch.device(device), precision)
