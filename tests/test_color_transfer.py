"""Colour transfer on real faces: each mode must move the source's colour statistics onto the target's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelab.color import MODES, color_transfer
from facelab.core.errors import FacelabError


def _crop(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, size: int = 128) -> np.ndarray:
    return cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def faces(sample_photos):
    """Two real face crops with very different colouring (warm studio light vs. cool flag backdrop)."""
    return _crop(sample_photos["astronaut"], 40, 220, 80, 230), _crop(sample_photos["hopper"], 120, 360, 150, 370)


def _lab_stats(img: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).reshape(-1, 3)
    if mask is not None:
        lab = lab[mask.reshape(-1) > 0.5]
    return lab.mean(0), lab.std(0)


def _cov(img: np.ndarray) -> np.ndarray:
    return np.cov(img.reshape(-1, 3).astype(np.float64), rowvar=False)


def _channel_w1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean 1-D Wasserstein distance over the three channels (sorted-quantile difference)."""
    probs = np.linspace(0, 1, 101)
    qa = np.quantile(a.reshape(-1, 3), probs, axis=0)
    qb = np.quantile(b.reshape(-1, 3), probs, axis=0)
    return float(np.abs(qa - qb).mean())


def test_rct_matches_lab_mean_and_std(faces):
    src, tgt = faces
    out = color_transfer("rct", src, tgt)
    mu_o, sd_o = _lab_stats(out)
    mu_t, sd_t = _lab_stats(tgt)
    mu_s, _ = _lab_stats(src)
    assert np.abs(mu_s - mu_t).max() > 5  # the two faces really differ
    np.testing.assert_allclose(mu_o, mu_t, atol=1.5)
    np.testing.assert_allclose(sd_o, sd_t, rtol=0.08)


def test_rct_uses_only_masked_pixels_for_statistics(faces):
    src, tgt = faces
    src = src.copy()
    src[:, 64:] = (0.0, 1.0, 0.0)  # right half pure green: must not bias the statistics
    mask = np.zeros(src.shape[:2], np.float32)
    mask[:, :64] = 1
    out = color_transfer("rct", src, tgt, source_mask=mask)
    mu_o, _ = _lab_stats(out, mask)
    np.testing.assert_allclose(mu_o, _lab_stats(tgt)[0], atol=1.5)


def test_lct_matches_covariance(faces):
    src, tgt = faces
    out = color_transfer("lct", src, tgt)
    c_o, c_t = _cov(out), _cov(tgt)
    assert np.linalg.norm(_cov(src) - c_t) / np.linalg.norm(c_t) > 0.2
    assert np.linalg.norm(c_o - c_t) / np.linalg.norm(c_t) < 0.05
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), tgt.reshape(-1, 3).mean(0), atol=0.01)


@pytest.mark.parametrize("mode", ["mkl", "lct"])
def test_linear_modes_match_covariance(faces, mode):
    src, tgt = faces
    out = color_transfer(mode, src, tgt)
    assert np.linalg.norm(_cov(out) - _cov(tgt)) / np.linalg.norm(_cov(tgt)) < 0.05


@pytest.mark.parametrize("mode", ["mkl", "sot", "idt"])
def test_same_distribution_is_left_unchanged(faces, mode):
    src, _ = faces
    mirrored = src[:, ::-1].copy()  # exactly the same colours, other places
    out = color_transfer(mode, src, mirrored)
    assert np.abs(out - src).max() < 0.02


@pytest.mark.parametrize("mode", ["mkl", "sot"])
def test_sampled_same_distribution_changes_little(faces, mode):
    src, _ = faces
    rng = np.random.default_rng(1)
    half = src.reshape(-1, 3)[rng.permutation(src.shape[0] * src.shape[1])[: src.shape[0] * src.shape[1] // 2]]
    out = color_transfer(mode, src, half.reshape(-1, 64, 3))
    assert np.abs(out - src).mean() < 0.01


@pytest.mark.parametrize("mode", ["idt", "sot", "mix", "mkl", "rct", "lct"])
def test_every_mode_moves_the_distribution_toward_the_target(faces, mode):
    src, tgt = faces
    before = _channel_w1(src, tgt)
    after = _channel_w1(color_transfer(mode, src, tgt), tgt)
    # 3-D transports (idt, sot) match the whole distribution; moment matching gets part of the way.
    limit = {"idt": 0.15, "sot": 0.15, "mix": 0.5, "rct": 0.6}.get(mode, 0.4)
    assert after < limit * before, (mode, before, after)


@pytest.mark.parametrize("mode", ["mkl-m", "idt-m", "sot-m", "mix-m"])
def test_masked_modes_need_masks_and_use_them(faces, mode):
    src, tgt = faces
    with pytest.raises(FacelabError, match="mask"):
        color_transfer(mode, src, tgt)
    src = src.copy()
    src[:, 96:] = (0.0, 1.0, 0.0)
    mask = np.zeros(src.shape[:2], np.float32)
    mask[:, :96] = 1
    out = color_transfer(mode, src, tgt, source_mask=mask, target_mask=np.ones(tgt.shape[:2], np.float32))
    before = _channel_w1(src[:, :96], tgt)
    assert _channel_w1(out[:, :96], tgt) < 0.5 * before


def test_batched_equals_one_by_one(faces):
    src, tgt = faces
    batch = np.stack([src, src[::-1]])
    targets = np.stack([tgt, tgt[:, ::-1]])
    out = color_transfer("rct", batch, targets)
    assert out.shape == batch.shape
    np.testing.assert_allclose(out[1], color_transfer("rct", batch[1], targets[1]), atol=1e-6)


def test_none_copies_and_unknown_mode_is_refused(faces):
    src, tgt = faces
    out = color_transfer("none", src, tgt)
    assert out is not src and np.array_equal(out, src)
    with pytest.raises(FacelabError, match="unknown colour transfer"):
        color_transfer("fancy", src, tgt)
    assert set(MODES) >= {"none", "rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m"}


def test_results_stay_in_range_and_repeat(faces):
    src, tgt = faces
    a = color_transfer("sot", src, tgt, seed=3)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, color_transfer("sot", src, tgt, seed=3))
