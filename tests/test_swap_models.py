"""Every swap architecture builds at 64/96/128 and returns the right shapes; losses and SSIM behave."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from facelab.core.errors import FacelabError
from facelab.metrics.ssim import ssim
from facelab.swap.config import SwapConfig, apply_preset, parse_archi
from facelab.swap.discriminators import CodeDiscriminator, UNetPatchDiscriminator
from facelab.swap.models import build_model

ARCHIS = [f"{kind}-{''.join(o)}".rstrip("-") for kind in ("df", "liae") for n in range(4)
          for o in itertools.combinations("udt", n)]


def _variants():
    for archi, res in itertools.product(ARCHIS, (64, 96, 128)):
        if "d" in archi.partition("-")[2] and res % 32:
            continue
        yield archi, res


@pytest.mark.parametrize("archi,res", list(_variants()))
def test_saehd_variant_shapes(archi, res):
    torch.manual_seed(0)
    cfg = SwapConfig(model="saehd", archi=archi, resolution=res, ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4)
    cfg.check()
    model = build_model(cfg)
    x = torch.rand(2, 3, res, res)
    with torch.no_grad():
        out = model(x, x)
        swapped, src_mask, dst_mask = model.swap(x)
    for img, mask in zip(out[0:6:2], out[1:6:2]):
        assert img.shape == (2, 3, res, res) and mask.shape == (2, 1, res, res)
        assert 0 <= img.min() and img.max() <= 1
    assert swapped.shape == (2, 3, res, res) and src_mask.shape == dst_mask.shape == (2, 1, res, res)
    assert torch.allclose(swapped, out.pred_swap, atol=1e-6)
    _check_mask_skipping(model, x, swapped, src_mask, dst_mask)


def _check_mask_skipping(model, x, swapped, src_mask, dst_mask):
    """swap() without the masks gives the same face (merge skips mask branches its mask mode ignores)."""
    with torch.no_grad():
        face_only, none_src, none_dst = model.swap(x, src_mask=False, dst_mask=False)
        _, only_src, no_dst = model.swap(x, src_mask=True, dst_mask=False)
        _, no_src, only_dst = model.swap(x, src_mask=False, dst_mask=True)
    assert none_src is None and none_dst is None and no_dst is None and no_src is None
    torch.testing.assert_close(face_only, swapped)
    torch.testing.assert_close(only_src, src_mask)
    torch.testing.assert_close(only_dst, dst_mask)


@pytest.mark.parametrize("model", ["original", "quick96"])
def test_presets_build(model):
    cfg = apply_preset(SwapConfig(model=model))
    model_ = build_model(cfg)
    r = cfg.resolution
    with torch.no_grad():
        x = torch.rand(1, 3, r, r)
        out = model_(torch.rand(1, 3, r, r), x)
        swapped, src_mask, dst_mask = model_.swap(x)
    assert out.pred_swap.shape == (1, 3, r, r) and out.pred_dst_mask.shape == (1, 1, r, r)
    _check_mask_skipping(model_, x, swapped, src_mask, dst_mask)


def test_preset_refuses_network_change_and_allows_batch():
    assert apply_preset(SwapConfig(model="quick96", batch_size=2), {"batch_size"}).batch_size == 2
    with pytest.raises(FacelabError, match="resolution"):
        apply_preset(SwapConfig(model="quick96", resolution=128), {"resolution"})


@pytest.mark.parametrize("bad", ["dfx", "liae-q", "df-uu", "saehd"])
def test_bad_archi_refused(bad):
    with pytest.raises(FacelabError, match="archi"):
        parse_archi(bad)


def test_bad_resolution_refused():
    with pytest.raises(FacelabError, match="steps of 32"):
        SwapConfig(archi="df-d", resolution=80).check()


def test_discriminators_shapes():
    d = UNetPatchDiscriminator(64, patch_size=16, dims=8)
    center, pixel = d(torch.rand(2, 3, 64, 64))
    assert pixel.shape == (2, 1, 64, 64) and center.shape[:2] == (2, 1)
    assert CodeDiscriminator(32, 16)(torch.rand(2, 32, 8, 8)).shape == (2, 1)


def test_ssim_matches_reference_and_orders_quality():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((48, 48, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    c = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]
    ref = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)
    assert ssim(t(a), t(b)).item() == pytest.approx(ref, abs=1e-4)
    assert ssim(t(a), t(a)).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(t(a), t(c)).item() < ssim(t(a), t(b)).item()
