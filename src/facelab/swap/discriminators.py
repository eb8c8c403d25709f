"""The two adversaries SAEHD can add: a U-Net patch GAN on faces and a code discriminator for true face.

The U-Net discriminator judges each patch (its bottleneck logits) and each pixel (its decoder logits), so
the generator is pushed towards real skin texture locally without being asked to fool a global critic.
The code discriminator tells src codes from dst codes; training the generator against it pulls the code of
a dst face towards the src identity (DeepFaceLab's "true face").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def patch_layers(patch_size: int) -> int:
    """Stride-2 4x4 layers whose receptive field best covers ``patch_size`` pixels (at least 1, at most 6)."""
    best, best_err = 1, math.inf
    for n in range(1, 7):
        field = 4 + 6 * (2 ** (n - 1) - 1)  # receptive field of n stacked k4/s2 convs
        if abs(field - patch_size) < best_err:
            best, best_err = n, abs(field - patch_size)
    return best


class UNetPatchDiscriminator(nn.Module):
    def __init__(self, resolution: int, patch_size: int = 0, dims: int = 16, in_ch: int = 3):
        super().__init__()
        n = patch_layers(patch_size or max(4, resolution // 8))
        n = min(n, int(math.log2(resolution)) - 1)
        chans = [min(dims * 2**i, dims * 8) for i in range(n)]
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip([in_ch] + chans, chans))
        self.center = nn.Conv2d(chans[-1], 1, 1)
        ups = []
        for i in reversed(range(n)):
            skip = chans[i - 1] if i > 0 else in_ch
            in_up = chans[i] if i == n - 1 else chans[i] * 2
            ups.append(nn.ConvTranspose2d(in_up, skip, 4, 2, 1))
        self.up = nn.ModuleList(ups)
        self.pixel = nn.Conv2d(in_ch * 2, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch logits at the bottleneck, per-pixel logits at full resolution)."""
        skips = []
        for conv in self.down:
            skips.append(x)
            x = F.leaky_relu(conv(x), 0.2)
        center = self.center(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = torch.cat([F.leaky_relu(up(x), 0.2), skip], 1)
        return center, self.pixel(x)


class CodeDiscriminator(nn.Module):
    def __init__(self, code_ch: int, dims: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(code_ch, dims, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.Conv2d(dims, dims, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dims, 1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code)


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a discriminator head: real -> 1, fake -> 0."""
    return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side: make the discriminator call its output real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
