"""Export a module to ONNX or TorchScript and prove the file reproduces it.

Every export is run once (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) on inputs with another
batch size than the traced example, so a frozen batch dimension or a wrong operator fails here, not in
deployment. The legacy (TorchScript-based) ONNX exporter is used: it needs no onnxscript.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from facelab.core.errors import FacelabError

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-3


def export_bytes(module: nn.Module, example: torch.Tensor, fmt: str, input_name: str,
                 output_names: tuple[str, ...]) -> bytes:
    """The serialised export of ``module`` (one input with a free batch size)."""
    if fmt not in FORMATS:
        raise FacelabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch flags both TorchScript-based paths
        # Trace warnings are about shapes frozen into the graph: checked_export runs another batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "onnx":
            axes = {name: {0: "batch"} for name in (input_name, *output_names)}
            torch.onnx.export(module, (example,), buf, input_names=[input_name], output_names=list(output_names),
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        else:
            with torch.inference_mode(False), torch.no_grad():
                torch.jit.save(torch.jit.trace(module, example), buf)
    return buf.getvalue()


def run_export(fmt: str, data: bytes, input_name: str, x: np.ndarray) -> list[np.ndarray]:
    """Run a serialised export on ``x``; its outputs as arrays."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise FacelabError("checking an ONNX export needs onnxruntime; run: pip install 'facelab[export]'") from None
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(None, {input_name: x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data))
    with torch.inference_mode():
        out = module(torch.from_numpy(x))
    return [t.numpy() for t in ((out,) if isinstance(out, torch.Tensor) else out)]


def checked_export(module: nn.Module, example: torch.Tensor, fmt: str, input_name: str,
                   output_names: tuple[str, ...], check_input: np.ndarray) -> tuple[bytes, float]:
    """Export ``module`` and run the export on ``check_input``; (file bytes, max abs difference to PyTorch)."""
    data = export_bytes(module, example, fmt, input_name, output_names)
    with torch.inference_mode():
        ref = module(torch.from_numpy(check_input))
    ref = [t.numpy() for t in ((ref,) if isinstance(ref, torch.Tensor) else ref)]
    got = run_export(fmt, data, input_name, check_input)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if not diff <= TOLERANCE:
        raise FacelabError(f"the {fmt} export differs from PyTorch by {diff:.3g}; please report this model's config")
    return data, diff
