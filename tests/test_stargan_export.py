"""The generator's ONNX and TorchScript exports give PyTorch's output within 1e-4."""

from __future__ import annotations

import pytest
import torch

from facelab.core.errors import FacelabError
from facelab.core.export import run_export
from facelab.stargan.export import INPUT_NAMES, example_inputs, export_generator
from facelab.stargan.models import Generator


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip(tmp_path, fmt):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = Generator(conv_dim=16, c_dim=5, repeat_num=2).eval()
    path, diff = export_generator(g, tmp_path / f"g.{fmt}", fmt, c_dim=5, image_size=64, tolerance=1e-4)
    assert path.is_file() and diff < 1e-4
    image, label = (t.numpy() for t in example_inputs(5, 64, batch=1, seed=7))  # the label changes the output too
    edited, = run_export(fmt, path.read_bytes(), INPUT_NAMES, (image, label))
    other, = run_export(fmt, path.read_bytes(), INPUT_NAMES, (image, 1 - label))
    assert abs(edited - other).max() > 1e-3
    with pytest.raises(FacelabError, match="differs from PyTorch"):  # a check that cannot pass writes nothing
        export_generator(g, tmp_path / f"strict.{fmt}", fmt, c_dim=5, image_size=64, tolerance=-1.0)
    assert not (tmp_path / f"strict.{fmt}").exists()
