"""``facelab xseg export``: the trained segmenter as ONNX or TorchScript, checked against PyTorch.

The exported graph takes ``face`` float32 RGB in [0, 1] as ``(N, 3, R, R)`` (free batch size) and returns
``mask`` ``(N, 1, R, R)``: the face probability (the logit through a sigmoid), so a deployment needs no
post-processing beyond ``mask >= 0.5``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.core.export import check_format, checked_export
from facelab.core.files import atomic_write_bytes
from facelab.xseg.model_dir import load_segmenter


def export_segmenter(model_dir: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0) -> tuple[Path, float]:
    """Write ``segmenter.onnx`` / ``segmenter.ts`` (or ``out``); (path, max abs difference to PyTorch)."""
    check_format(fmt)
    model, cfg = load_segmenter(model_dir, "cpu")
    net = nn.Sequential(model, nn.Sigmoid()).eval()
    r = cfg.resolution
    example = torch.rand(1, 3, r, r, generator=torch.Generator().manual_seed(seed))
    x = np.random.default_rng(seed).random((3, 3, r, r), dtype=np.float32)  # another batch size than the example
    data, diff = checked_export(net, (example,), fmt, ("face",), ("mask",), (x,))
    path = Path(out) if out else Path(model_dir) / ("segmenter.onnx" if fmt == "onnx" else "segmenter.ts")
    atomic_write_bytes(path, data)
    return path, diff
