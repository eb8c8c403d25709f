"""Building blocks and the two wiring schemes shared by every family.

DF-style models (Original, SAEHD df) share one encoder and give each identity its own decoder; the swap
is the dst code through the src decoder. LIAE has one decoder and two intermediate codes; its wiring
lives in :mod:`facelab.swap.models.saehd`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class SwapOutputs(NamedTuple):
    pred_src: torch.Tensor  # src reconstructed, (N,3,R,R) in [0,1]
    pred_src_mask: torch.Tensor  # (N,1,R,R)
    pred_dst: torch.Tensor
    pred_dst_mask: torch.Tensor
    pred_swap: torch.Tensor | None  # dst face with the src identity (None from forward(..., swap=False))
    pred_swap_mask: torch.Tensor | None  # the src mask predicted for the swapped face
    src_code: torch.Tensor  # what the true-face discriminator compares
    dst_code: torch.Tensor


class Downscale(nn.Module):
    """Strided conv + LeakyReLU(0.1): halves the resolution (DeepFaceLab's encoder step)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=2, padding=kernel_size // 2)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Upscale(nn.Module):
    """Conv to 4x channels + LeakyReLU(0.1) + pixel shuffle: doubles the resolution without checkerboards."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch * 4, kernel_size, padding=kernel_size // 2)
        self.act = nn.LeakyReLU(0.1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.act(self.conv(x)))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip (LeakyReLU 0.2): SAEHD's decoder refinement step."""

    def __init__(self, ch: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(ch, ch, kernel_size, padding=kernel_size // 2)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class SwapModel(nn.Module):
    """Common interface: ``forward(src, dst)`` for training, ``swap(dst)`` for merge and export.

    ``forward`` runs each shared part once on everything it sees (the encoder on src and dst together, a
    decoder on all the codes it decodes): no layer mixes the faces of a batch, so each output is what a
    call of its own gives, and one call on 2n faces costs less than two on n (the weights are read and
    their gradients made once; the Original model's dense layers most of all). ``swap=False`` leaves the
    swapped face out: only the style losses and the previews use it, and it costs a decoder pass.
    """

    resolution: int

    def forward(self, src: torch.Tensor, dst: torch.Tensor, swap: bool = True) -> SwapOutputs:  # pragma: no cover
        raise NotImplementedError

    def swap(self, dst: torch.Tensor, src_mask: bool = True,
             dst_mask: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:  # pragma: no cover
        """dst faces -> (swapped face, predicted src mask, predicted dst mask); a mask not asked for is
        not computed (None), so a merge whose mask mode does not use it skips that branch."""
        raise NotImplementedError

    def to_dst(self, src: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """src faces with the dst identity: the swap the other way, which the training preview shows so both
        decoders' progress can be seen (merge never needs it)."""
        raise NotImplementedError

    def generator_parameters(self):
        return self.parameters()

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(encoder side, decoders): what both faces share (the encoder and its dense inter layers), which
        learns at ``encoder_lr_factor`` times the rate, and the decoders. Every family registers its encoder
        side first, so these come in ``parameters()`` order and an optimiser state saved as one group splits
        into the two at ``len(encoder side)`` (tests/test_swap_options.py holds this for each family)."""
        named = list(self.named_parameters())
        return [p for n, p in named if not n.startswith("decoder")], [p for n, p in named if n.startswith("decoder")]


class DFSwap(SwapModel):
    """One shared encoder (with its dense bottleneck), one decoder per identity."""

    def __init__(self, resolution: int, encoder: nn.Module, decoder_src: nn.Module, decoder_dst: nn.Module):
        super().__init__()
        self.resolution = resolution
        self.encoder, self.decoder_src, self.decoder_dst = encoder, decoder_src, decoder_dst

    def forward(self, src: torch.Tensor, dst: torch.Tensor, swap: bool = True) -> SwapOutputs:
        sizes = [len(src), len(dst)]
        src_code, dst_code = self.encoder(torch.cat([src, dst])).split(sizes)
        if swap:
            (pred_src, pred_swap), (pred_src_mask, pred_swap_mask) = (
                out.split(sizes) for out in self.decoder_src(torch.cat([src_code, dst_code])))
        else:
            (pred_src, pred_src_mask), pred_swap, pred_swap_mask = self.decoder_src(src_code), None, None
        pred_dst, pred_dst_mask = self.decoder_dst(dst_code)
        return SwapOutputs(pred_src, pred_src_mask, pred_dst, pred_dst_mask, pred_swap, pred_swap_mask, src_code, dst_code)

    def swap(self, dst: torch.Tensor, src_mask: bool = True,
             dst_mask: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        code = self.encoder(dst)
        swapped, swapped_mask = self.decoder_src(code) if src_mask else (self.decoder_src.face_only(code), None)
        return swapped, swapped_mask, self.decoder_dst.mask_only(code) if dst_mask else None

    def to_dst(self, src: torch.Tensor) -> torch.Tensor:
        return self.decoder_dst.face_only(self.encoder(src))
