"""What each SAEHD option does, checked on its own: the optimiser, the loss terms and the batch augmentations.

test_swap_train runs every option end to end (finite losses, files written); these tests check that each
option has the effect its help sentence promises, on inputs small enough to reason about.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_faces

from facelab.swap.data import Augment, SwapBatches
from facelab.swap.discriminators import CodeDiscriminator, UNetPatchDiscriminator, d_loss, g_loss
from facelab.swap.losses import LossOptions, gaussian_blur, side_loss, soft_mask, style_losses
from facelab.swap.optim import AdaBelief

RES = 64


def _quadratic_steps(opt_factory, steps=6):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50))
    target = torch.randn(50)
    opt = opt_factory([p])
    history = []
    for _ in range(steps):
        opt.zero_grad()
        ((p - target) ** 2 * torch.linspace(0.1, 3, 50)).sum().backward()
        opt.step()
        history.append(p.detach().clone())
    return torch.stack(history)


def test_adam_mode_matches_torch_adam():
    ours = _quadratic_steps(lambda ps: AdaBelief(ps, lr=1e-2, eps=1e-7, belief=False))
    ref = _quadratic_steps(lambda ps: torch.optim.Adam(ps, lr=1e-2, eps=1e-7))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_adabelief_follows_the_paper_update():
    """AdaBelief (Zhuang et al. 2020): s_t = b2 s + (1 - b2)(g - m_t)^2 + eps, bias-corrected, step m^/(sqrt(s^) + eps)."""
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-16
    ours = _quadratic_steps(lambda ps: AdaBelief(ps, lr=lr, eps=eps)).numpy()
    torch.manual_seed(0)
    p = torch.randn(50).numpy().astype(np.float64)
    target, weight = torch.randn(50).numpy(), torch.linspace(0.1, 3, 50).numpy()
    m, s = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 7):
        g = 2 * weight * (p - target)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
        np.testing.assert_allclose(ours[t - 1], p, rtol=1e-4, atol=1e-6)


def _fused_against_eager(monkeypatch, compiled) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Five AdaBelief steps of an NCHW, a channels_last and a small parameter, with the compiled update
    (``compiled``: what _compiled holds, or left to compile) and with the eager passes."""
    from facelab.swap import optim

    def run(min_numel):
        monkeypatch.setattr(optim, "FUSE_MIN_NUMEL", min_numel)
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(64, 32, 3, 3).contiguous(memory_format=torch.channels_last)),
              torch.nn.Parameter(torch.randn(5000)), torch.nn.Parameter(torch.randn(10))]
        opt = AdaBelief(ps, lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            sum(((p - 0.3) ** 2 * torch.linspace(0.1, 3, p.numel()).view_as(p)).sum() for p in ps).backward()
            opt.step()
        return [p.detach() for p in ps]

    if compiled is not None:
        monkeypatch.setattr(optim, "_compiled", compiled)
    return list(zip(run(1000), run(1 << 62)))


@pytest.mark.slow  # torch.compile: about 30 s the first time on the 2-core machine
def test_compiled_update_is_the_eager_update(monkeypatch):
    for fused, eager in _fused_against_eager(monkeypatch, None):
        torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)
        assert fused.stride() == eager.stride()


def test_a_failing_compiler_falls_back_to_the_eager_update(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    for fused, eager in _fused_against_eager(monkeypatch, {"update": broken}):
        torch.testing.assert_close(fused, eager, rtol=0, atol=0)


@pytest.mark.parametrize("on_cpu", [False, True])
def test_lr_dropout_applies_each_update_with_its_probability(on_cpu):
    p = torch.nn.Parameter(torch.zeros(200, 200))
    opt = AdaBelief([p], lr=1e-2, lr_dropout=0.3, dropout_on_cpu=on_cpu)
    p.grad = torch.ones_like(p)
    opt.step()
    assert 0.28 < (p != 0).float().mean().item() < 0.32
    full = torch.nn.Parameter(torch.zeros(200, 200))
    opt = AdaBelief([full], lr=1e-2)
    full.grad = torch.ones_like(full)
    opt.step()
    assert bool((full != 0).all())


def _face_and_masks():
    """A textured target, its face mask (a centred square) and an eyes/mouth mask inside it."""
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.random((2, 3, RES, RES), dtype=np.float32))
    mask = torch.zeros(2, 1, RES, RES)
    mask[..., 16:48, 16:48] = 1
    em = torch.zeros_like(mask)
    em[..., 24:30, 20:44] = 1
    return target, mask, em


