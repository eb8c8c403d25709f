"""Export a module to ONNX or TorchScript and prove the file reproduces it.

Every export is run once (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) on inputs with another
batch size than the traced example, so a frozen batch dimension or a wrong operator fails here, not in
deployment, and nothing is written. The legacy (TorchScript-based) ONNX exporter is used: it needs no
onnxscript. Every facelab export (swap, XSeg, StarGAN, PFE) goes through :func:`checked_export`.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from facelab.core.errors import FacelabError

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-3  # largest allowed difference, relative to the output's scale when that exceeds 1


def check_format(fmt: str) -> None:
    """Refuse an unknown format, and ONNX without the packages of the ``[export]`` extra (onnx writes the
    file, onnxruntime checks it), before any model is loaded."""
    if fmt not in FORMATS:
        raise FacelabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise FacelabError(f"ONNX export needs onnx and onnxruntime ({exc}); install them with "
                               "pip install 'facelab[export]', or use --format torchscript") from None


def export_bytes(module: nn.Module, examples: tuple[torch.Tensor, ...], fmt: str, input_names: tuple[str, ...],
                 output_names: tuple[str, ...]) -> bytes:
    """The serialised export of ``module`` (inputs with a free batch size)."""
    check_format(fmt)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch flags both TorchScript-based paths
        # Trace warnings are about shapes frozen into the graph: checked_export runs another batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Instance norm without running statistics (StarGAN) normalises by the input's own statistics in
        # eval mode too, which is what the exporter's "train=True" instance_norm computes: nothing to warn.
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
        if fmt == "onnx":
            axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
            torch.onnx.export(module, examples, buf, input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        else:
            with torch.inference_mode(False), torch.no_grad():
                torch.jit.save(torch.jit.trace(module, examples), buf)
    return buf.getvalue()


def _arrays(out) -> list[np.ndarray]:
    return [t.numpy() for t in ((out,) if isinstance(out, torch.Tensor) else out)]


def run_export(fmt: str, data: bytes, input_names: tuple[str, ...], inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Run a serialised export on ``inputs``; its outputs as arrays."""
    if fmt == "onnx":
        check_format(fmt)
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(None, dict(zip(input_names, inputs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.inference_mode():
        return _arrays(module(*(torch.from_numpy(x) for x in inputs)))


def deviation(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference, divided by the output's scale where that exceeds 1 (feature maps
    reach 1e3 and more; images and masks stay within 1, where this is the plain absolute difference)."""
    return float(np.abs(np.asarray(got) - want).max() / max(1.0, float(np.abs(want).max())))


def checked_export(module: nn.Module, examples: tuple[torch.Tensor, ...], fmt: str, input_names: tuple[str, ...],
                   output_names: tuple[str, ...], check_inputs: tuple[np.ndarray, ...],
                   tolerance: float = TOLERANCE) -> tuple[bytes, float]:
    """Export ``module`` and run the export on ``check_inputs``; (file bytes, :func:`deviation` from PyTorch).
    An export off by more than ``tolerance`` is refused."""
    module = module.float().cpu().eval()
    data = export_bytes(module, examples, fmt, input_names, output_names)
    with torch.inference_mode():
        ref = _arrays(module(*(torch.from_numpy(x) for x in check_inputs)))
    got = run_export(fmt, data, input_names, check_inputs)
    if [g.shape for g in got] != [r.shape for r in ref]:
        raise FacelabError(f"the {fmt} export returns shapes {[g.shape for g in got]}, PyTorch {[r.shape for r in ref]}")
    diff = max(deviation(g, r) for g, r in zip(got, ref))
    if not diff <= tolerance:
        raise FacelabError(f"the {fmt} export differs from PyTorch by {diff:.3g} (> {tolerance:.0e}); nothing was "
                           "written, please report this model's config")
    return data, diff
