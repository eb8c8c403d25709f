"""SSIM with a Gaussian window, batched in torch: the training loss (DSSIM) and the reported quality metric.

DeepFaceLab trains on DSSIM with a window that grows with the resolution (``resolution / 11.6`` pixels) and the
reference port reports SSIM between held-out faces and their reconstructions; both use this one function so the
number a user reads is the quantity the model minimises.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=32)
def gaussian_kernel_1d(kernel_size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(a: torch.Tensor, b: torch.Tensor, kernel_size: int = 11, sigma: float = 1.5, max_val: float = 1.0,
         reduce: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of NCHW images in ``[0, max_val]``; per image ``(N,)`` when ``reduce`` is False.

    The window is separable (two 1-D passes per moment) and ``valid``-padded, like TensorFlow's
    ``tf.image.ssim`` that DeepFaceLab uses, so borders do not count twice. With ``mask`` (``N1HW``, 0..1)
    the SSIM map is averaged with the mask's weights: the face alone is scored. Multiplying both images
    by the mask instead would score the blacked-out background as a perfect match and lift a featureless
    face towards 1.
    """
    kernel_size = max(1, min(int(kernel_size), a.shape[-1], a.shape[-2]))
    channels = a.shape[1]
    g = gaussian_kernel_1d(kernel_size, float(sigma)).to(device=a.device, dtype=a.dtype)
    gx = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, gx, groups=channels), gy, groups=channels)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    lum = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = lum * cs
    if mask is None:
        per_image = ssim_map.flatten(1).mean(1)
    else:  # the mask cut to the window centres of the valid map
        top, left = (a.shape[-2] - ssim_map.shape[-2]) // 2, (a.shape[-1] - ssim_map.shape[-1]) // 2
        w = mask[..., top : top + ssim_map.shape[-2], left : left + ssim_map.shape[-1]].to(ssim_map.dtype)
        w = w.expand_as(ssim_map).flatten(1)
        per_image = (ssim_map.flatten(1) * w).sum(1) / w.sum(1).clamp_min(1e-6)
    return per_image.mean() if reduce else per_image


def dssim(a: torch.Tensor, b: torch.Tensor, kernel_size: int, max_val: float = 1.0) -> torch.Tensor:
    """Structural dissimilarity ``(1 - SSIM) / 2``, the loss DeepFaceLab weights by 10 (or 5 + 5)."""
    sigma = 1.5 * kernel_size / 11.0
    return (1.0 - ssim(a, b, kernel_size, sigma, max_val)) / 2.0


def ssim_images(a: np.ndarray, b: np.ndarray, kernel_size: int = 11) -> np.ndarray:
    """Per-image SSIM of two ``(N, H, W, C)`` float arrays in [0, 1] (the held-out quality metric)."""
    ta = torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(0, 3, 1, 2)
    tb = torch.from_numpy(np.ascontiguousarray(b, np.float32)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return ssim(ta, tb, kernel_size, reduce=False).numpy()