def _side_loss(pred, opts, pred_mask=None):
    target, mask, em = _face_and_masks()
    return side_loss(target, mask, em, pred, mask if pred_mask is None else pred_mask, opts)[0].item()


def test_masked_training_ignores_the_background_and_unmasked_does_not():
    target, mask, _ = _face_and_masks()
    background = target.clone()
    background[..., :6, :] = 1 - background[..., :6, :]  # far outside the soft mask's blurred edge
    assert soft_mask(mask, RES)[..., :6, :].abs().max() == 0
    masked, plain = LossOptions(RES, masked_training=True), LossOptions(RES, masked_training=False)
    assert _side_loss(target, masked) == pytest.approx(0, abs=1e-6)
    assert _side_loss(background, masked) == pytest.approx(0, abs=1e-6)
    assert _side_loss(background, plain) > 0.5


def test_eyes_mouth_priority_weights_errors_there():
    target, _, em = _face_and_masks()
    eyes_err, cheek_err = target.clone(), target.clone()
    eyes_err[..., 24:30, 20:44] = 1 - eyes_err[..., 24:30, 20:44]
    cheek_err[..., 36:42, 20:44] = 1 - cheek_err[..., 36:42, 20:44]  # the same area, outside eyes/mouth
    plain, prio = LossOptions(RES), LossOptions(RES, eyes_mouth_prio=True)
    assert _side_loss(eyes_err, plain) == pytest.approx(_side_loss(cheek_err, plain), rel=0.15)
    assert _side_loss(cheek_err, prio) == pytest.approx(_side_loss(cheek_err, plain), rel=1e-6)
    assert _side_loss(eyes_err, prio) > 5 * _side_loss(eyes_err, plain)


def test_mask_loss_teaches_the_mask_output():
    target, mask, _ = _face_and_masks()
    opts = LossOptions(RES)
    assert _side_loss(target, opts, pred_mask=1 - mask) > _side_loss(target, opts) + 5


def test_face_style_learns_dst_colours_inside_and_bg_style_outside():
    dst, mask, _ = _face_and_masks()
    tinted_face, other_bg = dst.clone(), dst.clone()
    tinted_face[..., 16:48, 16:48] = tinted_face[..., 16:48, 16:48] * 0.5  # darker face, same background
    other_bg[..., :8, :] = 1 - other_bg[..., :8, :]  # same face, different background
    face, bg = LossOptions(RES, face_style_power=0.01), LossOptions(RES, bg_style_power=0.01)
    assert style_losses(dst, mask, dst, face).item() == pytest.approx(0, abs=1e-6)
    assert style_losses(dst, mask, tinted_face, face).item() > 1
    assert style_losses(dst, mask, other_bg, face).item() == pytest.approx(0, abs=1e-3)
    assert style_losses(dst, mask, other_bg, bg).item() > 0.01
    assert style_losses(dst, mask, tinted_face, bg).item() < 0.1 * style_losses(dst, mask, other_bg, bg).item()


def _faces():
    return random_faces(64, 32, seed=3, box=(8, 24, 2, 12))  # the face mask on the left half, to see flips


def _dst(aug, seed=0, n=64):
    return SwapBatches(_faces(), _faces(), n, Augment(), aug, seed=seed)[0]


def test_random_flip_mirrors_about_half_the_faces():
    flipped = _dst(Augment(random_warp=False, random_flip=True))
    cols = torch.arange(32, dtype=torch.float32)
    centre_x = (flipped["dst_mask"][:, 0].sum(1) * cols).sum(1) / flipped["dst_mask"][:, 0].sum((1, 2))
    mirrored = centre_x > 16
    assert 0.3 < mirrored.float().mean().item() < 0.7
    assert bool((centre_x[~mirrored] < 10).all() and (centre_x[mirrored] > 22).all())
    plain = _dst(Augment(random_warp=False))["dst_mask"][:, 0]
    assert bool(((plain.sum(1) * cols).sum(1) / plain.sum((1, 2)) < 10).all())


