"""The face enhancer network: a residual CNN that restores a face which was shrunk, blurred, compressed
and enlarged back to its size.

The face comes in already at its output size (enlarged with bicubic interpolation). It is folded into a
4x coarser grid (pixel-unshuffle: each 4x4 block of pixels becomes 48 channels), residual blocks work on
that grid, and pixel-shuffle unfolds their output into a correction added to the input face. The coarse
grid has 16x fewer positions than the face, which is what makes the network trainable on a CPU, and a
3x3 convolution there reaches 12 face pixels: the scale of the detail that shrinking by 2-4x removes.
The last convolution starts at zero, so an untrained network returns its input (the bicubic face) and
training only ever adds corrections to it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.core.device import autocast

FOLD = 4  # pixel-unshuffle factor: face sizes and patches are multiples of it


class _Residual(nn.Module):
    """conv - ReLU - conv, added to its input (no normalisation: it would rescale the image statistics
    that restoration has to keep)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FaceEnhancer(nn.Module):
    """BGR faces ``(N, 3, H, W)`` in [0, 1] (H and W multiples of :data:`FOLD`) -> restored faces, same shape
    (not clipped: :func:`restore` clips)."""

    def __init__(self, channels: int = 64, blocks: int = 4):
        super().__init__()
        folded = 3 * FOLD * FOLD
        self.head = nn.Conv2d(folded, channels, 3, padding=1)
        self.body = nn.Sequential(*(_Residual(channels) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels, folded, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.head(F.pixel_unshuffle(x * 2 - 1, FOLD)))
        return x + F.pixel_shuffle(self.tail(self.body(y)), FOLD)


def faces_to_tensor(faces: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` BGR faces, uint8 or float in [0, 1] -> ``(N, 3, H, W)`` float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2)
    return t.float().div_(255) if faces.dtype == np.uint8 else t.float()


@torch.inference_mode()
def restore(model: FaceEnhancer, faces: np.ndarray, device: torch.device, precision: str = "fp32",
            batch_size: int = 16) -> np.ndarray:
    """The network's faces ``(N, H, W, 3)`` float32 in [0, 1] for ``faces`` (uint8 or float BGR), in batches."""
    out = []
    for start in range(0, len(faces), batch_size):
        x = faces_to_tensor(faces[start : start + batch_size]).to(device)
        with autocast(device, precision):
            y = model(x)
        out.append(y.float().clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *faces.shape[1:3], 3), np.float32)
