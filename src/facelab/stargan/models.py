"""StarGAN's generator and PatchGAN discriminator.

Instance norm is affine and always uses the statistics of the image itself (no running averages): the
original keeps running stats but never uses them in training, and using them at test time or in an
export would change the output, so we leave them out and train, test and export behave alike.

The generator runs in the layout ``core.device.memory_format`` picks for every network (it takes and
returns ordinary NCHW tensors): channels_last on GPUs and AVX512 CPUs, NCHW on AVX2-only CPUs, and NCHW
under the CPU's bf16 autocast (:meth:`Generator._layout`); ``channels_last`` decides when given. In fp32 the
two layouts tied on both kinds of CPU measured (0.99x and 1.05x). The critic stays NCHW: its strided 4x4
convolutions and the gradient penalty's double backward ran slower in channels_last (docs/performance.md),
and under the CPU's bf16 autocast its layers with maps of 2x2 pixels or fewer run in fp32 (``FP32_MAP_PIXELS``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from facelab.core.device import memory_format


def _under_cpu_autocast(x: torch.Tensor) -> bool:
    """Whether ``x`` is a CPU tensor met inside the CPU's autocast region, where both networks change how
    they run (the generator's layout, the critic's fp32 small maps)."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def _norm(channels: int) -> nn.GroupNorm:
    """Affine instance norm, written as a GroupNorm with one channel per group: the same statistics (each
    image's own, per channel), eps and weights (the same state-dict keys), but PyTorch's GroupNorm runs
    on channels_last tensors where InstanceNorm2d copies them to NCHW and back."""
    return nn.GroupNorm(channels, channels, eps=1e-5, affine=True)


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm, added to the input (keeps the face while the label edits it)."""

    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), _norm(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """(image in [-1, 1], target label in {0, 1}^c_dim) -> edited image in [-1, 1].

    The label is tiled over the image and concatenated as ``c_dim`` extra input channels.
    """

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6, channels_last: bool | None = None):
        super().__init__()
        self.channels_last = channels_last
        layers: list[nn.Module] = [nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False), _norm(conv_dim), nn.ReLU(inplace=True)]
        ch = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), _norm(ch * 2), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), _norm(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.Conv2d(ch, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x.dtype).view(c.shape[0], c.shape[1], 1, 1).expand(-1, -1, x.shape[2], x.shape[3])
        x = torch.cat([x, c], dim=1)
        return self.main(x.contiguous(memory_format=self._layout(x))).contiguous()

    def _layout(self, x: torch.Tensor) -> torch.memory_format:
        """The rule's layout, except under the CPU's bf16 autocast: NCHW there unless ``channels_last`` says
        otherwise, since PyTorch's bf16 GroupNorm on channels_last tensors made the generator's forward
        and backward 2.3x slower than in NCHW (0.86 against 0.38 s at 64 px, batch 8, one thread, on an
        AVX512-BF16 host, where fp32 takes 0.75 s in either layout)."""
        if self.channels_last is None and _under_cpu_autocast(x):
            return torch.contiguous_format
        return memory_format(self.channels_last, x.device)


# Under the CPU's bf16 autocast the critic's convolutions whose output maps have at most this many pixels
# run in fp32: their weights are its largest (the last, [2048, 1024, 4, 4], is 134 MB in fp32) and their
# maps tiny, so casting each weight to bf16 on every call and each of its gradients back cost more than
# the bf16 products save. 64 px, batch 8, one cycle on an AMX host: 4.41 s with every layer in bf16, 3.29
# s with the 2x2 and 1x1 layers in fp32, 3.52 s with the 4x4 one as well (docs/performance.md).
FP32_MAP_PIXELS = 4


class Discriminator(nn.Module):
    """PatchGAN critic: returns (real/fake score map, domain logits of shape (N, c_dim))."""

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        if image_size % (2**repeat_num):
            raise ValueError(f"image_size {image_size} must be divisible by 2**d_repeat_num = {2**repeat_num}")
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)]
        ch = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            ch *= 2
        self.main = nn.Sequential(*layers)
        self.src = nn.Conv2d(ch, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(ch, c_dim, image_size // 2**repeat_num, bias=False)
        sizes = [image_size // 2 ** (i + 1) for i in range(repeat_num)]  # each convolution's output map
        small = next((i for i, size in enumerate(sizes) if size * size <= FP32_MAP_PIXELS), repeat_num)
        self.fp32_from = 2 * small  # main's index of that convolution (each is followed by its activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main[:self.fp32_from](x)
        fp32 = _under_cpu_autocast(h)
        with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
            h = self.main[self.fp32_from:](h.float() if fp32 else h)
            return self.src(h), self.cls(h).flatten(1)


def build_models(cfg) -> tuple[Generator, Discriminator]:
    """Both networks from a :class:`~facelab.stargan.config.StarGANConfig`."""
    g = Generator(cfg.g_conv_dim, cfg.c_dim, cfg.g_repeat_num, cfg.channels_last)
    d = Discriminator(cfg.image_size, cfg.d_conv_dim, cfg.c_dim, cfg.d_repeat_num)
    return g, d