def test_hsv_power_jitters_the_input_colours_not_the_target():
    still, jittered = _dst(Augment(random_warp=False)), _dst(Augment(random_warp=False, hsv_power=0.3))
    assert torch.allclose(still["dst_input"], still["dst_target"])
    inp, target = jittered["dst_input"], jittered["dst_target"]
    assert (inp - target).mean((2, 3)).abs().max() > 0.05  # colours moved ...
    grey_in, grey_t = inp.mean(1).flatten(1), target.mean(1).flatten(1)
    corr = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(grey_in, grey_t)])
    assert corr.min() > 0.5  # ... on the same, unwarped face


def _detail(x):
    """Mean squared Laplacian per pixel: high for the random texture, low once it is blurred."""
    lap = x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return lap**2


def test_blur_out_mask_blurs_only_outside_the_face():
    sharp, blurred = _dst(Augment(random_warp=False)), _dst(Augment(random_warp=False, blur_out_mask=True))
    inside = blurred["dst_mask"][..., 1:-1, 1:-1] > 0.99
    outside = blurred["dst_mask"][..., 1:-1, 1:-1] < 0.01
    d_sharp, d_blur = _detail(sharp["dst_target"]), _detail(blurred["dst_target"])
    assert d_blur.mean(1, keepdim=True)[outside].mean() < 0.2 * d_sharp.mean(1, keepdim=True)[outside].mean()
    inside_ratio = d_blur.mean(1, keepdim=True)[inside].mean() / d_sharp.mean(1, keepdim=True)[inside].mean()
    assert inside_ratio > 0.8


def _train_discriminator(disc, real, fake, steps):
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        outs_r, outs_f = disc(real), disc(fake)
        pairs = zip(outs_r, outs_f) if isinstance(outs_r, tuple) else [(outs_r, outs_f)]
        loss = sum(d_loss(r, f) for r, f in pairs)
        loss.backward()
        opt.step()
    return loss.item()


def _gan_step(real, fake):
    """Train a patch discriminator on real vs fake, then move fake one generator step against it."""
    torch.manual_seed(0)
    disc = UNetPatchDiscriminator(32, patch_size=8, dims=8)
    assert _train_discriminator(disc, real, fake, 150) < 0.3 * 2 * np.log(2)
    fake = fake.clone().requires_grad_(True)
    center, pixel = disc(fake)
    (g_loss(center) + g_loss(pixel)).backward()
    return fake.detach() - 0.02 * fake.grad / fake.grad.abs().mean()


def test_gan_power_pushes_the_generator_towards_what_the_discriminator_calls_real():
    """Sharp real faces make the step add detail; the same machinery with blurred "real" faces removes it."""
    torch.manual_seed(0)
    sharp = torch.rand(8, 3, 32, 32)
    blurred = gaussian_blur(sharp, 1)
    assert _detail(_gan_step(sharp, blurred)).mean() > 1.5 * _detail(blurred).mean()
    assert _detail(_gan_step(blurred, sharp)).mean() < 0.97 * _detail(sharp).mean()


def test_true_face_discriminator_pulls_dst_codes_towards_src():
    torch.manual_seed(0)
    src_codes, dst_codes = torch.randn(16, 8, 4, 4) + 1.0, torch.randn(16, 8, 4, 4) - 1.0
    disc = CodeDiscriminator(8, dims=32)
    assert _train_discriminator(disc, src_codes, dst_codes, 100) < 0.1
    dst = dst_codes.clone().requires_grad_(True)
    g_loss(disc(dst)).backward()
    towards_src = (src_codes.mean(0) - dst.detach()).flatten(1)
    cosine = F.cosine_similarity(-dst.grad.flatten(1), towards_src, dim=1)
    assert cosine.mean() > 0.3


