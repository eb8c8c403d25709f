"""Export the swap generator (dst face -> swapped face + src mask + dst mask) to ONNX, TorchScript or DFM.

``onnx`` / ``torchscript``: the graph takes float32 BGR faces in [0, 1] as ``(N, 3, R, R)`` with a free batch size
and returns ``swapped (N,3,R,R)``, ``src_mask (N,1,R,R)``, ``dst_mask (N,1,R,R)``.

``dfm`` is the ONNX layout DeepFaceLive loads as a face-swap model, as DeepFaceLab's ``export_dfm`` writes it
and DeepFaceLive's ``DFMModel`` reads it: one input ``in_face:0``, float32 BGR faces in [0, 1] as NHWC
``(N, R, R, 3)`` whose height and width are fixed (the loader takes the model's resolution from them), and three
NHWC outputs in this order (the loader unpacks them by position): ``out_face_mask:0`` the dst face's mask
``(N,R,R,1)``, ``out_celeb_face:0`` the swapped face ``(N,R,R,3)``, ``out_celeb_face_mask:0`` its mask
``(N,R,R,1)``, all in [0, 1].

Every export is checked by running it (onnxruntime or torch.jit) on random faces against the PyTorch model
(:mod:`facelab.core.export`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.align.face_types import face_type
from facelab.core.errors import FacelabError
from facelab.core.export import check_format, checked_export
from facelab.core.files import atomic_write_bytes
from facelab.swap.models import SwapModel
from facelab.swap.predictor import load_model

FORMATS = ("onnx", "torchscript", "dfm")
OUTPUT_NAMES = ("swapped", "src_mask", "dst_mask")
DFM_INPUT = "in_face:0"
DFM_OUTPUTS = ("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0")


class SwapGenerator(nn.Module):
    """The part of a swap model merge needs, as a plain forward()."""

    def __init__(self, model: SwapModel):
        super().__init__()
        self.model = model

    def forward(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.swap(dst)


class DFMGenerator(SwapGenerator):
    """The generator in DeepFaceLive's layout: NHWC in, (dst mask, swapped face, its mask) NHWC out."""

    def forward(self, in_face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        swapped, src_mask, dst_mask = self.model.swap(in_face.permute(0, 3, 1, 2))
        return tuple(t.permute(0, 2, 3, 1) for t in (dst_mask, swapped, src_mask))  # type: ignore[return-value]


def default_path(model_dir: str | Path, fmt: str) -> Path:
    """``MODEL_DIR/swap.onnx`` / ``swap.ts``; a DFM is named after the model folder, because DeepFaceLive lists
    the models of its folder by file name."""
    model_dir = Path(model_dir)
    names = {"onnx": "swap.onnx", "torchscript": "swap.ts", "dfm": f"{model_dir.resolve().name}.dfm"}
    return model_dir / names[fmt]


def export_model(model_dir: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0) -> tuple[Path, float]:
    """Write the generator as ``fmt`` and return (path, max abs difference to PyTorch)."""
    if fmt not in FORMATS:
        raise FacelabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    graph_fmt = "onnx" if fmt == "dfm" else fmt
    check_format(graph_fmt)
    model, cfg = load_model(model_dir, "cpu")
    r = cfg.resolution
    example = torch.rand(1, 3, r, r, generator=torch.Generator().manual_seed(seed))
    x = np.random.default_rng(seed).random((3, 3, r, r), dtype=np.float32)  # another batch size than the example
    if fmt == "dfm":
        module, inputs, outputs = DFMGenerator(model), (DFM_INPUT,), DFM_OUTPUTS
        example, x = example.permute(0, 2, 3, 1).contiguous(), np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    else:
        module, inputs, outputs = SwapGenerator(model), ("dst",), OUTPUT_NAMES
    data, diff = checked_export(module.eval(), (example,), graph_fmt, inputs, outputs, (x,))
    path = Path(out) if out else default_path(model_dir, fmt)
    atomic_write_bytes(path, data)
    return path, diff


def deepfacelive_aligner(face_type_name: str, resolution: int) -> dict:
    """The settings of DeepFaceLive's face aligner that cut the crop a model of this face type was trained on.

    In "from points" mode DeepFaceLive fits its mean-face template (the same 68-point template as facelab's,
    on 27 of the points) and cuts a square that is ``face coverage`` times the template's side about the
    template's centre, moved down by ``y offset`` template heights less the 0.08 it subtracts itself. A facelab
    face type is that template padded by ``padding`` on each side and moved down by ``shift`` (align.face_types),
    so coverage is ``1 + 2 * padding`` and y offset ``0.08 - shift``, rounded to the steps DeepFaceLive's controls
    take (0.1 and 0.01)."""
    ft = face_type(face_type_name)
    return {"align_mode": "from points", "face_coverage": round(1 + 2 * ft.padding, 1), "x_offset": 0.0,
            "y_offset": round(0.08 - ft.shift, 2), "resolution": resolution, "head_mode": False}
