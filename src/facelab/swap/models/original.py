"""DeepFaceLab's Original model: the classic 64 px DF autoencoder with a dense bottleneck.

Encoder: four 5x5 stride-2 convs (128, 256, 512, 1024 channels, LeakyReLU 0.1), dense 4*4*1024 -> 1024 ->
4*4*1024, one pixel-shuffle upscale to 512x8x8. Each decoder: three pixel-shuffle upscales (256, 128, 64)
and a 5x5 conv to RGB with a sigmoid. A 1-channel 5x5 head on the same features predicts the face mask
so merge can use the Original model like any other.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.swap.models.base import DFSwap, Downscale, Upscale


class OriginalEncoder(nn.Module):
    def __init__(self, resolution: int, ae_dims: int, e_dims: int):
        super().__init__()
        chans = [3, e_dims, e_dims * 2, e_dims * 4, e_dims * 8]
        self.down = nn.Sequential(*[Downscale(a, b, 5) for a, b in zip(chans, chans[1:])])
        self.low = resolution // 16
        self.code_ch = e_dims * 8
        flat = self.code_ch * self.low * self.low
        self.dense1 = nn.Linear(flat, ae_dims)
        self.dense2 = nn.Linear(ae_dims, flat)
        self.up = Upscale(self.code_ch, self.code_ch // 2)
        self.out_ch = self.code_ch // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(self.down(x).flatten(1)))
        return self.up(x.view(-1, self.code_ch, self.low, self.low))


class OriginalDecoder(nn.Module):
    def __init__(self, in_ch: int, d_dims: int):
        super().__init__()
        self.up = nn.Sequential(Upscale(in_ch, d_dims * 4), Upscale(d_dims * 4, d_dims * 2), Upscale(d_dims * 2, d_dims))
        self.rgb = nn.Conv2d(d_dims, 3, 5, padding=2)
        self.mask = nn.Conv2d(d_dims, 1, 5, padding=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.up(x)
        return torch.sigmoid(self.rgb(x)), torch.sigmoid(self.mask(x))

    def face_only(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.rgb(self.up(x)))

    def mask_only(self, x: torch.Tensor) -> torch.Tensor:
        """Face and mask share the upscales here, so the mask costs nearly the whole decoder."""
        return torch.sigmoid(self.mask(self.up(x)))


class OriginalModel(DFSwap):
    def __init__(self, resolution: int = 64, ae_dims: int = 1024, e_dims: int = 128, d_dims: int = 64):
        encoder = OriginalEncoder(resolution, ae_dims, e_dims)
        super().__init__(resolution, encoder, OriginalDecoder(encoder.out_ch, d_dims), OriginalDecoder(encoder.out_ch, d_dims))
