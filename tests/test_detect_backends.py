"""S3FD and 2D-FAN backends: weight loading by the public key names, decoding, NMS and load errors.

Real weights cannot be downloaded here, so each network's randomly initialised state dict is saved and
loaded back through the user-facing classes; decoding is checked on hand-made outputs instead.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from facelab.core.errors import FacelabError
from facelab.detect.base import Detection
from facelab.detect.registry import make_detector, make_landmarker
from facelab.detect.fan import FAN, crop, crop_frame, heatmaps_to_points
from facelab.detect.s3fd import S3FDNet, decode, nms
from facelab.detect.weights import load_weights

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def s3fd_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("s3fd") / "s3fd-test.pth"
    torch.save(S3FDNet().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def fan_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fan") / "2DFAN4-test.pth"
    torch.save(FAN(4).state_dict(), path)
    return path


def _image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_public_layout_s3fd():
    """Names and shapes of s3fd-619a316812.pth (face_alignment / DeepFaceLab port)."""
    state = S3FDNet().state_dict()
    assert len(state) == 65
    assert sum(v.numel() for v in state.values()) == 22_459_110
    assert state["fc6.weight"].shape == (1024, 512, 3, 3)
    assert state["conv3_3_norm.weight"].shape == (256,)
    assert state["conv3_3_norm_mbox_conf.weight"].shape == (4, 256, 3, 3)
    assert state["conv4_3_norm_mbox_conf.weight"].shape == (2, 512, 3, 3)
    assert state["fc7_mbox_loc.weight"].shape == (4, 1024, 3, 3)
    assert state["conv7_2_mbox_conf.bias"].shape == (2,)
    assert torch.equal(state["conv4_3_norm.weight"], torch.full((512,), 8.0))


def test_public_layout_fan():
    """Names and shapes of a 2DFAN4 state dict (face_alignment port)."""
    state = FAN(4).state_dict()
    params = {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert sum(v.numel() for v in params.values()) == 23_820_176
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["conv2.downsample.2.weight"].shape == (128, 64, 1, 1)
    assert state["conv2.conv3.weight"].shape == (32, 32, 3, 3)
    assert state["m3.b2_plus_1.bn3.running_var"].shape == (64,)
    assert state["m0.b1_4.conv1.weight"].shape == (128, 256, 3, 3)
    assert state["top_m_2.conv2.weight"].shape == (64, 128, 3, 3)
    assert state["al2.weight"].shape == (256, 68, 1, 1)
    assert state["l3.weight"].shape == (68, 256, 1, 1)
    assert "bl3.weight" not in state and "al3.weight" not in state and "m4.b1_1.bn1.weight" not in state


def test_s3fd_loads_strictly_and_detects(s3fd_file):
    det = make_detector("s3fd", str(s3fd_file), device="cpu")
    saved = torch.load(s3fd_file, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in det.net.state_dict().items())

    image = _image(256)
    found = det.detect(cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
    assert isinstance(found, list) and found, "random weights score about half the anchors above 0.5"
    assert all(isinstance(d, Detection) and len(d.box) == 4 and 0.5 < d.score <= 1.0 for d in found)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)

    det.max_side = 128  # a 256 image is shrunk to 128 and the boxes scaled back up by 2
    big = det.detect(image)
    assert len(big) == len(found)
    np.testing.assert_allclose([d.box for d in big], [np.array(d.box) * 2 for d in found], rtol=1e-5, atol=1e-3)


def test_s3fd_decode_hand_case():
    """One confident cell at level 1 (stride 8, anchor 32), row 2, column 3."""
    levels = [(torch.zeros(1, 2, 32 // 2**i, 32 // 2**i), torch.zeros(1, 4, 32 // 2**i, 32 // 2**i)) for i in range(6)]
    levels[1][0][0, 1, 2, 3] = 5.0
    levels[1][1][0, :, 2, 3] = torch.tensor([0.5, -0.5, np.log(2) / 0.2, 0.0])
    boxes, scores = decode(levels, 0.6)
    # centre (3.5*8 + 0.5*0.1*32, 2.5*8 - 0.5*0.1*32) = (29.6, 18.4); size (2*32, 32)
    np.testing.assert_allclose(boxes.numpy(), [[-2.4, 2.4, 61.6, 34.4]], atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), [1 / (1 + np.exp(-5.0))], rtol=1e-6)


def test_nms_hand_case():
    boxes = torch.tensor([[3, 0, 13, 10], [0, 0, 10, 10], [20, 20, 30, 30], [8, 0, 18, 10]], dtype=torch.float32)
    scores = torch.tensor([0.8, 0.9, 0.5, 0.7])
    # [3..13] overlaps the best box by 70/130 and goes; [8..18] overlaps the best by 20/180 and only the
    # suppressed [3..13] by 50/150, so greedy NMS keeps it.
    assert nms(boxes, scores, 0.3).tolist() == [1, 3, 2]


def test_fan_landmarks_from_file(fan_file):
    lm = make_landmarker("fan", str(fan_file), device="cpu")
    saved = torch.load(fan_file, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in lm.net.state_dict().items())

    box = (30.0, 34.0, 100.0, 110.0)
    points = lm.landmarks(_image(128), box)
    assert points.shape == (68, 2) and points.dtype == np.float64 and np.isfinite(points).all()
    centre, side = crop_frame(box)
    assert (np.abs(points - centre) <= side / 2).all(), "every point lies in the crop around the box"


def test_fan_heatmap_decode_hand_case():
    heatmaps = np.zeros((68, 64, 64), np.float32)
    heatmaps[0, 20, 10], heatmaps[0, 20, 11], heatmaps[0, 20, 9] = 1.0, 0.5, 0.2  # right neighbour higher
    heatmaps[1, 63, 0] = 1.0  # on the border: no refinement
    heatmaps[2, 5, 40], heatmaps[2, 4, 40] = 1.0, 0.3  # upper neighbour higher
    points = heatmaps_to_points(heatmaps, np.array([100.0, 120.0]), 128.0)  # 2 image px per heatmap cell
    np.testing.assert_allclose(points[0], [100 - 64 + 10.75 * 2, 120 - 64 + 20.5 * 2])
    np.testing.assert_allclose(points[1], [100 - 64 + 0.5 * 2, 120 - 64 + 63.5 * 2])
    np.testing.assert_allclose(points[2], [100 - 64 + 40.5 * 2, 120 - 64 + 5.25 * 2])


def test_fan_crop_geometry():
    """A block centred at (58, 98) lands at ((58-36)*2, (98-56)*2) in the 2x crop of side 128 around (100, 120)."""
    image = np.zeros((200, 200, 3), np.uint8)
    image[96:100, 56:60] = 255
    out = crop(image, np.array([100.0, 120.0]), 128.0)
    m = cv2.moments(out[:, :, 0].astype(np.float32))
    np.testing.assert_allclose([m["m10"] / m["m00"] + 0.5, m["m01"] / m["m00"] + 0.5], [44.0, 84.0], atol=1e-3)
    centre, side = crop_frame((0, 0, 100, 95))
    np.testing.assert_allclose(centre, [50.0, 47.5 - 0.12 * 95])
    assert side == pytest.approx(200.0)


def _bad_files(tmp_path, fan_file):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    shape = tmp_path / "shape.pth"
    state = S3FDNet().state_dict()
    state["fc7.weight"] = torch.zeros(1024, 1024, 3, 3)
    torch.save(state, shape)
    bad_st = tmp_path / "truncated.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    scripted = tmp_path / "2DFAN4-scripted.zip"
    with warnings.catch_warnings():  # TorchScript is deprecated, but users still hold such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8)).save(str(scripted))
    return {
        "torchscript": (scripted, "a TorchScript archive, not a state dict; export one with"),
        "missing": (tmp_path / "nope.pth", "no such file"),
        "corrupt": (corrupt, "cannot be read"),
        "truncated safetensors": (bad_st, "cannot be read"),
        "wrong network": (fan_file, "not an S3FD state dict: missing key conv1_1.weight"),
        "wrong shape": (shape, "fc7.weight has shape (1024, 1024, 3, 3), expected (1024, 1024, 1, 1)"),
    }


def test_load_errors_name_the_file(tmp_path, fan_file):
    for label, (path, message) in _bad_files(tmp_path, fan_file).items():
        with pytest.raises(FacelabError) as err:
            make_detector("s3fd", str(path), device="cpu")
        text = str(err.value)
        assert str(path) in text and message in text and "\n" not in text, (label, text)


def test_fan_rejects_s3fd_weights(s3fd_file):
    with pytest.raises(FacelabError, match="not a 2D-FAN .* state dict: missing key"):
        make_landmarker("fan", str(s3fd_file), device="cpu")


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_loader_accepts_wrapped_old_and_safetensors_files(tmp_path, fmt):
    """``{"state_dict": ...}`` wrappers, DataParallel ``module.`` prefixes and pre-0.4.1 BatchNorm (no counter)."""
    torch.manual_seed(1)
    source = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / f"tiny.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:
        import safetensors.torch

        safetensors.torch.save_file(state, str(path))
    model = load_weights(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), path, "a tiny")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items() if k in state)