def _update_gradient_norms(tmp_path, clipgrad: bool) -> list[float]:
    """Total gradient norm the generator's optimiser sees at each of three training steps."""
    from facelab.swap.config import SwapConfig
    from facelab.swap.train import Trainer

    faces = random_faces(10, RES, seed=4, box=(16, 48, 16, 48))
    cfg = SwapConfig(resolution=RES, archi="df-ud", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4, batch_size=4,
                     workers=0, eval_every=0, preview_every=1000, eyes_mouth_prio=True, clipgrad=clipgrad)
    trainer = Trainer(cfg, faces, faces, tmp_path / f"clip{clipgrad}")
    norms, step = [], trainer.opt.step

    def recording_step(*args, **kwargs):
        grads = [p.grad.norm() for group in trainer.opt.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.stack(grads).norm().item())
        return step(*args, **kwargs)

    trainer.opt.step = recording_step
    for i in range(3):
        trainer.step(trainer.batches[i])
    return norms


def test_clipgrad_scales_every_update_down_to_gradient_norm_one(tmp_path):
    raw, clipped = _update_gradient_norms(tmp_path, False), _update_gradient_norms(tmp_path, True)
    assert len(raw) == len(clipped) == 3 and min(raw) > 1.2  # above the clipping norm
    assert clipped == pytest.approx([1.0] * 3, abs=1e-3)


# ------------------------------------------------------------------- the book's training-loop options
def _trainer(tmp_path, name: str, **options):
    from facelab.swap.config import SwapConfig
    from facelab.swap.train import Trainer

    faces = random_faces(10, RES, seed=4, box=(16, 48, 16, 48))
    cfg = SwapConfig(**{**dict(resolution=RES, archi="df-ud", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4,
                               batch_size=4, workers=0, eval_every=0, preview_every=1000), **options})
    return Trainer(cfg, faces, faces, tmp_path / name)


def test_mse_only_loss_is_the_pixel_error_alone():
    """loss=mse drops the structural term: two predictions with the same pixel error but different structure
    (noise against a uniform offset of the same energy) cost the same, under dssim+mse they do not."""
    torch.manual_seed(0)
    target = torch.rand(2, 3, RES, RES)
    mask = torch.zeros(2, 1, RES, RES)
    mask[..., 12:52, 12:52] = 1
    noisy, offset = (target + 0.05 * torch.randn_like(target)).clamp(0, 1), target.clone()
    offset = offset + ((noisy - target) ** 2).mean().sqrt()  # the same mean squared error, no change of structure
    em = torch.zeros_like(mask)
    mse, both = LossOptions(RES, loss="mse"), LossOptions(RES)
    costs = {name: [side_loss(target, mask, em, pred, mask, opts)[0].item() for pred in (noisy, offset)]
             for name, opts in (("mse", mse), ("dssim+mse", both))}
    blur = soft_mask(mask, RES)
    assert costs["mse"][0] == pytest.approx(10 * F.mse_loss(noisy * blur, target * blur).item(), rel=1e-6)
    assert costs["mse"][0] == pytest.approx(costs["mse"][1], rel=0.2)
    assert costs["dssim+mse"][0] > 1.5 * costs["dssim+mse"][1]  # DSSIM punishes the noise, barely the offset


def test_encoder_lr_factor_scales_only_the_encoder_side_steps(tmp_path):
    """The first AdaBelief step moves each weight by lr x its normalised moment, so with the same batch the
    encoder side moves exactly `factor` times as far, the decoders as far, and factor 0 freezes the encoder."""
    moves = {}
    for factor in (1.0, 0.5, 0.0):
        trainer = _trainer(tmp_path, f"f{factor}", encoder_lr_factor=factor)
        before = [[p.detach().clone() for p in side] for side in trainer.model.parameter_groups()]
        trainer.step(trainer.batches[0])
        moves[factor] = [torch.cat([(p.detach() - b).flatten() for p, b in zip(side, old)])
                         for side, old in zip(trainer.model.parameter_groups(), before)]
    encoder, decoders = 0, 1
    assert moves[1.0][encoder].abs().max() > 0 and moves[1.0][decoders].abs().max() > 0
    assert torch.allclose(moves[0.5][encoder], 0.5 * moves[1.0][encoder], rtol=1e-3, atol=2e-8)
    assert torch.equal(moves[0.0][encoder], torch.zeros_like(moves[0.0][encoder]))
    assert torch.allclose(moves[0.5][decoders], moves[1.0][decoders], rtol=1e-3, atol=2e-8)


