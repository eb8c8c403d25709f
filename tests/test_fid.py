"""FID: the Frechet distance against scipy, the Inception-v3 loader, the offline dlib extractor."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import scipy.linalg
import torch

from facelab.core.errors import FacelabError
from facelab.metrics.fid import fid_from_features, frechet_distance, make_extractor, statistics
from facelab.metrics.inception import FIDInceptionV3, InceptionFeatures, load_fid_inception


def scipy_frechet(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_matches_scipy_on_known_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-8)
    assert ours > 1.0


def test_frechet_closed_form_for_diagonal_gaussians():
    # N(mu1, diag(v1)) vs N(mu2, diag(v2)): |mu1 - mu2|^2 + sum (sqrt v1 - sqrt v2)^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 5.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)


def test_frechet_of_samples_against_scipy_and_itself():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    y = rng.normal(loc=0.5, scale=2.0, size=(200, 8))
    assert fid_from_features(x, y) == pytest.approx(scipy_frechet(*statistics(x), *statistics(y)), rel=1e-6)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    few = rng.normal(size=(5, 32))  # rank-deficient covariance: still real and ~0 against itself
    assert fid_from_features(few, few) == pytest.approx(0.0, abs=1e-6)


def test_small_sets_shortcut_equals_the_covariance_formula():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 64))  # fewer images than feature dimensions: the SVD shortcut
    y = rng.normal(loc=0.3, scale=1.5, size=(30, 64)) + x[:1]
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(*statistics(x), *statistics(y)), rel=1e-7)
    assert fid_from_features(x, y) == pytest.approx(scipy_frechet(*statistics(x), *statistics(y)), rel=1e-6)
    with pytest.raises(FacelabError, match="do not match"):
        fid_from_features(x, rng.normal(size=(20, 63)))


def test_frechet_refuses_mismatched_statistics():
    with pytest.raises(FacelabError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(FacelabError, match="at least 2 images"):
        statistics(np.zeros((1, 3)))


def test_dlib_extractor_on_real_faces_self_fid_is_zero(sample_photos):
    extractor = make_extractor("dlib-resnet128")
    assert extractor.name == "dlib-resnet128"
    faces = []
    for photo in sample_photos.values():
        h, w = photo.shape[:2]
        for k in range(4):  # slightly different crops of each real face
            m = 4 * k
            faces.append(np.ascontiguousarray(photo[m : h - m, m : w - m][: min(h, w) - 2 * m, : min(h, w) - 2 * m]))
    feats = extractor(faces)
    assert feats.shape == (8, 128)
    assert np.isfinite(feats).all()
    # different people are further apart than crops of one person
    d_same = np.linalg.norm(feats[0] - feats[1])
    d_other = np.linalg.norm(feats[0] - feats[4])
    assert d_same < d_other
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(feats[:4], feats[4:]) > 0.01


def test_inception_network_shape():
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 75, 75)).shape == (1, 2048)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_inception_loader_reads_user_weights(tmp_path, suffix):
    torch.manual_seed(0)
    source = FIDInceptionV3()
    state = {k: v + 0.01 * torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(1008, 2048)  # pytorch-fid's file carries a classifier we do not need
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path / f"pt_inception{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    net = load_fid_inception(path)
    assert torch.equal(net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert torch.equal(net.Conv2d_1a_3x3.bn.running_var, state["Conv2d_1a_3x3.bn.running_var"])
    assert not net.training
    feats = InceptionFeatures(path, batch_size=2)(np.zeros((3, 40, 40, 3), np.uint8))
    assert feats.shape == (3, 2048)


def test_inception_loader_errors(tmp_path):
    with pytest.raises(FacelabError, match="not found"):
        load_fid_inception(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FacelabError, match="could not be read"):
        load_fid_inception(bad)
    partial = tmp_path / "partial.safetensors"
    safetensors.torch.save_file({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, str(partial))
    with pytest.raises(FacelabError, match="lack .* parameter"):
        load_fid_inception(partial)
    with pytest.raises(FacelabError, match="needs --inception-weights"):
        make_extractor("inception-v3")
