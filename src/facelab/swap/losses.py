"""SAEHD's reconstruction loss: DSSIM at resolution-dependent window sizes + MSE on the masked face,
a mask loss, an eyes/mouth weight, and the optional face/background style terms.

Weights follow DeepFaceLab so loss values and option strengths mean what its users expect: 10 x DSSIM
(5 + 5 at two window sizes from 256 px up), 10 x MSE, 10 x mask MSE, 300 x L1 on eyes and mouth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facelab.metrics.ssim import gaussian_kernel_1d, dssim


def gaussian_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with sigma ``radius`` (replicate padding keeps the image size)."""
    if radius <= 0:
        return x
    size = 2 * int(radius * 2) + 1
    g = gaussian_kernel_1d(size, float(radius)).to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    x = F.pad(x, (size // 2,) * 4, mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def soft_mask(mask: torch.Tensor, resolution: int) -> torch.Tensor:
    """The training mask blurred at its edge and saturated inside, so the border is learnt softly."""
    return torch.clamp(gaussian_blur(mask, max(1, resolution // 32)), 0, 0.5) * 2


def image_loss(target: torch.Tensor, pred: torch.Tensor, resolution: int, kind: str = "dssim+mse") -> torch.Tensor:
    """DSSIM at ``resolution / 11.6`` (and ``/ 23.2`` from 256 px) + 10 x MSE; ``kind`` "mse" keeps the 10 x MSE
    alone, at the same weight, so its loss values read like the pixel part of the default's."""
    if kind == "mse":
        return 10 * F.mse_loss(pred, target)
    if resolution < 256:
        loss = 10 * dssim(pred, target, kernel_size=int(resolution / 11.6))
    else:
        loss = 5 * dssim(pred, target, kernel_size=int(resolution / 11.6)) + 5 * dssim(pred, target, kernel_size=int(resolution / 23.2))
    return loss + 10 * F.mse_loss(pred, target)


def style_loss(pred: torch.Tensor, target: torch.Tensor, blur_radius: int) -> torch.Tensor:
    """Match per-channel mean and standard deviation of blurred images (colour and tone, not detail)."""
    pred, target = gaussian_blur(pred, blur_radius), gaussian_blur(target, blur_radius)
    p_mean, t_mean = pred.mean((2, 3)), target.mean((2, 3))
    p_std, t_std = (pred.var((2, 3)) + 1e-5).sqrt(), (target.var((2, 3)) + 1e-5).sqrt()
    return ((p_mean - t_mean) ** 2 + (p_std - t_std) ** 2).sum(1).mean() / pred.shape[1]


@dataclass
class LossOptions:
    resolution: int
    masked_training: bool = True
    eyes_mouth_prio: bool = False
    face_style_power: float = 0.0
    bg_style_power: float = 0.0
    loss: str = "dssim+mse"  # the reconstruction loss (SwapConfig.loss)

    @property
    def uses_swap(self) -> bool:
        """Whether a loss reads the swapped face (only the style losses do)."""
        return self.face_style_power > 0 or self.bg_style_power > 0


def side_loss(target: torch.Tensor, target_mask: torch.Tensor, em_mask: torch.Tensor, pred: torch.Tensor,
              pred_mask: torch.Tensor, opts: LossOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of one identity's reconstruction; also returns the masked target and prediction for the GAN."""
    blur = soft_mask(target_mask, opts.resolution)
    if opts.masked_training:
        target_opt, pred_opt = target * blur, pred * blur
    else:
        target_opt, pred_opt = target, pred
    loss = image_loss(target_opt, pred_opt, opts.resolution, opts.loss)
    if opts.eyes_mouth_prio:
        loss = loss + 300 * torch.mean(torch.abs(target * em_mask - pred * em_mask))
    loss = loss + 10 * F.mse_loss(pred_mask, target_mask)
    return loss, target_opt, pred_opt


def style_losses(target_dst: torch.Tensor, target_dst_mask: torch.Tensor, pred_swap: torch.Tensor,
                 opts: LossOptions) -> torch.Tensor:
    """Face style (swap colours inside the dst mask) and background style (outside it) towards dst."""
    blur = soft_mask(target_dst_mask, opts.resolution)
    loss = pred_swap.new_zeros(())
    if opts.face_style_power > 0:
        loss = loss + 10000 * opts.face_style_power * style_loss(pred_swap * blur, target_dst * blur, opts.resolution // 16)
    if opts.bg_style_power > 0:
        anti = 1 - blur
        p, t = pred_swap * anti, target_dst * anti
        loss = loss + 10 * opts.bg_style_power * (dssim(p, t, int(opts.resolution / 11.6)) + F.mse_loss(p, t))
    return loss