@pytest.mark.parametrize("model,archi", [("saehd", "df-ud"), ("saehd", "liae-ud"), ("original", "df")])
def test_every_family_registers_its_encoder_side_first(model, archi):
    """What lets a one-group optimiser state from before encoder_lr_factor split exactly into the two groups."""
    from facelab.swap.config import SwapConfig, apply_preset
    from facelab.swap.models import build_model

    cfg = apply_preset(SwapConfig(model=model, resolution=RES, archi=archi, ae_dims=32, e_dims=8, d_dims=8,
                                  d_mask_dims=4))
    net = build_model(cfg)
    encoder, decoders = net.parameter_groups()
    assert encoder and decoders and [id(p) for p in net.parameters()] == [id(p) for p in encoder + decoders]


def test_a_model_saved_with_one_optimiser_group_resumes_with_its_moments(tmp_path):
    from facelab.core.checkpoint import load_checkpoint, save_checkpoint
    from facelab.swap.model_dir import WEIGHTS_NAME

    trainer = _trainer(tmp_path, "old")
    old_opt = AdaBelief(trainer.model.parameters(), lr=5e-5)  # the layout every model folder saved before
    trainer.opt = old_opt
    trainer.step(trainer.batches[0])
    trainer.save()
    state = load_checkpoint(tmp_path / "old" / WEIGHTS_NAME)
    assert len(state["optimizer"]["param_groups"]) == 1
    resumed = _trainer(tmp_path, "old", encoder_lr_factor=0.25)
    assert [g["lr"] for g in resumed.opt.param_groups] == pytest.approx([5e-5 * 0.25, 5e-5])
    for p, q in zip(trainer.model.parameters(), resumed.model.parameters()):
        assert torch.equal(old_opt.state[p]["m"], resumed.opt.state[q]["m"])
    save_checkpoint(tmp_path / "x.safetensors", {"optimizer": resumed.opt.state_dict()})  # saved as two from now on
    assert len(load_checkpoint(tmp_path / "x.safetensors")["optimizer"]["param_groups"]) == 2


def test_save_every_n_iterations_saves_at_each_multiple_and_once_at_the_end(tmp_path):
    trainer = _trainer(tmp_path, "every", save_every=3, target_iter=10, save_every_minutes=1e6, eval_faces=0)
    saved, save = [], trainer.save
    trainer.save = lambda: (saved.append(trainer.iteration), save())
    trainer.run()
    assert saved == [3, 6, 9, 10]
    trainer = _trainer(tmp_path, "end", save_every=5, target_iter=10, save_every_minutes=1e6, eval_faces=0)
    saved.clear()
    trainer.save = lambda: saved.append(trainer.iteration)
    trainer.run()
    assert saved == [5, 10]  # the last iteration is a multiple too: saved once


def test_preview_shows_each_side_rebuilt_and_swapped_into_the_other(tmp_path):
    trainer = _trainer(tmp_path, "preview")
    grid, names = trainer.preview()
    n = min(4, len(trainer.src_hold), len(trainer.dst_hold))
    assert grid.shape == (6 * RES, n * RES, 3)
    assert names == ["src", "src reconstructed", "src swapped to dst", "dst", "dst reconstructed", "dst swapped to src"]
    rows = [grid[r * RES:(r + 1) * RES] for r in range(6)]
    src = torch.from_numpy(trainer.src_hold.images[:n]).permute(0, 3, 1, 2).float().div(255)
    with torch.inference_mode():
        to_dst = trainer.model.decoder_dst.face_only(trainer.model.encoder(src))  # df: src code, dst decoder
    want = (torch.cat(list(to_dst), 2).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(rows[2].astype(int) - want).max() <= 1
    assert np.array_equal(rows[0], np.concatenate(list(trainer.src_hold.images[:n]), 1))
    assert not np.array_equal(rows[2], rows[1])  # not the src reconstruction
