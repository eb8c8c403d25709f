"""Exporting the generator to ONNX or TorchScript, checked by running the export against PyTorch.

Both exports take ``image`` (N, 3, S, S) RGB in [-1, 1] and ``label`` (N, c_dim) target domains in {0, 1}
and return the edited image; the batch size is free.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path
from facelab.stargan.models import Generator

FORMATS = ("onnx", "torchscript")


def example_inputs(c_dim: int, image_size: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, image_size, image_size, generator=gen) * 2 - 1
    label = (torch.rand(batch, c_dim, generator=gen) < 0.5).float()
    return image, label


def export_generator(g: Generator, path: str | Path, fmt: str, c_dim: int, image_size: int) -> Path:
    """Write the export atomically; the legacy (TorchScript-based) ONNX exporter needs no onnxscript."""
    if fmt not in FORMATS:
        raise FacelabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    g = g.float().cpu().eval()
    inputs = example_inputs(c_dim, image_size)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation notices are not the user's concern
        if fmt == "onnx":
            torch.onnx.export(g, inputs, str(tmp), dynamo=False, input_names=["image", "label"],
                              output_names=["edited"], opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "label": {0: "batch"}, "edited": {0: "batch"}})
        else:
            torch.jit.save(torch.jit.trace(g, inputs), str(tmp))
    return path


def run_export(path: str | Path, fmt: str, image: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """Run an exported generator (onnxruntime for ONNX, torch.jit.load for TorchScript)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise FacelabError("checking an ONNX export needs onnxruntime; run: pip install 'facelab[export]'") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["edited"], {"image": image.numpy(), "label": label.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(image, label).numpy()


def verify_export(g: Generator, path: str | Path, fmt: str, c_dim: int, image_size: int, batch: int = 3) -> float:
    """Largest absolute difference between the export and PyTorch on fresh inputs (another batch size
    than the one traced, so a frozen batch dimension shows up)."""
    image, label = example_inputs(c_dim, image_size, batch=batch, seed=1)
    with torch.no_grad():
        expected = g.float().cpu().eval()(image, label).numpy()
    got = run_export(path, fmt, image, label)
    if got.shape != expected.shape:
        raise FacelabError(f"export {path} returned shape {got.shape}, expected {expected.shape}")
    return float(np.abs(got - expected).max())
