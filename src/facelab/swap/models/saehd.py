"""SAEHD: DF and LIAE autoencoders with the -u, -d and -t options, any combination.

- ``-u`` pixel-normalises the encoder code (steadier training, better likeness).
- ``-d`` doubles the output resolution for the same cost: the bottleneck sits at ``resolution / 32`` and
  the decoder's last layer emits 4x3 channels that a pixel shuffle turns into a 2x larger face.
- ``-t`` adds a fifth encoder downscale, a decoder upscale and residual blocks (more capacity for likeness).

DF shares the encoder and inter; each identity has a decoder. LIAE shares one decoder; ``inter_AB`` learns
codes common to both faces and ``inter_B`` codes only dst has, so the swap is ``[AB(dst), AB(dst)]``.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.swap.models.base import DFSwap, Downscale, ResidualBlock, SwapModel, SwapOutputs, Upscale


class Encoder(nn.Module):
    def __init__(self, e_dims: int, opts: str):
        super().__init__()
        if "t" in opts:
            chans = [e_dims, e_dims * 2, e_dims * 4, e_dims * 8, e_dims * 8]
            layers: list[nn.Module] = [Downscale(3, chans[0]), ResidualBlock(chans[0])]
            layers += [Downscale(a, b) for a, b in zip(chans, chans[1:])]
            layers.append(ResidualBlock(chans[-1]))
        else:
            chans = [e_dims, e_dims * 2, e_dims * 4, e_dims * 8]
            layers = [Downscale(a, b) for a, b in zip([3] + chans, chans)]
        self.net = nn.Sequential(*layers)
        self.out_ch = chans[-1]
        self.downscales = len(chans)
        self.pixel_norm = "u" in opts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x).flatten(1)
        if self.pixel_norm:
            x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)
        return x


class Inter(nn.Module):
    """Dense bottleneck: flat encoder code -> ae_dims -> a small feature map (upscaled once unless -t)."""

    def __init__(self, in_features: int, ae_dims: int, out_ch: int, low_res: int, opts: str):
        super().__init__()
        self.dense1 = nn.Linear(in_features, ae_dims)
        self.dense2 = nn.Linear(ae_dims, low_res * low_res * out_ch)
        self.low_res, self.out_ch = low_res, out_ch
        self.up = nn.Identity() if "t" in opts else Upscale(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(x)).view(-1, self.out_ch, self.low_res, self.low_res)
        return self.up(x)


class Decoder(nn.Module):
    """Pixel-shuffle upscales with residual blocks for the face, a lighter branch for the mask."""

    def __init__(self, in_ch: int, d_dims: int, d_mask_dims: int, opts: str):
        super().__init__()
        if "t" in opts:
            chans, mchans = [d_dims * 8, d_dims * 8, d_dims * 4, d_dims * 2], [d_mask_dims * 8, d_mask_dims * 8, d_mask_dims * 4, d_mask_dims * 2]
        else:
            chans, mchans = [d_dims * 8, d_dims * 4, d_dims * 2], [d_mask_dims * 8, d_mask_dims * 4, d_mask_dims * 2]
        layers: list[nn.Module] = []
        for a, b in zip([in_ch] + chans, chans):
            layers += [Upscale(a, b), ResidualBlock(b)]
        self.face = nn.Sequential(*layers)
        if "d" in opts:
            mchans = mchans + [d_mask_dims]
        self.mask = nn.Sequential(*[Upscale(a, b) for a, b in zip([in_ch] + mchans, mchans)])
        double = "d" in opts
        self.rgb = nn.Sequential(nn.Conv2d(chans[-1], 3 * 4, 3, padding=1), nn.PixelShuffle(2)) if double \
            else nn.Conv2d(chans[-1], 3, 1)
        self.mask_out = nn.Conv2d(mchans[-1], 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.face_only(x), self.mask_only(x)

    def face_only(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.rgb(self.face(x)))

    def mask_only(self, x: torch.Tensor) -> torch.Tensor:
        """The mask branch alone: merge needs the dst mask but not the dst face, which costs far more."""
        return torch.sigmoid(self.mask_out(self.mask(x)))


def _bottleneck(resolution: int, encoder: Encoder, opts: str) -> tuple[int, int]:
    """(flat encoder features, lowest dense resolution) for this resolution and option set."""
    enc_res = resolution // (2**encoder.downscales)
    return encoder.out_ch * enc_res * enc_res, resolution // (32 if "d" in opts else 16)


class DFEncoder(nn.Module):
    def __init__(self, resolution: int, ae_dims: int, e_dims: int, opts: str):
        super().__init__()
        self.encoder = Encoder(e_dims, opts)
        flat, low = _bottleneck(resolution, self.encoder, opts)
        self.inter = Inter(flat, ae_dims, ae_dims, low, opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inter(self.encoder(x))


class SAEHDDF(DFSwap):
    def __init__(self, resolution: int, opts: str, ae_dims: int, e_dims: int, d_dims: int, d_mask_dims: int):
        encoder = DFEncoder(resolution, ae_dims, e_dims, opts)
        super().__init__(resolution, encoder, Decoder(ae_dims, d_dims, d_mask_dims, opts),
                         Decoder(ae_dims, d_dims, d_mask_dims, opts))


class SAEHDLIAE(SwapModel):
    def __init__(self, resolution: int, opts: str, ae_dims: int, e_dims: int, d_dims: int, d_mask_dims: int):
        super().__init__()
        self.resolution = resolution
        self.encoder = Encoder(e_dims, opts)
        flat, low = _bottleneck(resolution, self.encoder, opts)
        self.inter_AB = Inter(flat, ae_dims, ae_dims * 2, low, opts)
        self.inter_B = Inter(flat, ae_dims, ae_dims * 2, low, opts)
        self.decoder = Decoder(ae_dims * 4, d_dims, d_mask_dims, opts)

    def forward(self, src: torch.Tensor, dst: torch.Tensor, swap: bool = True) -> SwapOutputs:
        sizes = [len(src), len(dst)]
        enc = self.encoder(torch.cat([src, dst]))
        src_ab, dst_ab = self.inter_AB(enc).split(sizes)
        dst_b = self.inter_B(enc[sizes[0]:])
        src_code = torch.cat([src_ab, src_ab], 1)
        dst_code = torch.cat([dst_b, dst_ab], 1)
        codes = [src_code, dst_code] + ([torch.cat([dst_ab, dst_ab], 1)] if swap else [])
        faces, masks = self.decoder(torch.cat(codes))
        parts = [sizes[0], sizes[1]] + sizes[1:] * swap
        (pred_src, pred_dst, *pred_swap), (pred_src_mask, pred_dst_mask, *pred_swap_mask) = (
            out.split(parts) for out in (faces, masks))
        pred_swap, pred_swap_mask = (pred_swap[0], pred_swap_mask[0]) if swap else (None, None)
        return SwapOutputs(pred_src, pred_src_mask, pred_dst, pred_dst_mask, pred_swap, pred_swap_mask, src_code, dst_code)

    def swap(self, dst: torch.Tensor, src_mask: bool = True,
             dst_mask: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        enc = self.encoder(dst)
        ab = self.inter_AB(enc)
        code = torch.cat([ab, ab], 1)
        swapped, swapped_mask = self.decoder(code) if src_mask else (self.decoder.face_only(code), None)
        # inter_B only feeds the dst mask here
        dst_m = self.decoder.mask_only(torch.cat([self.inter_B(enc), ab], 1)) if dst_mask else None
        return swapped, swapped_mask, dst_m

    def to_dst(self, src: torch.Tensor) -> torch.Tensor:
        """The src face's common code with the dst-only code its encoding gives: dst's wiring applied to src."""
        enc = self.encoder(src)
        return self.decoder.face_only(torch.cat([self.inter_B(enc), self.inter_AB(enc)], 1))


def build_saehd(resolution: int, kind: str, opts: str, ae_dims: int, e_dims: int, d_dims: int, d_mask_dims: int) -> SwapModel:
    cls = SAEHDDF if kind == "df" else SAEHDLIAE
    return cls(resolution, opts, ae_dims, e_dims, d_dims, d_mask_dims)
