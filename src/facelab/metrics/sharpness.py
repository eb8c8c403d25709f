"""How much fine detail a face has next to a real one: the variance of the Laplacian inside the face mask.

SSIM forgives blur: a featureless, skin-coloured blob over a face keeps the mean, contrast and coarse
structure of the real face and scores 0.8+ with an 11 px window. Detail is what a blob lacks, and the
Laplacian (the image's second derivative) is where detail lives, so its variance over the face falls
towards 0 as a face turns into a blob and is the same for two real photos of one face at one size.
:func:`sharpness_ratio` divides a generated face's figure by the real face's: a real face scores 1,
a blob scores a small fraction, an over-sharpened or noisy face scores above 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Under a quarter of a real face's detail is a blob, not a face to put a name on. Measured on real clips
# (lp_d18 held-out faces at 96 px): Quick96 at 650 iterations scores 0.03 (recon) and 0.05 (swap), its
# untrained start 0.09, a 3 px Gaussian blur of the real faces 0.01; the real faces 1 (docs/training.md).
BLOB_BELOW = 0.25

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_LUMA = torch.tensor([0.114, 0.587, 0.299])  # BGR, the channel order of facelab's tensors


def laplacian_variance(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per image ``(N,)``: the variance of the Laplacian of the luma of NCHW images in 0..1 (BGR or grey),
    weighted by ``mask`` (``N1HW``, 0..1) when given."""
    images = images.float()
    grey = (images * _LUMA.to(images.device).view(1, 3, 1, 1)).sum(1, keepdim=True) if images.shape[1] == 3 else images
    lap = F.conv2d(grey, _LAPLACIAN.to(images.device).view(1, 1, 3, 3))  # valid: no border ringing
    w = torch.ones_like(lap) if mask is None else mask.float()[..., 1:-1, 1:-1].expand_as(lap)
    w = w.flatten(1)
    lap = lap.flatten(1)
    total = w.sum(1).clamp_min(1e-6)
    mean = (lap * w).sum(1) / total
    return ((lap - mean[:, None]) ** 2 * w).sum(1) / total


def sharpness_ratio(generated: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per image ``(N,)``: the generated faces' Laplacian variance over the real faces' (same masks)."""
    return laplacian_variance(generated, mask) / laplacian_variance(real, mask).clamp_min(1e-8)
