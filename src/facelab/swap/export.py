"""Export the swap generator (dst face -> swapped face + src mask + dst mask) to ONNX or TorchScript.

The exported graph takes float32 BGR faces in [0, 1] as ``(N, 3, R, R)`` with a free batch size and returns
``swapped (N,3,R,R)``, ``src_mask (N,1,R,R)``, ``dst_mask (N,1,R,R)``. Every export is checked by running
it (onnxruntime or torch.jit) on random faces against the PyTorch model (:mod:`facelab.core.export`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.core.export import check_format, checked_export
from facelab.core.files import atomic_write_bytes
from facelab.swap.models import SwapModel
from facelab.swap.predictor import load_model

OUTPUT_NAMES = ("swapped", "src_mask", "dst_mask")


class SwapGenerator(nn.Module):
    """The part of a swap model merge needs, as a plain forward()."""

    def __init__(self, model: SwapModel):
        super().__init__()
        self.model = model

    def forward(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.swap(dst)


def export_model(model_dir: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0) -> tuple[Path, float]:
    """Write the generator as ``swap.onnx`` / ``swap.ts`` and return (path, max abs difference to PyTorch)."""
    check_format(fmt)
    model, cfg = load_model(model_dir, "cpu")
    gen = SwapGenerator(model).eval()
    r = cfg.resolution
    example = torch.rand(1, 3, r, r, generator=torch.Generator().manual_seed(seed))
    x = np.random.default_rng(seed).random((3, 3, r, r), dtype=np.float32)  # another batch size than the example
    data, diff = checked_export(gen, (example,), fmt, ("dst",), OUTPUT_NAMES, (x,))
    path = Path(out) if out else Path(model_dir) / ("swap.onnx" if fmt == "onnx" else "swap.ts")
    atomic_write_bytes(path, data)
    return path, diff
