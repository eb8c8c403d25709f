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


# ------------------------------------------------------------------- DeepFaceLive's DFM
def _dfm_model_dir(tmp_path, archi: str, face_type: str = "whole"):
    cfg = SwapConfig(resolution=64, archi=archi, face_type=face_type, ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4)
    torch.manual_seed(1)
    model = build_model(cfg)
    folder = tmp_path / f"celeb_{archi}"
    folder.mkdir()
    save_checkpoint(folder / "model.safetensors", {"model": model.state_dict(), "iteration": 0})
    save_config(cfg, folder / "config.yaml")
    return folder, model.eval()


@pytest.mark.parametrize("archi", ["df-ud", "liae-ud"])
def test_dfm_export_is_the_layout_deepfacelive_loads(tmp_path, archi):
    """What DeepFaceLive's DFMModel needs, checked with onnxruntime: one input named in_face:0 holding NHWC float
    BGR faces with a fixed height and width (it reads the model's resolution from them) and a free batch size;
    three NHWC outputs in the order it unpacks them (dst mask, swapped face, its mask), equal to PyTorch's swap
    and within [0, 1]."""
    import onnx
    import onnxruntime

    model_dir, model = _dfm_model_dir(tmp_path, archi)
    path, diff = export_model(model_dir, "dfm")
    assert path == model_dir / "celeb_{}.dfm".format(archi) and diff < 1e-4
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "in_face:0" and inp.shape[1:] == [64, 64, 3] and isinstance(inp.shape[0], str)
    assert inp.type == "tensor(float)"
    assert [o.name for o in session.get_outputs()] == ["out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"]
    # DeepFaceLive 1.x ships onnxruntime 1.15, which reads ONNX IR up to version 9 and opsets up to 19
    proto = onnx.load(str(path))
    assert proto.ir_version <= 9 and max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 19
    faces = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    dst_mask, celeb, celeb_mask = session.run(None, {"in_face:0": faces.astype(np.float32) / 255})  # as DFMModel feeds it
    assert dst_mask.shape == celeb_mask.shape == (2, 64, 64, 1) and celeb.shape == (2, 64, 64, 3)
    with torch.no_grad():
        swapped, src_m, dst_m = model.swap(torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255)
    for got, want in ((celeb, swapped), (celeb_mask, src_m), (dst_mask, dst_m)):
        np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-4)
        assert 0 <= got.min() and got.max() <= 1


def _deepfacelive_corners(landmarks: np.ndarray, coverage: float, y_offset: float) -> np.ndarray:
    """The top-left, top-right and bottom-right corners of the square DeepFaceLive's aligner cuts ("from points",
    68 landmarks): its template fitted to 27 of the points, its square scaled by coverage about its centre and
    moved down by (y_offset - 0.08) template heights; written from the geometry its FLandmarks2D.calc_cut describes."""
    from facelab.align.face_types import MEAN_FACE
    from facelab.align.transform import invert, transform_points, umeyama

    points = list(range(17, 36)) + [36, 39, 42, 45, 48, 54]
    mat = invert(umeyama(landmarks[points], MEAN_FACE[[p - 17 for p in points]]))
    tl, tr, br, bl, centre = transform_points(np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], float), mat)
    half = np.linalg.norm(tl - centre) * coverage
    centre = centre + (bl - tl) * (y_offset - 0.08)
    down, up = (br - tl) / np.linalg.norm(br - tl), (tr - bl) / np.linalg.norm(tr - bl)
    return np.array([centre - down * half, centre + up * half, centre + down * half])


@pytest.mark.parametrize("face_type", ["half", "mid", "full", "whole", "head"])
def test_the_printed_deepfacelive_aligner_settings_cut_the_training_crop(face_type):
    """On a face whose landmarks are the template turned and scaled into a frame, the aligner settings `export
    --format dfm` prints make DeepFaceLive cut the square facelab aligns for that face type, to within the 0.1
    steps of its coverage control (mid's 1.135 is set as 1.1)."""
    from facelab.align.face_types import MEAN_FACE
    from facelab.align.transform import align_matrix, invert, transform_points
    from facelab.swap.export import deepfacelive_aligner

    angle, scale, shift = 0.3, 180.0, np.array([300.0, 220.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = np.zeros((68, 2))
    landmarks[17:] = MEAN_FACE @ rot.T + shift
    settings = deepfacelive_aligner(face_type, 128)
    assert settings["resolution"] == 128 and settings["align_mode"] == "from points" and not settings["head_mode"]
    ours = transform_points(np.array([[0, 0], [128, 0], [128, 128]], float), invert(align_matrix(landmarks, 128, face_type)))
    theirs = _deepfacelive_corners(landmarks, settings["face_coverage"], settings["y_offset"])
    side = np.linalg.norm(ours[1] - ours[0])
    assert np.abs(theirs - ours).max() < 0.025 * side


def test_dfm_export_command_prints_the_aligner_settings(tmp_path, capsys):
    import json

    model_dir, _ = _dfm_model_dir(tmp_path, "df-ud", face_type="f")
    assert cli_main(["export", "--model_dir", str(model_dir), "--format", "dfm", "-o", str(tmp_path / "Me.dfm")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["path"] == str(tmp_path / "Me.dfm") and (tmp_path / "Me.dfm").is_file()
    assert result["deepfacelive_face_aligner"]["face_coverage"] == 1.4 and result["max_abs_diff_vs_pytorch"] < 1e-4
