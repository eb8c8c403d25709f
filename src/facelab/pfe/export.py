"""``facelab pfe export``: the uncertainty module (and a sphere backbone) as ONNX and TorchScript, each checked.

Every exported file is run once on random input (ONNX through onnxruntime) and compared with the
PyTorch module, so an export that does not reproduce the model fails here rather than in deployment.
dlib's network is not a PyTorch module and stays in dlib's own format.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path
from facelab.pfe.backbones import SPHERE_SIZE, SphereBackbone
from facelab.pfe.model import PFEModel

TOLERANCE = 1e-3


def _export_one(module: torch.nn.Module, example: torch.Tensor, out_dir: Path, name: str, input_name: str,
                output_names: list[str]) -> dict[str, float]:
    """Write ``name.onnx`` and ``name.pt``; return the largest deviation of each from ``module``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FacelabError("export checks need onnxruntime; run: pip install 'facelab[export]'") from None
    module = module.eval().cpu()
    with torch.no_grad():
        expected = module(example)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    axes = {n: {0: "batch"} for n in [input_name, *output_names]}
    onnx_path, ts_path = out_dir / f"{name}.onnx", out_dir / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+ flags the TorchScript-based paths
        with atomic_path(onnx_path) as tmp:
            torch.onnx.export(module, (example,), str(tmp), input_names=[input_name], output_names=output_names,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        with atomic_path(ts_path) as tmp, torch.no_grad():
            torch.jit.trace(module, example).save(str(tmp))
        with torch.no_grad():
            got_ts = torch.jit.load(str(ts_path))(example)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got_onnx = session.run(None, {input_name: example.numpy()})
    got_ts = [got_ts] if isinstance(got_ts, torch.Tensor) else list(got_ts)
    def deviation(got, want: np.ndarray) -> float:  # relative to the output's scale (feature maps reach 1e3+)
        return float(np.abs(np.asarray(got) - want).max() / max(1.0, np.abs(want).max()))

    want = [e.numpy() for e in expected]
    diffs = {onnx_path.name: max(deviation(g, w) for g, w in zip(got_onnx, want)),
             ts_path.name: max(deviation(g.numpy(), w) for g, w in zip(got_ts, want))}
    for file, diff in diffs.items():
        if not diff <= TOLERANCE:
            raise FacelabError(f"{out_dir / file} differs from the PyTorch model by {diff:.3g} (relative); the export is wrong")
    return diffs


def export_model(model_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, float]:
    """Export a PFE model dir's uncertainty module and, for a sphere backbone, the backbone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = PFEModel.load(model_dir, "cpu")
    gen = torch.Generator().manual_seed(seed)
    diffs = _export_one(model.module, torch.randn(4, model.backbone.feature_dim, generator=gen), out_dir,
                        "uncertainty", "features", ["log_sigma_sq"])
    if isinstance(model.backbone, SphereBackbone):
        example = torch.randn(2, 3, *SPHERE_SIZE, generator=gen)
        diffs |= _export_one(model.backbone.net, example, out_dir, "backbone", "image", ["embedding", "features"])
    return diffs
