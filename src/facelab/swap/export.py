"""Export the swap generator (dst face -> swapped face + src mask + dst mask) to ONNX or TorchScript.

The exported graph takes float32 BGR faces in [0, 1] as ``(N, 3, R, R)`` with a free batch size and returns
``swapped (N,3,R,R)``, ``src_mask (N,1,R,R)``, ``dst_mask (N,1,R,R)``. Every export is checked by running
it (onnxruntime or torch.jit) on random faces against the PyTorch model.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes
from facelab.swap.models import SwapModel
from facelab.swap.predictor import load_model

FORMATS = ("onnx", "torchscript")
OUTPUT_NAMES = ("swapped", "src_mask", "dst_mask")


class SwapGenerator(nn.Module):
    """The part of a swap model merge needs, as a plain forward()."""

    def __init__(self, model: SwapModel):
        super().__init__()
        self.model = model

    def forward(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.swap(dst)


def _onnx_bytes(gen: SwapGenerator, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in ("dst", *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
        torch.onnx.export(gen, (example,), buf, input_names=["dst"], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return buf.getvalue()


def _run_export(fmt: str, data: bytes, x: np.ndarray) -> list[np.ndarray]:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(None, {"dst": x})
    module = torch.jit.load(io.BytesIO(data))
    with torch.inference_mode():
        return [t.numpy() for t in module(torch.from_numpy(x))]


def export_model(model_dir: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0) -> tuple[Path, float]:
    """Write the generator as ``swap.onnx`` / ``swap.ts`` and return (path, max abs difference to PyTorch)."""
    if fmt not in FORMATS:
        raise FacelabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    model, cfg = load_model(model_dir, "cpu")
    gen = SwapGenerator(model).eval()
    r = cfg.resolution
    example = torch.rand(1, 3, r, r, generator=torch.Generator().manual_seed(seed))
    if fmt == "onnx":
        data = _onnx_bytes(gen, example)
    else:
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(gen, example)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        data = buf.getvalue()
    x = np.random.default_rng(seed).random((3, 3, r, r), dtype=np.float32)  # another batch size than the example
    with torch.inference_mode():
        ref = [t.numpy() for t in gen(torch.from_numpy(x))]
    got = _run_export(fmt, data, x)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if diff > 1e-3:
        raise FacelabError(f"the {fmt} export differs from PyTorch by {diff:.3g}; please report this model's config")
    path = Path(out) if out else Path(model_dir) / ("swap.onnx" if fmt == "onnx" else "swap.ts")
    atomic_write_bytes(path, data)
    return path, diff
