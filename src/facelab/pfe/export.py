"""``facelab pfe export``: the uncertainty module (and a sphere backbone) as ONNX and TorchScript, each checked.

Every exported file is run once on random input (ONNX through onnxruntime) and compared with the
PyTorch module, so an export that does not reproduce the model fails here rather than in deployment.
dlib's network is not a PyTorch module and stays in dlib's own format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facelab.core.export import check_format, checked_export
from facelab.core.files import atomic_write_bytes
from facelab.pfe.backbones import SPHERE_SIZE, SphereBackbone
from facelab.pfe.model import PFEModel

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def _export_one(module: torch.nn.Module, example: torch.Tensor, check: torch.Tensor, out_dir: Path, name: str,
                input_name: str, output_names: tuple[str, ...]) -> dict[str, float]:
    """Write ``name.onnx`` and ``name.pt``; return each file's deviation from ``module`` on ``check``."""
    diffs = {}
    for fmt, suffix in SUFFIXES.items():
        data, diffs[name + suffix] = checked_export(module, (example,), fmt, (input_name,), output_names, (check.numpy(),))
        atomic_write_bytes(out_dir / (name + suffix), data)
    return diffs


def export_model(model_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, float]:
    """Export a PFE model dir's uncertainty module and, for a sphere backbone, the backbone."""
    check_format("onnx")  # both formats are written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = PFEModel.load(model_dir, "cpu")
    gen = torch.Generator().manual_seed(seed)
    dim = model.backbone.feature_dim
    diffs = _export_one(model.module, torch.randn(4, dim, generator=gen), torch.randn(3, dim, generator=gen),
                        out_dir, "uncertainty", "features", ("log_sigma_sq",))
    if isinstance(model.backbone, SphereBackbone):
        example, check = (torch.randn(n, 3, *SPHERE_SIZE, generator=gen) for n in (2, 3))
        diffs |= _export_one(model.backbone.net, example, check, out_dir, "backbone", "image", ("embedding", "features"))
    return diffs
