"""The merge interface (load_predictor), export to ONNX/TorchScript, and the batch producer's warps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_faces

from facelab.cli import main as cli_main
from facelab.core.checkpoint import save_checkpoint
from facelab.core.config import save_config
from facelab.core.errors import FacelabError
from facelab.swap.config import SwapConfig
from facelab.swap.data import Augment, SwapBatches, pick_indices
from facelab.swap.export import export_model
from facelab.swap.models import build_model
from facelab.swap.predictor import load_predictor


@pytest.fixture()
def model_dir(tmp_path):
    """A freshly initialised liae-ud model dir written the way the trainer writes one."""
    cfg = SwapConfig(resolution=64, archi="liae-ud", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(tmp_path / "model.safetensors", {"model": model.state_dict(), "iteration": 0})
    save_config(cfg, tmp_path / "config.yaml")
    return tmp_path


def test_predictor_contract(model_dir):
    pred = load_predictor(model_dir, device="cpu")
    assert pred.resolution == 64 and pred.face_type == "whole"
    faces = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    swapped, src_mask, dst_mask = pred.predict(faces)
    assert swapped.shape == (5, 64, 64, 3) and swapped.dtype == np.float32
    assert src_mask.shape == dst_mask.shape == (5, 64, 64) and src_mask.dtype == np.float32
    assert 0 <= swapped.min() and swapped.max() <= 1
    one, _, _ = pred.predict(faces[2:3])
    np.testing.assert_allclose(one[0], swapped[2], atol=1e-5)  # batching does not change results
    face_only, no_src, only_dst = pred.predict(faces, src_mask=False, dst_mask=True)
    assert no_src is None
    np.testing.assert_allclose(face_only, swapped, atol=1e-6)
    np.testing.assert_allclose(only_dst, dst_mask, atol=1e-6)
    assert pred.predict(faces[:0], src_mask=False, dst_mask=False)[1:] == (None, None)
    with pytest.raises(FacelabError, match="expects uint8 faces"):
        pred.predict(faces[:, :32])


@pytest.mark.parametrize("archi", ["df-ud", "liae-ud"])
def test_swap_matches_the_training_forward(archi):
    """Inference computes only the dst mask branch; it must equal what the full forward gives."""
    torch.manual_seed(0)
    model = build_model(SwapConfig(resolution=64, archi=archi, ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4)).eval()
    dst = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full = model(dst, dst)
        swapped, src_mask, dst_mask = model.swap(dst)
    torch.testing.assert_close(swapped, full.pred_swap)
    torch.testing.assert_close(src_mask, full.pred_swap_mask)
    torch.testing.assert_close(dst_mask, full.pred_dst_mask)


def test_bf16_prediction_stays_close_to_fp32(model_dir):
    faces = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ref = load_predictor(model_dir, device="cpu").predict(faces)
    fast = load_predictor(model_dir, device="cpu", precision="bf16").predict(faces)
    for a, b in zip(ref, fast):
        assert np.abs(a - b).max() < 0.03 and np.abs(a - b).mean() < 0.005


def test_not_a_model_dir_is_one_line_error(tmp_path):
    with pytest.raises(FacelabError, match="not a facelab model"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(model_dir, fmt):
    path, diff = export_model(model_dir, fmt)
    assert path.is_file() and diff < 1e-4


def test_export_cli_prints_json(model_dir, capsys):
    assert cli_main(["export", "--model-dir", str(model_dir), "--format", "onnx", "-o", str(model_dir / "g.onnx")]) == 0
    assert '"max_abs_diff_vs_pytorch"' in capsys.readouterr().out and (model_dir / "g.onnx").is_file()


def test_batches_are_a_function_of_seed_and_index():
    data = random_faces()
    b = SwapBatches(data, data, 4, Augment(random_flip=True, hsv_power=0.1), Augment(), seed=1)
    first, again, other = b[7], b[7], b[8]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["src_input"], other["src_input"])
    assert first["src_input"].shape == (4, 3, 32, 32) and first["dst_mask"].shape == (4, 1, 32, 32)


def test_random_warp_distorts_input_only():
    data = random_faces()
    warped = SwapBatches(data, data, 6, Augment(random_warp=True), Augment(random_warp=False), seed=2)[0]
    # without random warp the input is the target (same affine); with it the input differs
    assert torch.allclose(warped["dst_input"], warped["dst_target"])
    assert (warped["src_input"] - warped["src_target"]).abs().mean() > 0.02


def test_uniform_yaw_balances_rare_profiles():
    yaws = np.array([0.0] * 95 + [60.0] * 5, np.float32)
    rng = np.random.default_rng(0)
    share = np.mean(yaws[pick_indices(rng, yaws, 4000, uniform_yaw=True)] == 60.0)
    assert 0.4 < share < 0.6
    assert np.mean(yaws[pick_indices(rng, yaws, 4000, uniform_yaw=False)] == 60.0) < 0.1


@pytest.mark.parametrize("mode", ["rct", "lct", "mkl", "idt", "sot"])
def test_colour_transfer_moves_src_colours_towards_dst(mode):
    src, dst = random_faces(6, seed=1), random_faces(6, seed=2)
    src.images[:] = (src.images * 0.3 + np.array([200, 40, 40]) * 0.7).astype(np.uint8)  # bluish src
    dst.images[:] = (dst.images * 0.3 + np.array([40, 40, 200]) * 0.7).astype(np.uint8)  # reddish dst
    plain = SwapBatches(src, dst, 6, Augment(random_warp=False), Augment(), seed=0)[0]["src_target"]
    moved = SwapBatches(src, dst, 6, Augment(random_warp=False, ct_mode=mode), Augment(), seed=0)
    first, again = moved[0]["src_target"], moved[0]["src_target"]
    assert torch.equal(first, again)
    # channel means (B, G, R): the red channel rises, the blue one falls
    assert first[:, 2].mean() > plain[:, 2].mean() + 0.2 and first[:, 0].mean() < plain[:, 0].mean() - 0.2
