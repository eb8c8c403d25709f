"""The generator's ONNX and TorchScript exports give PyTorch's output within 1e-4."""

from __future__ import annotations

import pytest
import torch

from facelab.stargan.export import export_generator, run_export, verify_export, example_inputs
from facelab.stargan.models import Generator


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip(tmp_path, fmt):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = Generator(conv_dim=16, c_dim=5, repeat_num=2).eval()
    path = export_generator(g, tmp_path / f"g.{fmt}", fmt, c_dim=5, image_size=64)
    assert path.is_file()
    assert verify_export(g, path, fmt, c_dim=5, image_size=64, batch=3) < 1e-4
    image, label = example_inputs(5, 64, batch=1, seed=7)  # the label changes the exported output too
    other = 1 - label
    assert abs(run_export(path, fmt, image, label) - run_export(path, fmt, image, other)).max() > 1e-3
