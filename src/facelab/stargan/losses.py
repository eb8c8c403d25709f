"""StarGAN's losses: WGAN-GP adversarial terms, BCE domain classification, L1 cycle reconstruction."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F

from facelab.stargan.models import Discriminator


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE summed over attributes, averaged over the batch (the paper's CelebA form)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum") / logits.shape[0]


def gradient_penalty(d: Discriminator | torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor,
                     scale: float = 1.0, autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """mean((||dD(x_hat)/dx_hat||_2 - 1)^2) at x_hat = alpha*real + (1-alpha)*fake, per image.

    The critic runs under ``autocast``; the gradient's norm and the penalty are fp32, outside it.
    ``scale`` is the fp16 loss scale: the gradient is taken of the scaled score so it does not underflow,
    then divided back, as the PyTorch AMP recipe for gradient penalties does.
    """
    x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    with autocast():
        out, _ = d(x_hat)
    (grad,) = torch.autograd.grad(out.float().sum() * scale, x_hat, create_graph=True)
    grad = grad.float().flatten(1) / scale
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def cycle_loss(real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    return (real.float() - reconstructed.float()).abs().mean()
