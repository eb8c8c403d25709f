"""The XSeg-style face segmenter: a small U-Net from an aligned RGB face to a one-channel face logit.

An encoder halves the resolution and doubles the channels (capped at 8x ``base_channels``) at each level
down to an 8 px bottleneck (at most 5 levels); the decoder upsamples back, each level concatenating the
encoder's features of the same size (skip connections) so the mask edge keeps the face's fine detail
(hair strands, glasses frames) that the bottleneck alone cannot place. GroupNorm rather than BatchNorm:
the small batches of segmenter training make batch statistics noisy, and the net then behaves the same
in training and inference.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_LEVELS = 5


def levels_for(resolution: int) -> int:
    """Down-sampling steps: down to 8 px, at most :data:`MAX_LEVELS` (64 px -> 3, 128 -> 4, 256 -> 5)."""
    return max(1, min(MAX_LEVELS, (resolution // 8).bit_length() - 1))


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions, each normalised and activated."""
    groups = max(1, min(8, cout // 4))
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.LeakyReLU(0.1, inplace=True),
    )


class Segmenter(nn.Module):
    """RGB faces ``(N, 3, R, R)`` in [0, 1] -> face logits ``(N, 1, R, R)`` (sigmoid > 0.5 is face).

    ``R`` must be divisible by ``2 ** levels_for(resolution)``; every multiple of 32 is.
    """

    def __init__(self, resolution: int = 256, base_channels: int = 32):
        super().__init__()
        self.resolution, self.base_channels = resolution, base_channels
        levels = levels_for(resolution)
        chans = [base_channels * 2 ** min(i, 3) for i in range(levels + 1)]
        self.stem = _block(3, chans[0])
        self.down = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), _block(chans[i], chans[i + 1])) for i in range(levels))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(levels))
        self.merge = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in range(levels))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x * 2 - 1)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.up))):
            y = self.merge[i](torch.cat([self.up[i](y), skips[i]], 1))
        return self.head(y)
